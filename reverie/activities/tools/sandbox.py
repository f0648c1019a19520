"""Choosing and building the sandbox `bash` runs in (bubblewrap, or none at all).

Under bubblewrap a command sees the host system read-only, its own /dev, /proc and empty /tmp,
no other session's workspace (the workspace root and the `hidden` folders are covered by empty
tmpfs), its work folder at /workspace, its outputs at /mnt/session/outputs and its mounts by
access. It gets its own process tree, so nothing it starts outlives the call, and no network
unless the environment's networking is `unrestricted`: a network namespace cannot filter by
host name, so `limited` networking (even with allowed hosts) means no network for bash; only
`web_fetch` honours `allowed_hosts`.

The sandbox hides content, not layout: /proc/self/mountinfo inside still names the host folders
its binds come from.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Literal

from reverie.activities.tools.models import MOUNTS_PARENT, OUTPUTS_VIRTUAL, WORK_VIRTUAL
from reverie.activities.tools.workspace import Workspace

log = logging.getLogger(__name__)

SandboxMode = Literal["bwrap", "none"]
# Where the shell's saved state is bound inside the sandbox (the root there is bwrap's own
# tmpfs, so a new top-level folder can be created; the host's / is never written).
STATE_VIRTUAL = "/.reverie-shell"
# Top-level host entries the sandbox replaces with its own.
_REPLACED = {
    "dev",
    "proc",
    "tmp",
    MOUNTS_PARENT.strip("/"),
    WORK_VIRTUAL.strip("/"),
    STATE_VIRTUAL.strip("/"),
}
_SETTINGS = {"auto", "bwrap", "none"}


class SandboxUnavailableError(RuntimeError):
    """bubblewrap is required (REVERIE_SANDBOX is not `none`) but cannot be used here."""


def _system_binds() -> list[str]:
    """The host's top-level entries, read-only, one by one.

    Binding `/` itself read-only would leave no place to create /workspace; binding each entry
    on bwrap's tmpfs root gives the same read-only view and room for the session's folders.
    """
    args: list[str] = []
    with os.scandir("/") as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            path = f"/{entry.name}"
            if entry.name in _REPLACED:
                continue
            if entry.is_symlink():
                args += ["--symlink", os.readlink(path), path]
            elif entry.is_dir() or entry.is_file():
                args += ["--ro-bind", path, path]
    return args


def _base_args(*, network: bool) -> list[str]:
    args = _system_binds()
    args += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", MOUNTS_PARENT]
    args += ["--unshare-pid", "--unshare-ipc", "--die-with-parent", "--new-session"]
    if not network:
        args.append("--unshare-net")
    return args


def _hide(paths: set[Path]) -> list[str]:
    """Cover each folder with an empty read-only tmpfs. A folder inside another hidden one is
    hidden by it already (and a read-only tmpfs could not hold its mount point)."""
    outermost = {p for p in paths if not any(o != p and p.is_relative_to(o) for o in paths)}
    args: list[str] = []
    for path in sorted(outermost, key=lambda p: len(p.parts)):
        if path.is_dir():
            args += ["--tmpfs", str(path), "--remount-ro", str(path)]
        elif path.exists():
            args += ["--ro-bind", "/dev/null", str(path)]
    return args


def bwrap_args(workspace: Workspace, *, network: bool, state_dir: Path) -> list[str]:
    """bwrap's options for one command of this session (the command itself follows them)."""
    args = _base_args(network=network)
    args += _hide({workspace.root, *workspace.hidden})
    args += ["--bind", str(workspace.work_dir), WORK_VIRTUAL]
    args += ["--bind", str(workspace.outputs_dir), OUTPUTS_VIRTUAL]
    for mount in workspace.mounts:
        flag = "--ro-bind" if mount.read_only else "--bind"
        args += [flag, str(mount.host_path), mount.virtual_path]
    args += ["--bind", str(state_dir), STATE_VIRTUAL, "--chdir", WORK_VIRTUAL]
    return args


@cache
def bwrap_unavailable_reason() -> str | None:
    """Why bubblewrap cannot be used here, or None when it works (checked once per process).

    The probe uses the same namespaces and mounts as a real command, since inside containers
    bwrap may be installed but unable to create them.
    """
    if shutil.which("bwrap") is None:
        return "bwrap is not on PATH"
    try:
        probe = subprocess.run(
            ["bwrap", *_base_args(network=False), "true"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"bwrap could not be started: {error}"
    if probe.returncode != 0:
        return f"bwrap failed: {probe.stderr.strip() or f'exit code {probe.returncode}'}"
    return None


def detect_sandbox(setting: str | None) -> SandboxMode:
    """`bwrap` if it works here; else `none` only when the setting (REVERIE_SANDBOX) says so.

    Accepted settings: unset/`auto` and `bwrap` (require bubblewrap), `none` (fall back to
    running commands unsandboxed when bubblewrap is unavailable).
    """
    choice = (setting or "auto").strip().lower()
    if choice not in _SETTINGS:
        raise ValueError(f"REVERIE_SANDBOX must be one of {sorted(_SETTINGS)}, not {setting!r}")
    reason = bwrap_unavailable_reason()
    if reason is None:
        return "bwrap"
    if choice == "none":
        log.warning("bash commands run UNSANDBOXED: bubblewrap is unavailable (%s)", reason)
        return "none"
    raise SandboxUnavailableError(
        f"bubblewrap is not installed or cannot run here ({reason}); install the Debian package "
        "`bubblewrap` or set REVERIE_SANDBOX=none to run commands unsandboxed"
    )
