"""Choosing and building the sandbox `bash` runs in (bubblewrap, or none at all).

The model is an attacker, so a command gets an unprivileged identity and a filesystem built up
from an allow-list, never the host's root with holes cut in it:

- **Identity**: never root, never a capability. A worker running as root builds the sandbox
  as root and `setpriv` then drops the command to an ordinary host user (REVERIE_SANDBOX_UID,
  default 65534) with no capabilities; a worker running as an ordinary user gets a user
  namespace in which the command is uid 1000 with every capability dropped. Either way: no new
  privileges (setuid programs do nothing), no new user namespaces (refused by the filter, and
  by bwrap in the second case), a new session (no terminal to drive) and a seccomp filter
  (`seccomp.py`).
- **Filesystem**: the system's program and library folders read-only (`/usr` and the `/bin`,
  `/lib`... links into it), a few harmless files of `/etc` (loader cache, TLS roots, time
  zone) plus a made-up `passwd`, `group` and `hosts`, its own `/dev`, `/proc` and empty `/tmp`,
  the session's work folder at /workspace, its outputs at /mnt/session/outputs, its mounts by
  access, and the shell's saved state. Nothing else of the host exists there: no REVERIE_HOME,
  no other session, no home folders, no /run, /var or unix sockets.
- **Network**: always a network namespace of its own with only loopback. When the session's
  egress policy allows any network, the worker's filtering proxy (`proxy.py`) is bound in as a
  unix socket and bridged to 127.0.0.1:3128 by `socat`; that proxy is the only way out.

Known: /proc/self/mountinfo inside still names the host folders the session's own binds come
from (its own workspace path); nothing there can be opened from inside.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Literal

from reverie.activities.tools.models import MOUNTS_PARENT, OUTPUTS_VIRTUAL, WORK_VIRTUAL
from reverie.activities.tools.proxy import SANDBOX_PROXY_PORT
from reverie.activities.tools.seccomp import seccomp_program
from reverie.activities.tools.workspace import Workspace

log = logging.getLogger(__name__)

SandboxMode = Literal["bwrap", "none"]
# Where the shell's saved state is bound inside the sandbox.
STATE_VIRTUAL = "/.reverie-shell"
# Where the egress proxy's unix socket appears inside the sandbox.
PROXY_SOCKET_VIRTUAL = "/run/reverie/egress.sock"
SANDBOX_UID = 1000
SANDBOX_USER = "agent"
HOSTNAME = "reverie-sandbox"
_SETTINGS = {"auto", "bwrap", "none"}
# The system's programs and libraries: bound read-only when a folder, recreated when a link
# (merged-/usr systems make /bin, /lib... links into /usr).
_SYSTEM_ROOTS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What programs read from /etc that says nothing about the host's users, secrets or services.
_ETC_ALLOWED = (
    "alternatives",
    "bash.bashrc",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "gai.conf",
    "host.conf",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "localtime",
    "magic",
    "magic.mime",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "profile",
    "protocols",
    "python3",
    "python3.11",
    "perl",
    "services",
    "ssl/certs",
    "ssl/openssl.cnf",
    "timezone",
)
# Kernel interfaces of /proc that a shell never needs and that would tell an attacker about the
# kernel or, to a sandbox whose user is the worker's root, more: masked as Docker masks them.
_PROC_MASKED = (
    "acpi",
    "asound",
    "kallsyms",
    "kcore",
    "key-users",
    "keys",
    "kmsg",
    "latency_stats",
    "pagetypeinfo",
    "sched_debug",
    "scsi",
    "slabinfo",
    "sysrq-trigger",
    "timer_list",
    "vmallocinfo",
)
# The host user a root worker's sandbox runs as (REVERIE_SANDBOX_UID); it owns the session's
# folders on the host. Default: nobody. A dedicated uid keeps its files apart from other daemons'.
DEFAULT_HOST_UID = 65534
_SETPRIV = "/usr/bin/setpriv"


def _passwd(uid: int) -> str:
    agent = f"{SANDBOX_USER}:x:{uid}:{uid}:agent:{WORK_VIRTUAL}:/bin/bash\n"
    lines = ["root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n", agent]
    if uid != 65534:
        lines.append("nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
    return "".join(lines)


def _group(gid: int) -> str:
    return f"root:x:0:\n{SANDBOX_USER}:x:{gid}:\n" + ("nogroup:x:65534:\n" if gid != 65534 else "")


def host_user() -> int | None:
    """The unprivileged host uid the sandbox runs as, or None when it runs in a user namespace
    of the worker's own user.

    A root worker's sandbox must not be root on the host even without capabilities: root-owned
    kernel files (sysctls, keyrings) judge by uid alone. bwrap then builds the sandbox as root
    and `setpriv` drops to this uid, with no capabilities, before the command runs. An ordinary
    worker's sandbox is a user namespace mapping uid 1000 to the worker's own user.
    """
    if os.geteuid() != 0 or not os.access(_SETPRIV, os.X_OK):
        return None
    value = os.environ.get("REVERIE_SANDBOX_UID", str(DEFAULT_HOST_UID))
    if not value.isdigit() or int(value) == 0:
        raise SandboxUnavailableError(f"REVERIE_SANDBOX_UID must be a non-zero uid, not {value!r}")
    return int(value)


# Per-call limits that keep one session from exhausting the host: processes of the sandbox's
# user (a fork bomb), the size of any one file, no core dumps. Memory, CPU and total disk need
# cgroups, which Reverie does not set up yet (see the README).
MAX_PROCESSES = 4096
MAX_FILE_SIZE = 8 * 1024**3
TMP_SIZE = 512 * 1024**2
_PRLIMIT = "/usr/bin/prlimit"


def limits() -> list[str]:
    """`prlimit` with the sandbox's limits before the command (nothing where it is missing).
    Hard limits too: without capabilities, nothing inside can raise them again."""
    if not os.access(_PRLIMIT, os.X_OK):
        return []
    return [
        _PRLIMIT,
        f"--nproc={MAX_PROCESSES}:{MAX_PROCESSES}",
        f"--fsize={MAX_FILE_SIZE}:{MAX_FILE_SIZE}",
        "--core=0:0",
        "--",
    ]


def privilege_drop(uid: int | None) -> list[str]:
    """What runs the command as `uid` with nothing left of root, under the sandbox's limits
    (only the limits in a user namespace)."""
    if uid is None:
        return limits()
    return [
        *limits(),
        _SETPRIV,
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--ambient-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]


_HOSTS = f"127.0.0.1 localhost {HOSTNAME}\n::1 localhost ip6-localhost ip6-loopback\n"


class SandboxUnavailableError(RuntimeError):
    """bubblewrap is required (REVERIE_SANDBOX is not `none`) but cannot be used here."""


class SandboxFiles:
    """The file descriptors one bwrap run reads its generated files from (passwd, group,
    hosts, the seccomp filter); bwrap inherits them and they are closed after the run."""

    def __init__(self) -> None:
        self.fds: list[int] = []

    def data(self, content: bytes) -> int:
        # Close-on-exec: only the bwrap it is passed to (`pass_fds`) inherits it. uvloop does not
        # close other descriptors in children, so an inheritable one would reach every process
        # a worker starts meanwhile, other sessions' sandboxes included.
        fd = os.memfd_create("reverie-sandbox", os.MFD_CLOEXEC)
        self.fds.append(fd)
        os.write(fd, content)
        os.lseek(fd, 0, os.SEEK_SET)
        return fd

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []


@contextmanager
def sandbox_files() -> Iterator[SandboxFiles]:
    files = SandboxFiles()
    try:
        yield files
    finally:
        files.close()


def _system_args() -> list[str]:
    args: list[str] = []
    for root in _SYSTEM_ROOTS:
        if os.path.islink(root):
            args += ["--symlink", os.readlink(root), root]
        elif os.path.isdir(root):
            args += ["--ro-bind", root, root]
    for name in _ETC_ALLOWED:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    return args


def _identity_args(files: SandboxFiles, uid: int | None) -> list[str]:
    args = ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    args += ["--unshare-cgroup-try", "--hostname", HOSTNAME, "--new-session", "--die-with-parent"]
    if uid is None:
        args += ["--unshare-user", "--disable-userns", "--cap-drop", "ALL"]
        args += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
    program = seccomp_program()
    if program is not None:
        args += ["--seccomp", str(files.data(program))]
    inside = SANDBOX_UID if uid is None else uid
    # Made before any file in it, so that bwrap does not create it private to itself.
    args += ["--perms", "0755", "--dir", "/etc"]
    for path, content in (
        ("passwd", _passwd(inside)),
        ("group", _group(inside)),
        ("hosts", _HOSTS),
    ):
        fd = files.data(content.encode())
        args += ["--perms", "0644", "--ro-bind-data", str(fd), f"/etc/{path}"]
    return args


def _proc_args(present: frozenset[str]) -> list[str]:
    """A /proc of the sandbox's own, whose sysctls are read-only (written as the worker's root
    they would change the host) and whose kernel internals are masked. Only entries the
    sandbox's /proc shows (`present`) can be masked: bwrap fails on a missing mount point."""
    args = ["--proc", "/proc", "--ro-bind", "/proc/sys", "/proc/sys"]
    for name in _PROC_MASKED:
        if name not in present:
            continue
        path = f"/proc/{name}"
        if os.path.isdir(path):
            args += ["--tmpfs", path, "--remount-ro", path]
        else:
            args += ["--ro-bind", "/dev/null", path]
    return args


