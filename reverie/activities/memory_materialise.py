"""A mount made from scratch: every memory of the store written into a fresh folder, then the
mount and its files recorded at once (so a folder without a mount row was never seen by a
tool, and is thrown away), its watch set up and its signature cache written."""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial

from reverie import memory_files as mf
from reverie.activities import memory_cache
from reverie.activities.memory_cache import SigCache, trusted
from reverie.activities.memory_context import MountContext
from reverie.activities.memory_disk import fresh_folder, write_batch
from reverie.activities.memory_watch import WATCHES
from reverie.store import memory_mounts
from reverie.store.memory_mounts import Entry
from reverie.store.pool import Connection

log = logging.getLogger(__name__)


async def materialise(conn: Connection, mount: MountContext) -> None:
    """Write every memory of the store into a fresh folder, then record the mount and its
    files at once. A folder left by a materialisation cut short is thrown away first:
    no tool has run on it (the mount row comes last)."""
    store_id = mount.store_id
    # A mount rebuilt keeps counting its write-backs: their number names their versions.
    syncs = 0
    if (old := await memory_mounts.get(conn, mount.session_id, store_id)) is not None:
        if mount.folder.is_dir():
            return
        syncs = old.syncs
        # The folder vanished (an operator cleaned up): rebuilt from the store.
        async with conn.transaction():
            await conn.execute(
                "DELETE FROM memory_mounts WHERE session_id = $1 AND memory_store_id = $2",
                mount.session_id,
                store_id,
            )
    folder = mount.folder
    WATCHES.drop(mount.key)
    await asyncio.to_thread(fresh_folder, folder)
    files: list[tuple[str, Entry]] = []
    sigs: dict[str, mf.Sig] = {}
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        seq = await conn.fetchval("SELECT seq FROM memory_stores WHERE id = $1", store_id)
        if seq is None:
            return
        cursor = await conn.cursor(
            """SELECT id, path, content, content_sha256, memory_version_id FROM memories
               WHERE memory_store_id = $1 ORDER BY path""",
            store_id,
        )
        while batch := await cursor.fetch(500):
            written = await asyncio.to_thread(write_batch, folder, batch)
            for path, entry, sig in written:
                files.append((path, entry))
                sigs[path[1:]] = sig
            mount.heartbeat()
    # No tool changes the folder before it is mounted; from now on the watch sees what
    # does. A file may yet be changed within its timestamps' tick: the newest files'
    # signatures are not trusted (a later whole scan, in another process, reads them).
    watch = WATCHES.begin(mount.key, str(folder))
    if watch is not None:
        await asyncio.to_thread(mf.walk_folders, folder, partial(WATCHES.add_dir, watch))
    done = time.time_ns()
    sigs = {rel: trusted(sig, done) for rel, sig in sigs.items()}
    async with conn.transaction():
        await memory_mounts.create(conn, mount.session_id, store_id, seq, files, syncs)
    WATCHES.arm(watch)
    await asyncio.to_thread(
        memory_cache.save, mount.sigs, SigCache(header=(seq, syncs), files=sigs)
    )
    log.info("mounted %d memories of %s in session %s", len(files), store_id, mount.session_id)
