"""Translation between the agent's paths (/workspace, /mnt/...) and the host's.

The agent never sees a host path: its inputs are mapped in here before the file tools run, and
host paths in their answers are mapped back out. Only lexical work happens here: a path becomes
one of the session's roots plus a path relative to it, and the file tools then resolve that
relative path beneath the root's directory descriptor (`beneath.py`), so no symlink can lead
them out.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from reverie.activities.tools.models import WORK_VIRTUAL
from reverie.activities.tools.workspace import VirtualRoot, Workspace


class PathRefused(ValueError):
    """A path outside every folder the agent may use; the message is meant for the model."""


@dataclass(frozen=True)
class HostPath:
    """Where an agent path lives: a root folder and a `..`-free path below it.

    `relative` is "." for the root itself; `virtual` is the normalised path the agent meant,
    the one to show it in answers.
    """

    root: VirtualRoot
    relative: str
    virtual: str


def virtual_normpath(path: str) -> str:
    """The absolute, `..`-free virtual path the agent meant (relative paths start at /workspace)."""
    joined = path if path.startswith("/") else posixpath.join(WORK_VIRTUAL, path)
    normal = posixpath.normpath(joined)
    # POSIX keeps a leading `//`; the agent's namespace has no use for it.
    return "/" + normal.lstrip("/")


def to_host(workspace: Workspace, path: str) -> HostPath:
    """Map an agent path to a root and a relative path, or raise `PathRefused` for anything
    outside its folders."""
    if "\x00" in path:
        raise PathRefused(f"path {path!r} contains a NUL byte")
    virtual = virtual_normpath(path)
    for root in workspace.roots():
        if virtual == root.virtual or virtual.startswith(root.virtual + "/"):
            rest = virtual[len(root.virtual) :].lstrip("/")
            return HostPath(root=root, relative=rest or ".", virtual=virtual)
    reachable = ", ".join(sorted(r.virtual for r in workspace.roots()))
    raise PathRefused(
        f"path {path!r} is outside the folders this session can use ({reachable}); "
        "relative paths start at /workspace"
    )


def to_virtual_text(workspace: Workspace, text: str) -> str:
    """Replace every host path of the workspace in `text` with the agent's path for it."""
    pairs: dict[str, str] = {}
    for root in workspace.roots():
        for host in {str(root.host), str(root.host.resolve())}:
            pairs[host] = root.virtual
    # Longest first, so a mount inside another root is matched before its parent.
    hosts = sorted(pairs, key=len, reverse=True)
    pattern = re.compile("|".join(f"{re.escape(h)}(?![^/\\s'\":,;)\\]}}>])" for h in hosts))
    return pattern.sub(lambda m: pairs[m.group(0)], text)