def _base_args(
    files: SandboxFiles, uid: int | None, proc_entries: frozenset[str] | None = None
) -> list[str]:
    present = _sandbox_proc_entries(uid) if proc_entries is None else proc_entries
    args = _identity_args(files, uid) + _system_args()
    args += ["--dev", "/dev", *_proc_args(present), "--perms", "1777"]
    # /tmp lives in memory: sized, so that filling it cannot exhaust the host's RAM.
    args += ["--size", str(TMP_SIZE), "--tmpfs", "/tmp", "--size", str(1024**2)]
    args += ["--tmpfs", MOUNTS_PARENT]
    return args


def _worker_paths(workspace: Workspace) -> set[Path]:
    """The worker's own folders: REVERIE_HOME, its home, current directory and virtualenv."""
    paths = {Path(p) for p in workspace.hidden}
    paths.add(Path.cwd())
    if sys.prefix != sys.base_prefix:
        paths.add(Path(sys.prefix))
    return {p.resolve() for p in paths}


def _hide(paths: set[Path]) -> list[str]:
    """Cover each worker folder that happens to lie inside a system folder bound into the
    sandbox (a virtualenv under /usr/local, say) with an empty read-only tmpfs. Folders that
    contain system folders themselves are not bound at all, so they need nothing."""
    bound = [Path(root) for root in _SYSTEM_ROOTS if os.path.isdir(root)]
    inside = {p for p in paths if any(p != root and p.is_relative_to(root) for root in bound)}
    outermost = {p for p in inside if not any(o != p and p.is_relative_to(o) for o in inside)}
    args: list[str] = []
    for path in sorted(outermost, key=lambda p: len(p.parts)):
        if path.is_dir():
            args += ["--tmpfs", str(path), "--remount-ro", str(path)]
        elif path.exists():
            args += ["--ro-bind", "/dev/null", str(path)]
    return args


