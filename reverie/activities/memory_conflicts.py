"""When the store's version wins: a change made meanwhile elsewhere is never overwritten, so
the files the agent changed in vain get the store's versions back, and writes made through
files a sync took away while a tool held them open are told to the agent, never lost unseen."""

from __future__ import annotations

import asyncio
import logging

from reverie import memory_files as mf
from reverie.activities.memory_changes import Change, Conflict, undoing
from reverie.activities.memory_context import MountContext
from reverie.activities.memory_disk import remove
from reverie.memory_file_writes import collect_displaced, write_file
from reverie.store import memory, memory_mounts
from reverie.store.memory_mounts import Entry, MountRow
from reverie.store.pool import Connection

log = logging.getLogger(__name__)


async def settle(
    conn: Connection, mount: MountContext, conflicts: list[Conflict]
) -> tuple[MountRow, dict[str, mf.Sig | None]]:
    """Put the store's versions in the files the agent changed in vain: the file first,
    then its base, so a crash in between leaves a file whose content the store already
    holds (the next write-back sees it as unchanged)."""
    store_id = mount.store_id
    heads = await memory.heads(conn, store_id, [c.memory_id for c in conflicts if c.memory_id])
    known = await memory_mounts.entries(
        conn,
        mount.session_id,
        store_id,
        [h.path for h in heads.values()] + [c.also_remove for c in conflicts if c.also_remove],
    )
    folder = mount.folder
    displaced = mount.displaced

    def settle_files() -> tuple[list[str], list[tuple[str, Entry]], dict[str, mf.Sig | None]]:
        removed: list[str] = []
        upserted: list[tuple[str, Entry]] = []
        changed: dict[str, mf.Sig | None] = {}
        for conflict in conflicts:
            for extra in filter(None, (conflict.also_remove,)):
                if extra not in known:
                    remove(folder, extra, changed, displaced)
            head = heads.get(conflict.memory_id) if conflict.memory_id else None
            if head is None or head.path != conflict.path:
                remove(folder, conflict.path, changed, displaced)
                removed.append(conflict.path)
            if head is not None:
                holder = known.get(head.path)
                if holder is None or holder.memory_id == head.memory_id:
                    try:
                        changed[head.path[1:]] = write_file(
                            folder, head.path[1:], head.content or "", displaced
                        )
                    except OSError as error:
                        log.warning("memory mount: cannot write %s: %s", head.path, error)
                        continue
                    upserted.append(
                        (
                            head.path,
                            Entry(head.memory_id, head.content_sha256, head.memory_version_id),
                        )
                    )
        return removed, upserted, changed

    removed, upserted, changed = await asyncio.to_thread(settle_files)
    async with conn.transaction():
        after = await memory_mounts.apply(
            conn,
            mount.session_id,
            store_id,
            removed=[p for p in removed if p not in {u[0] for u in upserted}],
            upserted=upserted,
            count_sync=True,
        )
    return after, changed


async def undo(
    conn: Connection, mount: MountContext, changes: list[Change]
) -> tuple[MountRow, dict[str, mf.Sig | None]]:
    """A read-only mount changed anyway: put each file back as the store has it."""
    return await settle(conn, mount, undoing(changes))


async def lost_writes(mount: MountContext) -> list[str]:
    """Writes made through files a pull or a settled conflict took out of the mount while
    a tool held them open: not saved (the store's version had won), and the agent told."""
    written = await asyncio.to_thread(collect_displaced, mount.displaced)
    return [
        f"{mount.virtual('/' + rel)}: a write made through this file while a "
        "sync replaced or removed it (the memory was changed elsewhere) was NOT saved: "
        "the file holds the store's current version (or is gone): read it again, then "
        "redo your change."
        for rel in sorted(set(written))
    ]
