"""Changes found in a mount written to the store as versions, each with its base's digest as
precondition, in transactions that also move the bases and count the write-back: committed, a
write-back is never made again; cut short, the next one makes it whole. Version ids derive from
(session, store, write-back number, path), so a retried write-back writes the same ids."""

from __future__ import annotations

from reverie import memory_files as mf
from reverie.activities.memory_changes import Change, Conflict
from reverie.activities.memory_conflicts import settle
from reverie.activities.memory_context import MountContext
from reverie.models.errors import (
    InvalidRequestError,
    MemoryPathConflictError,
    MemoryPreconditionFailedError,
    NotFoundError,
)
from reverie.store import memory, memory_mounts
from reverie.store.memory_mounts import Entry, MountRow
from reverie.store.pool import Connection

# Changes one transaction of a write-back carries.
CHUNK = 200


async def push(
    conn: Connection, mount: MountContext, changes: list[Change]
) -> tuple[MountRow, list[str], dict[str, mf.Sig | None]]:
    """Write the changes as versions, with their bases as preconditions; settle those that
    lost to a change made elsewhere by taking the store's version."""
    store_id = mount.store_id
    notes: list[str] = []
    conflicts: list[Conflict] = []
    after = await memory_mounts.get(conn, mount.session_id, store_id)
    assert after is not None
    for start in range(0, len(changes), CHUNK):
        chunk = changes[start : start + CHUNK]
        removed: list[str] = []
        upserted: list[tuple[str, Entry]] = []
        async with conn.transaction():
            number = after.syncs + 1
            for change in chunk:
                outcome = await _apply(conn, mount, number, change)
                if isinstance(outcome, Conflict):
                    conflicts.append(outcome)
                elif isinstance(outcome, str):
                    notes.append(f"{mount.virtual(change.path)}: {outcome}")
                else:
                    removed += outcome[0]
                    upserted += outcome[1]
            after = await memory_mounts.apply(
                conn,
                mount.session_id,
                store_id,
                removed=removed,
                upserted=upserted,
                count_sync=True,
            )
        mount.heartbeat()
    resolved: dict[str, mf.Sig | None] = {}
    if conflicts:
        after, resolved = await settle(conn, mount, conflicts)
        for conflict in conflicts:
            notes.append(
                f"{mount.virtual(conflict.path)}: your change was NOT saved: this "
                "memory was changed elsewhere since this session last read it. The file now "
                "holds the store's current version (or is gone, if it was deleted there): "
                "read it again, then redo your change."
            )
    return after, notes, resolved


async def _apply(
    conn: Connection, mount: MountContext, number: int, change: Change
) -> tuple[list[str], list[tuple[str, Entry]]] | Conflict | str:
    """One change in a savepoint: (paths removed, entries set) when written, a conflict
    when the store's version must win, or why it was not saved."""
    store_id = mount.store_id
    version_id, memory_id = memory.sync_ids(mount.session_id, store_id, number, change.path)
    base = change.base
    read = change.read
    try:
        async with conn.transaction():
            if change.kind == "create":
                assert read is not None
                written = await memory.create_memory(
                    conn,
                    store_id,
                    change.path,
                    read.content,
                    mount.actor,
                    max_memories=mount.settings.memory_max_memories,
                    version_id=version_id,
                    memory_id=memory_id,
                )
            elif change.kind == "delete":
                assert base is not None
                await memory.delete_memory(
                    conn,
                    store_id,
                    base.memory_id,
                    mount.actor,
                    expected_sha256=base.content_sha256,
                    version_id=version_id,
                )
                return [change.path], []
            else:
                assert base is not None and read is not None
                written = await memory.update_memory(
                    conn,
                    store_id,
                    base.memory_id,
                    mount.actor,
                    content=read.content,
                    path=change.path if change.kind == "rename" else None,
                    expected_sha256=base.content_sha256,
                    version_id=version_id,
                )
    except MemoryPathConflictError as error:
        return _lost(change, error.conflicting_memory_id)
    except (MemoryPreconditionFailedError, NotFoundError):
        return _lost(change, base.memory_id if base else None)
    except InvalidRequestError as error:
        return f"not saved to memory: {error.message}"
    got = written.memory
    if got is None:  # made by an earlier try and deleted since: nothing to keep
        return ([change.old_path] if change.old_path else []), []
    entry = Entry(got.id, got.content_sha256, got.memory_version_id)
    removed = [change.old_path] if change.kind == "rename" and change.old_path else []
    return removed, [(got.path, entry)]


def _lost(change: Change, memory_id: str | None) -> Conflict:
    """The conflict of a change that lost to the store's version of `memory_id`; a rename's
    is settled on its source, with its own memory's version, and its new path not kept."""
    if change.kind == "rename":
        return Conflict(
            path=change.old_path or change.path,
            memory_id=change.base.memory_id if change.base else None,
            also_remove=change.path,
        )
    return Conflict(path=change.path, memory_id=memory_id)