def bwrap_args(
    workspace: Workspace,
    files: SandboxFiles,
    *,
    state_dir: Path,
    proxy_socket: Path | None,
    uid: int | None,
) -> list[str]:
    """bwrap's options for one command of this session; `privilege_drop(uid)` and the command
    follow them (`uid`: `host_user()`, or None for a user namespace)."""
    args = _base_args(files, uid) + _hide(_worker_paths(workspace))
    args += ["--bind", str(workspace.work_dir), WORK_VIRTUAL]
    args += [*_parents(OUTPUTS_VIRTUAL), "--bind", str(workspace.outputs_dir), OUTPUTS_VIRTUAL]
    for mount in workspace.mounts:
        flag = "--ro-bind" if mount.read_only else "--bind"
        args += [*_parents(mount.virtual_path), flag, str(mount.host_path), mount.virtual_path]
    if proxy_socket is not None:
        args += [*_parents(PROXY_SOCKET_VIRTUAL)]
        args += ["--ro-bind", str(proxy_socket), PROXY_SOCKET_VIRTUAL]
    args += ["--bind", str(state_dir), STATE_VIRTUAL]
    # The root is bwrap's own tmpfs: read-only once everything is mounted on it, so only the
    # session's folders and the private /tmp can be written.
    args += ["--remount-ro", "/", "--chdir", WORK_VIRTUAL]
    return args


def bwrap_command(options: list[str], files: SandboxFiles) -> list[str]:
    """`bwrap` reading its options from a descriptor: inside, /proc/1/cmdline (bwrap is the
    sandbox's pid 1) then shows no host path (workspace, proxy socket, hidden folders)."""
    return ["bwrap", "--args", str(files.data(b"".join(o.encode() + b"\0" for o in options)))]


def _parents(virtual: str) -> list[str]:
    """The folders above a mount point, made traversable for the sandbox's user (bwrap would
    otherwise make them private to root when it runs as root)."""
    args: list[str] = []
    parts = virtual.strip("/").split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        args += ["--perms", "0755", "--dir", "/" + "/".join(parts[:depth])]
    return args


