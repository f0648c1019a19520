"""Changes others made to a store since a mount was last in step with it (versions with a
larger `seq`) written into the folder, except over a file the agent changed and has not yet
saved: its write-back settles it as a conflict."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from reverie import memory_files as mf
from reverie.activities import memory_cache
from reverie.activities.memory_context import MountContext
from reverie.activities.memory_disk import local_sha, remove
from reverie.activities.memory_materialise import materialise
from reverie.memory_file_writes import replace_file
from reverie.store import memory, memory_mounts
from reverie.store.memory_mounts import Entry
from reverie.store.pool import Connection

log = logging.getLogger(__name__)


async def pull(conn: Connection, mount: MountContext) -> None:
    """Bring the mount in step with its store (materialised if it has no mount row)."""
    store_id = mount.store_id
    before = await memory_mounts.get(conn, mount.session_id, store_id)
    if before is None:
        await materialise(conn, mount)
        return
    now, ids, heads = await memory.changed_since(conn, store_id, before.seq)
    if now <= before.seq:
        return
    known = await memory_mounts.entries_of_memories(conn, mount.session_id, store_id, ids)
    at_paths = await memory_mounts.entries(
        conn, mount.session_id, store_id, [h.path for h in heads.values()]
    )
    started = time.time_ns()
    removed, upserted, changed = await asyncio.to_thread(
        _apply_remote, mount.folder, ids, known, heads, at_paths, mount.displaced
    )
    async with conn.transaction():
        after = await memory_mounts.apply(
            conn, mount.session_id, store_id, removed=removed, upserted=upserted, seq=now
        )
    await memory_cache.journal(mount.sigs, before, after, changed, started)


def _apply_remote(
    folder: Path,
    ids: list[str],
    known: dict[str, tuple[str, Entry]],
    heads: dict[str, memory.Head],
    at_paths: dict[str, Entry],
    displaced: Path,
) -> tuple[list[str], list[tuple[str, Entry]], dict[str, mf.Sig | None]]:
    """Bring files in step with memories changed in the store (a pull). A file the agent
    changed and has not saved is left alone, with its base: its write-back settles it. Files
    replaced or removed go to `displaced`, where a write through them is still seen."""
    removed: list[str] = []
    upserted: list[tuple[str, Entry]] = []
    changed: dict[str, mf.Sig | None] = {}
    dirty: set[str] = set()
    # Moves and deletions first, so a path freed here can be taken below.
    for memory_id in ids:
        if memory_id not in known:
            continue
        old_path, entry = known[memory_id]
        head = heads.get(memory_id)
        if head is not None and head.path == old_path:
            continue
        local = local_sha(folder, old_path[1:])
        if local is None or local == entry.content_sha256:
            if local is not None:
                remove(folder, old_path, changed, displaced, entry.content_sha256)
            removed.append(old_path)
        else:
            dirty.add(memory_id)
    freed = set(removed)
    for memory_id in ids:
        head = heads.get(memory_id)
        if head is None or memory_id in dirty:
            continue
        entry_for = Entry(head.memory_id, head.content_sha256, head.memory_version_id)
        old = known.get(memory_id)
        holder = at_paths.get(head.path)
        if holder is not None and holder.memory_id != memory_id and head.path not in freed:
            continue  # another memory's file, not yet saved, is still there
        local = local_sha(folder, head.path[1:])
        if old is not None and old[0] == head.path:
            if local == head.content_sha256:
                upserted.append((head.path, entry_for))
                continue
            if local != old[1].content_sha256:
                continue  # changed here too: the write-back settles it
            expected = old[1].content_sha256
        elif local == head.content_sha256:
            upserted.append((head.path, entry_for))
            continue
        elif local is not None:
            continue  # a file of the agent's own is there: the write-back settles it
        else:
            expected = None
        try:
            # Only over the file as it was checked (a tool running meanwhile may change it).
            sig = replace_file(folder, head.path[1:], head.content or "", expected, displaced)
        except OSError as error:
            log.warning("memory mount: %s cannot be a file here: %s", head.path, error)
            continue
        if sig is None:
            continue  # changed meanwhile: the write-back settles it
        changed[head.path[1:]] = sig
        upserted.append((head.path, entry_for))
    return removed, upserted, changed
