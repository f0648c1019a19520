"""What a write-back found changed in a mount (a create, an update, a delete or a rename, each
with the base it was last in step with), and what must be settled from the store instead."""

from __future__ import annotations

from dataclasses import dataclass

from reverie import memory_files as mf
from reverie.store.memory_mounts import Entry


@dataclass
class Change:
    kind: str  # create | update | delete | rename
    path: str  # the memory path the change lands on
    base: Entry | None = None
    read: mf.Read | None = None
    old_path: str | None = None  # a rename's source


@dataclass
class Conflict:
    path: str  # where the agent changed something
    memory_id: str | None  # the memory whose store version wins (None: the one at `path`)
    also_remove: str | None = None  # a rename's new path, which is not kept


def pair_renames(changes: list[Change]) -> list[Change]:
    """A file removed and another added with the same content in one write-back is a rename
    (`mv`): one version that keeps the memory's id and history, not a delete and a create."""
    deletes: dict[str, list[Change]] = {}
    for change in changes:
        if change.kind == "delete" and change.base is not None:
            deletes.setdefault(change.base.content_sha256, []).append(change)
    if not deletes:
        return changes
    paired: set[int] = set()
    out: list[Change] = []
    for change in changes:
        if change.kind == "create" and change.read is not None:
            candidates = deletes.get(change.read.sha256) or []
            if candidates:
                gone = candidates.pop(0)
                paired.add(id(gone))
                out.append(
                    Change(
                        "rename",
                        change.path,
                        base=gone.base,
                        read=change.read,
                        old_path=gone.path,
                    )
                )
                continue
        out.append(change)
    return [c for c in out if id(c) not in paired]


def undoing(changes: list[Change]) -> list[Conflict]:
    """The conflicts that put each changed file back as the store has it (a read-only mount
    changed anyway)."""
    conflicts = []
    for change in changes:
        if change.kind == "create":
            conflicts.append(Conflict(path=change.path, memory_id=None))
        else:
            memory_id = change.base.memory_id if change.base else None
            conflicts.append(
                Conflict(
                    path=change.old_path or change.path,
                    memory_id=memory_id,
                    also_remove=change.path if change.kind == "rename" else None,
                )
            )
    return conflicts