def proxy_bridge() -> str:
    """Shell lines run inside the sandbox before the command: `socat` turns the proxy's unix
    socket into 127.0.0.1:3128, detached (so the command's `wait` never waits for it), and the
    command starts once it listens."""
    listen = f"TCP-LISTEN:{SANDBOX_PROXY_PORT},bind=127.0.0.1,reuseaddr,fork"
    hex_port = f"{SANDBOX_PROXY_PORT:04X}"
    return (
        f"( socat {listen} UNIX-CONNECT:{PROXY_SOCKET_VIRTUAL} </dev/null >/dev/null 2>&1 & ); "
        "__reverie_i=0; while [ $__reverie_i -lt 300 ] && "
        f"! grep -q ':{hex_port} 00000000:0000 0A' /proc/net/tcp 2>/dev/null; "
        "do sleep 0.01; __reverie_i=$((__reverie_i+1)); done; unset __reverie_i"
    )


def proxy_environment() -> dict[str, str]:
    """Where programs inside the sandbox find the way out (curl, git, pip, npm honour these)."""
    http = f"http://127.0.0.1:{SANDBOX_PROXY_PORT}"
    socks = f"socks5h://127.0.0.1:{SANDBOX_PROXY_PORT}"
    names = {"HTTP_PROXY": http, "HTTPS_PROXY": http, "ALL_PROXY": socks}
    local = "localhost,127.0.0.1,::1"
    return {
        **names,
        **{k.lower(): v for k, v in names.items()},
        "NO_PROXY": local,
        "no_proxy": local,
    }


@cache
def socat_missing() -> bool:
    return shutil.which("socat") is None


def hand_over(folders: list[Path], uid: int | None) -> None:
    """Give the session's writable folders to the sandbox's host user (once: a folder it owns
    already is left alone), so that the unprivileged sandbox can write where the agent may.

    Blocking: call it in a thread. Race-free against a sandbox of the same session running
    meanwhile: every folder is opened by descriptor without following links, and every chown
    is relative to its folder's descriptor, never by a path that could be swapped.
    """
    if uid is None:
        return
    for folder in folders:
        if folder.lstat().st_uid != uid:
            _give_tree(folder, uid)


_TREE_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _give_tree(folder: Path, uid: int) -> None:
    top = os.open(folder, _TREE_FLAGS)
    pending = [top]
    try:
        while pending:
            fd = pending.pop()
            try:
                with os.scandir(fd) as entries:
                    for entry in entries:
                        os.chown(entry.name, uid, uid, dir_fd=fd, follow_symlinks=False)
                        if entry.is_dir(follow_symlinks=False):
                            with contextlib.suppress(OSError):
                                pending.append(os.open(entry.name, _TREE_FLAGS, dir_fd=fd))
            finally:
                if fd != top:
                    os.close(fd)
        # Last: until the top is handed over, a concurrent call hands the tree over too.
        os.fchown(top, uid, uid)
    finally:
        for fd in pending:
            os.close(fd)
        os.close(top)


def _probe(
    uid: int | None, proc_entries: frozenset[str], command: str
) -> subprocess.CompletedProcess[str]:
    with sandbox_files() as files:
        # Run as root inside when the worker is root: the probe checks that bwrap works, and
        # must not fail because the sandbox user's processes are at their limit.
        argv = [
            *bwrap_command(_base_args(files, uid, proc_entries), files),
            "/bin/sh",
            "-c",
            command,
        ]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=15, check=False, pass_fds=files.fds
        )


@cache
def _sandbox_proc_entries(uid: int | None) -> frozenset[str]:
    """What a sandbox's own /proc shows (a kernel hides some entries from user namespaces)."""
    probe = _probe(uid, frozenset(), "ls -A /proc")
    if probe.returncode != 0:
        raise SandboxUnavailableError(f"bwrap failed: {probe.stderr.strip()}")
    return frozenset(probe.stdout.split())


@cache
def bwrap_unavailable_reason() -> str | None:
    """Why bubblewrap cannot be used here, or None when it works (checked once per process).

    The probe uses the same namespaces, identity, filter and masks as a real command, since
    inside containers bwrap may be installed but unable to create them.
    """
    if shutil.which("bwrap") is None:
        return "bwrap is not on PATH"
    try:
        uid = host_user()
        probe = _probe(uid, _sandbox_proc_entries(uid), "true")
    except (OSError, subprocess.TimeoutExpired, SandboxUnavailableError) as error:
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
        if socat_missing():
            log.warning(
                "socat is not installed: sandboxed bash gets no network even where the "
                "environment allows it (apt-get install socat)"
            )
        return "bwrap"
    if choice == "none":
        log.warning("bash commands run UNSANDBOXED: bubblewrap is unavailable (%s)", reason)
        return "none"
    raise SandboxUnavailableError(
        f"bubblewrap is not installed or cannot run here ({reason}); install the Debian package "
        "`bubblewrap` or set REVERIE_SANDBOX=none to run commands unsandboxed"
    )
