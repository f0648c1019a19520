"""Memory stores mounted in a session: each attached store is a folder the agent sees at
`/mnt/memory/<slug>/`, materialised on the session's first tool run, brought up to date with
the store before every tool run, and written back as versions after every tool run that could
have changed it. This module is the session's side (which mounts, what a tool run may change,
one sync of a mount at a time); each step of a mount's sync has its own module.

State, per mount: in PostgreSQL, the store's `seq` the folder is in step with and, per file,
the memory, digest and version it was last in step with (`memory_mount_files`, the base of the
next change's precondition); beside the workspace (never visible to the agent), a cache of the
files' stat signatures (`memory_cache`), so that a write-back reads and hashes only files whose
signature changed, and a marker per tool run that may have changed files until its write-back
is done.

- **Materialise** (`memory_materialise`): every memory written into a fresh folder, then the
  mount recorded.
- **What changed** (`memory_write_back`): after `write`/`edit`, that one file; after `bash`,
  what the mount's inotify watch (`memory_watch`) saw change; where the watch cannot vouch, a
  walk of the whole mount comparing stat signatures with the cache. The write-back costs what
  changed.
- **Write-back** (`memory_push`): every new, changed or removed file becomes a create, an
  update or a delete with the file's base digest as precondition, in transactions that also
  move the bases and count the write-back (`syncs`), so a write-back committed is never made
  again and one cut short is made whole by the next (a run whose worker died: by a walk of the
  whole mount). Version ids derive from (session, store, write-back number, path): a retried
  write-back writes the same ids, and an id already written is not written again.
- **Conflicts** (`memory_conflicts`): a change made meanwhile elsewhere is never overwritten.
  If the precondition fails (or the path was taken, or the memory deleted), the store's version
  wins: it is put in the file, and the agent's result says the change was not saved and to read
  the file again.
- **Pulls** (`memory_pull`): changes others made after the folder's `seq` (versions with a
  larger `seq`) are written into the folder, except over a file the agent changed and has not
  yet saved (the write-back then settles it as a conflict).
- **Files a tool holds open**: a file a pull or a settled conflict takes out of the mount is
  kept aside (`memory_file_writes.collect_displaced`); a write made through it afterwards is
  told to the agent as a conflict at the next write-back, never lost unseen
  (`memory_conflicts`).
- **Read-only** mounts are bound read-only into bash's sandbox and refused by the file tools;
  should a file still change, it is put back from the store.
- **A worker killed** between a tool run and its write-back leaves the run's marker: the
  interrupted run's error result is recorded by `record_tool_error`, which writes back first.
- Untrusted content (links, FIFOs, devices, huge or binary files, bad names, too many files)
  is skipped with a note for the agent; nothing is ever followed out of the mount.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg

from reverie import memory_files as mf
from reverie.activities.memory_conflicts import lost_writes
from reverie.activities.memory_context import MountContext
from reverie.activities.memory_materialise import materialise
from reverie.activities.memory_pull import pull
from reverie.activities.memory_write_back import write_back
from reverie.activities.tools.models import Mount
from reverie.activities.tools.paths import PathRefused, to_host
from reverie.activities.tools.workspace import Workspace
from reverie.models.memory import MemoryStoreResource, memory_resources
from reverie.settings import Settings
from reverie.store.pool import Connection, Pool

log = logging.getLogger(__name__)

# Notes one tool result carries; more are counted.
MAX_NOTES = 20
# Mount-wide plans (`bash`) scan the whole mount; file tools name their one file.
WHOLE: None = None
Plan = dict[str, list[str] | None]

# Failures worth the activity's retry (the database away for a moment), not a note.
TRANSIENT = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    ConnectionError,
    TimeoutError,
)

_LOCKS: weakref.WeakValueDictionary[tuple[str, str], asyncio.Lock] = weakref.WeakValueDictionary()


class SessionMemory:
    """The memory mounts of one session, for one activity."""

    def __init__(
        self,
        pool: Pool,
        settings: Settings,
        session_id: str,
        resources: list[MemoryStoreResource],
        heartbeat: Callable[[], None] | None = None,
        *,
        watch: bool = True,
    ) -> None:
        self._pool = pool
        self._watch = watch  # False: every write-back after bash scans the whole mount
        self._settings = settings
        self.session_id = session_id
        self.resources = resources
        self._heartbeat = heartbeat or (lambda: None)
        self.base = mf.session_folder(settings.workspaces, session_id)

    @classmethod
    async def load(
        cls,
        pool: Pool,
        settings: Settings,
        session_id: str,
        heartbeat: Callable[[], None] | None = None,
    ) -> SessionMemory | None:
        """The session's mounts, or None when it has no memory store."""
        resources = await pool.fetchval("SELECT resources FROM sessions WHERE id = $1", session_id)
        mounted = memory_resources(resources or [])
        return cls(pool, settings, session_id, mounted, heartbeat) if mounted else None

    # ---- where things are ----------------------------------------------------------------

    def _mount(self, resource: MemoryStoreResource) -> MountContext:
        return MountContext(
            session_id=self.session_id,
            resource=resource,
            base=self.base,
            settings=self._settings,
            heartbeat=self._heartbeat,
            watch=self._watch,
        )

    def host_dir(self, resource: MemoryStoreResource) -> Path:
        return self._mount(resource).folder

    def _marker(self, result_event_id: str) -> Path:
        return self.base / "state" / "pending" / result_event_id

    def mounts(self) -> list[Mount]:
        return [
            Mount(host_path=self.host_dir(r), virtual_path=r.mount_path, read_only=r.read_only)
            for r in self.resources
        ]

    # ---- before a tool run -----------------------------------------------------------------

    async def prepare(self) -> None:
        """Every mount on disk and in step with its store: materialised if new, else with the
        changes made since it was last brought up to date."""
        ids = [r.memory_store_id for r in self.resources]
        rows = await self._pool.fetch(
            """SELECT s.id, s.seq, m.seq AS mounted_seq, m.session_id IS NOT NULL AS mounted
               FROM memory_stores s LEFT JOIN memory_mounts m
                 ON m.memory_store_id = s.id AND m.session_id = $1
               WHERE s.id = ANY($2::text[])""",
            self.session_id,
            ids,
        )
        found = {row["id"]: row for row in rows}
        for resource in self.resources:
            row = found.get(resource.memory_store_id)
            mount = self._mount(resource)
            if row is None:  # the store was deleted: an empty folder stands in
                await asyncio.to_thread(mount.folder.mkdir, parents=True, exist_ok=True)
            elif not row["mounted"] or not mount.folder.is_dir():
                async with self._locked(resource) as conn:
                    await materialise(conn, mount)
            elif row["seq"] > row["mounted_seq"]:
                async with self._locked(resource) as conn:
                    await pull(conn, mount)

    def plan(self, name: str, tool_input: Any, workspace: Workspace) -> Plan | None:
        """What a tool run may change in the mounts: everything (bash), one file (write, edit
        into a read-write mount), or nothing."""
        if name == "bash":
            return {r.memory_store_id: WHOLE for r in self.resources}
        if name not in ("write", "edit") or not isinstance(tool_input, dict):
            return None
        path = tool_input.get("file_path")
        if not isinstance(path, str):
            return None
        try:
            target = to_host(workspace, path)
        except PathRefused:
            return None
        for resource in self.resources:
            if target.root.virtual == resource.mount_path and not resource.read_only:
                if target.relative == ".":
                    return None
                return {resource.memory_store_id: [target.relative]}
        return None

    def mark_pending(self, result_event_id: str) -> None:
        """Before a tool run that may change the mounts: its write-back is owed."""
        marker = self._marker(result_event_id)
        marker.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def pending(self, result_event_id: str) -> bool:
        return self._marker(result_event_id).exists()

    def clear_pending(self, result_event_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._marker(result_event_id).unlink()

    # ---- after a tool run ------------------------------------------------------------------

    async def write_back(self, plan: Plan | None = None) -> list[str]:
        """Save what the tool run changed; answers the notes for the agent (empty when every
        change was saved). A plan naming no file of a mount (`bash`) looks at what the mount's
        watch saw change; no plan at all (a write-back owed by a run whose worker died, which
        a watch elsewhere did not see) scans every mount whole."""
        notes: list[str] = []
        for resource in self.resources:
            if plan is not None and resource.memory_store_id not in plan:
                continue
            rels = None if plan is None else plan[resource.memory_store_id]
            mount = self._mount(resource)
            async with self._locked(resource) as conn:
                notes += await lost_writes(mount)
                notes += await write_back(conn, mount, rels, whole=plan is None)
        if len(notes) > MAX_NOTES:
            notes = [*notes[:MAX_NOTES], f"... and {len(notes) - MAX_NOTES} more"]
        return notes

    async def write_back_guarded(self, plan: Plan | None = None) -> list[str]:
        """`write_back`, except that a failure that is not the database being unreachable
        becomes a note (and a log entry) instead of an exception: a tool result must always
        be recordable. Files not saved then are found by the next whole-mount write-back."""
        try:
            return await self.write_back(plan)
        except TRANSIENT:
            raise
        except Exception as error:
            log.exception("memory write-back failed in session %s", self.session_id)
            return [
                f"your changes under /mnt/memory/ could not all be saved ({type(error).__name__}); "
                "they stay in the files and are saved at a later write-back"
            ]

    # ---- locking ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _locked(self, resource: MemoryStoreResource) -> AsyncIterator[Connection]:
        """One sync of a mount at a time, across tool runs and workers: a PostgreSQL advisory
        lock held by the connection every step of the sync uses (so waiting for it never
        needs a second connection), behind a local lock (so one process queues its own)."""
        key = (self.session_id, resource.memory_store_id)
        local = _LOCKS.get(key)
        if local is None:
            local = _LOCKS[key] = asyncio.Lock()
        async with local, self._pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock(hashtext($1), hashtext($2))", *key)
            try:
                yield conn
            finally:
                try:
                    await conn.execute(
                        "SELECT pg_advisory_unlock(hashtext($1), hashtext($2))", *key
                    )
                except BaseException:
                    # The pool's release does not unlock (see `store.pool`): a connection
                    # that may still hold the lock is closed, which releases it.
                    conn.terminate()
                    raise
