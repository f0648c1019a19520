"""Memory stores mounted in a session: each attached store is a folder the agent sees at
`/mnt/memory/<slug>/`, materialised on the session's first tool run, brought up to date with
the store before every tool run, and written back as versions after every tool run that could
have changed it.

State, per mount: in PostgreSQL, the store's `seq` the folder is in step with and, per file,
the memory, digest and version it was last in step with (`memory_mount_files`, the base of the
next change's precondition); beside the workspace (never visible to the agent), a cache of the
files' stat signatures, so that a write-back reads and hashes only files whose signature
changed, and a marker per tool run that may have changed files until its write-back is done.

- **What changed**: after `write`/`edit`, that one file; after `bash`, what the mount's
  inotify watch (`memory_watch.py`) saw change; where the watch cannot vouch, a walk of the
  whole mount comparing stat signatures with the cache. The write-back costs what changed.
- **Write-back**: every new, changed or removed file becomes a create, an update or a delete
  with the file's base digest as precondition, in transactions that also move the bases and
  count the write-back (`syncs`), so a write-back committed is never made again and one cut
  short is made whole by the next (a run whose worker died: by a walk of the whole mount). Version ids derive from (session, store, write-back number, path): a retried
  write-back writes the same ids, and an id already written is not written again.
- **Conflicts**: a change made meanwhile elsewhere is never overwritten. If the precondition
  fails (or the path was taken, or the memory deleted), the store's version wins: it is put in
  the file, and the agent's result says the change was not saved and to read the file again.
- **Pulls**: changes others made after the folder's `seq` (versions with a larger `seq`) are
  written into the folder, except over a file the agent changed and has not yet saved (the
  write-back then settles it as a conflict).
- **Files a tool holds open**: a file a pull or a settled conflict takes out of the mount is
  kept aside (`memory_files.collect_displaced`); a write made through it afterwards is told to
  the agent as a conflict at the next write-back, never lost unseen.
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
import marshal
import os
import shutil
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg

from reverie import memory_files as mf
from reverie.activities.memory_watch import WATCHES, Changes
from reverie.activities.tools.models import Mount
from reverie.activities.tools.paths import PathRefused, to_host
from reverie.activities.tools.workspace import Workspace
from reverie.models.errors import (
    InvalidRequestError,
    MemoryPathConflictError,
    MemoryPreconditionFailedError,
    NotFoundError,
)
from reverie.models.memory import (
    MemoryStoreResource,
    SessionActor,
    memory_resources,
    path_problem,
)
from reverie.settings import Settings
from reverie.store import memory, memory_mounts
from reverie.store.memory_mounts import Entry, MountRow
from reverie.store.pool import Connection, Pool

log = logging.getLogger(__name__)

MEMORY_DIR = mf.MEMORY_DIR
# Changes one transaction of a write-back carries.
CHUNK = 200
# Notes one tool result carries; more are counted.
MAX_NOTES = 20
# A file changed this close to a scan may change again within the same ctime tick: its
# signature is not trusted (it is looked at again next time).
RACY_NS = 200_000_000
# The signature journal is folded into its snapshot once it grows past this.
JOURNAL_COMPACT_BYTES = 1 << 20
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


def mount_note(resources: list[dict[str, Any]]) -> str | None:
    """The system prompt's section on the session's memory mounts (None without any)."""
    mounted = memory_resources(resources)
    if not mounted:
        return None
    lines = [
        "# Memory",
        "Long-term memory stores are mounted as folders. Read and change them with your file "
        "tools and bash like any other files; they hold text files of at most 100 kB. After "
        "each tool call your changes are saved as new versions. If a memory was changed "
        "elsewhere meanwhile, your change is not saved and the tool result says so: read the "
        "file again, then redo the change.",
    ]
    for resource in mounted:
        access = "read-only" if resource.read_only else "read-write"
        line = f"- {resource.mount_path}/ ({access}): {resource.name}"
        if resource.description:
            line += f" — {resource.description}"
        lines.append(line)
        if resource.instructions:
            lines.append(f"  Instructions: {resource.instructions}")
    return "\n".join(lines)


@dataclass
class _Cache:
    """Stat signatures of a mount's files as of a sync, valid only while the mount's row in
    PostgreSQL still has the (seq, syncs) it was written with."""

    header: tuple[int, int]
    files: dict[str, mf.Sig] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class _Change:
    kind: str  # create | update | delete | rename
    path: str  # the memory path the change lands on
    base: Entry | None = None
    read: mf.Read | None = None
    old_path: str | None = None  # a rename's source


@dataclass
class _Conflict:
    path: str  # where the agent changed something
    memory_id: str | None  # the memory whose store version wins (None: the one at `path`)
    also_remove: str | None = None  # a rename's new path, which is not kept


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
        self._actor = SessionActor(session_id=session_id).model_dump()

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

    def host_dir(self, resource: MemoryStoreResource) -> Path:
        return self.base / "mounts" / resource.slug

    def _state_dir(self) -> Path:
        return self.base / "state"

    def _cache_file(self, resource: MemoryStoreResource) -> Path:
        return self._state_dir() / f"{resource.memory_store_id}.sigs"

    def _displaced(self, resource: MemoryStoreResource) -> Path:
        """Files a sync took out of the mount, kept while a tool may still write through them
        (`memory_files.collect_displaced`)."""
        return self._state_dir() / "displaced" / resource.memory_store_id

    def _marker(self, result_event_id: str) -> Path:
        return self._state_dir() / "pending" / result_event_id

    def mounts(self) -> list[Mount]:
        return [
            Mount(host_path=self.host_dir(r), virtual_path=r.mount_path, read_only=r.read_only)
            for r in self.resources
        ]

    def _virtual(self, resource: MemoryStoreResource, path: str) -> str:
        return resource.mount_path + path

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
            folder = self.host_dir(resource)
            if row is None:  # the store was deleted: an empty folder stands in
                await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
            elif not row["mounted"] or not folder.is_dir():
                async with self._locked(resource) as conn:
                    await self._materialise(conn, resource)
            elif row["seq"] > row["mounted_seq"]:
                async with self._locked(resource) as conn:
                    await self._pull(conn, resource)

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
            async with self._locked(resource) as conn:
                notes += await self._lost_writes(resource)
                notes += await self._write_back(conn, resource, rels, whole=plan is None)
        if len(notes) > MAX_NOTES:
            notes = [*notes[:MAX_NOTES], f"... and {len(notes) - MAX_NOTES} more"]
        return notes

    async def _lost_writes(self, resource: MemoryStoreResource) -> list[str]:
        """Writes made through files a pull or a settled conflict took out of the mount while
        a tool held them open: not saved (the store's version had won), and the agent told."""
        written = await asyncio.to_thread(mf.collect_displaced, self._displaced(resource))
        return [
            f"{self._virtual(resource, '/' + rel)}: a write made through this file while a "
            "sync replaced or removed it (the memory was changed elsewhere) was NOT saved: "
            "the file holds the store's current version (or is gone): read it again, then "
            "redo your change."
            for rel in sorted(set(written))
        ]

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
                # The pool's reset also releases it, should this fail.
                await conn.execute("SELECT pg_advisory_unlock(hashtext($1), hashtext($2))", *key)

    # ---- the signature cache ---------------------------------------------------------------
    #
    # A snapshot (`<store>.sigs`, rewritten by whole-mount scans and materialisations) and a
    # journal of the changes since (`<store>.sigs.log`, appended to by pulls and one-file
    # write-backs: they cost what they change, not the mount's size). Each journal record
    # carries the mount state it starts from; loading replays records while they chain, so a
    # record written after a lost one (a crash between a commit and its record) leaves the cache
    # behind the mount's row, hence stale.

    def _journal(self, resource: MemoryStoreResource) -> Path:
        return self._cache_file(resource).with_suffix(".sigs.log")

    def _load_cache(self, resource: MemoryStoreResource) -> _Cache | None:
        try:
            data = marshal.loads(self._cache_file(resource).read_bytes())
            header = (int(data["header"][0]), int(data["header"][1]))
            cache = _Cache(header=header, files=dict(data["files"]), skipped=dict(data["skipped"]))
        except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError):
            return None
        with contextlib.suppress(OSError), open(self._journal(resource), "rb") as journal:
            while True:
                try:
                    record = marshal.load(journal)
                    before = (int(record["before"][0]), int(record["before"][1]))
                    after = (int(record["after"][0]), int(record["after"][1]))
                    changed = dict(record["files"])
                except (EOFError, ValueError, TypeError, KeyError, IndexError):
                    break  # the end, or a record cut short by a crash
                if before != cache.header:
                    continue  # older than the snapshot, or not chaining: stays behind
                for rel, sig in changed.items():
                    cache.skipped.pop(rel, None)
                    if sig is None:
                        cache.files.pop(rel, None)
                    else:
                        cache.files[rel] = tuple(sig)  # type: ignore[assignment]
                cache.header = after
        return cache

    def _save_cache(self, resource: MemoryStoreResource, cache: _Cache) -> None:
        path = self._cache_file(resource)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        partial = path.with_name(f".{path.name}.{os.getpid()}")
        partial.write_bytes(
            marshal.dumps(
                {"header": list(cache.header), "files": cache.files, "skipped": cache.skipped}
            )
        )
        partial.replace(path)
        with contextlib.suppress(FileNotFoundError):
            self._journal(resource).unlink()

    async def _update_cache(
        self,
        resource: MemoryStoreResource,
        before: MountRow,
        after: MountRow,
        changed: dict[str, mf.Sig | None],
        started_ns: int,
    ) -> None:
        """Journal the mount's move from `before` to `after`, with these files changed (None:
        gone; signatures taken after `started_ns`)."""
        if before == after and not changed:
            return
        record = {
            "before": [before.seq, before.syncs],
            "after": [after.seq, after.syncs],
            "files": {
                rel: None if sig is None else _trusted(sig, started_ns)
                for rel, sig in changed.items()
            },
        }

        def append() -> None:
            journal = self._journal(resource)
            journal.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(journal, "ab") as out:
                out.write(marshal.dumps(record))
                size = out.tell()
            if size > JOURNAL_COMPACT_BYTES:
                cache = self._load_cache(resource)
                if cache is not None:
                    self._save_cache(resource, cache)

        await asyncio.to_thread(append)

    # ---- materialise -----------------------------------------------------------------------

    async def _materialise(self, conn: Connection, resource: MemoryStoreResource) -> None:
        """Write every memory of the store into a fresh folder, then record the mount and its
        files at once. A folder left by a materialisation cut short is thrown away first:
        no tool has run on it (the mount row comes last)."""
        store_id = resource.memory_store_id
        # A mount rebuilt keeps counting its write-backs: their number names their versions.
        syncs = 0
        if (old := await memory_mounts.get(conn, self.session_id, store_id)) is not None:
            if self.host_dir(resource).is_dir():
                return
            syncs = old.syncs
            # The folder vanished (an operator cleaned up): rebuilt from the store.
            async with conn.transaction():
                await conn.execute(
                    "DELETE FROM memory_mounts WHERE session_id = $1 AND memory_store_id = $2",
                    self.session_id,
                    store_id,
                )
        folder = self.host_dir(resource)
        WATCHES.drop((self.session_id, store_id))
        await asyncio.to_thread(_fresh_folder, folder)
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
                written = await asyncio.to_thread(_write_batch, folder, batch)
                for path, entry, sig in written:
                    files.append((path, entry))
                    sigs[path[1:]] = sig
                self._heartbeat()
        # No tool changes the folder before it is mounted; from now on the watch sees what
        # does. A file may yet be changed within its timestamps' tick: the newest files'
        # signatures are not trusted (a later whole scan, in another process, reads them).
        watch = WATCHES.begin((self.session_id, store_id), str(folder))
        if watch is not None:
            await asyncio.to_thread(mf.walk_folders, folder, partial(WATCHES.add_dir, watch))
        done = time.time_ns()
        sigs = {rel: _trusted(sig, done) for rel, sig in sigs.items()}
        async with conn.transaction():
            await memory_mounts.create(conn, self.session_id, store_id, seq, files, syncs)
        WATCHES.arm(watch)
        await asyncio.to_thread(self._save_cache, resource, _Cache(header=(seq, syncs), files=sigs))
        log.info("mounted %d memories of %s in session %s", len(files), store_id, self.session_id)

    # ---- pull ------------------------------------------------------------------------------

    async def _pull(self, conn: Connection, resource: MemoryStoreResource) -> None:
        store_id = resource.memory_store_id
        before = await memory_mounts.get(conn, self.session_id, store_id)
        if before is None:
            await self._materialise(conn, resource)
            return
        now, ids, heads = await memory.changed_since(conn, store_id, before.seq)
        if now <= before.seq:
            return
        known = await memory_mounts.entries_of_memories(conn, self.session_id, store_id, ids)
        at_paths = await memory_mounts.entries(
            conn, self.session_id, store_id, [h.path for h in heads.values()]
        )
        folder = self.host_dir(resource)
        started = time.time_ns()
        removed, upserted, changed = await asyncio.to_thread(
            _apply_remote, folder, ids, known, heads, at_paths, self._displaced(resource)
        )
        async with conn.transaction():
            after = await memory_mounts.apply(
                conn, self.session_id, store_id, removed=removed, upserted=upserted, seq=now
            )
        await self._update_cache(resource, before, after, changed, started)

    # ---- write back ------------------------------------------------------------------------

    async def _write_back(
        self,
        conn: Connection,
        resource: MemoryStoreResource,
        rels: list[str] | None,
        *,
        whole: bool = False,
    ) -> list[str]:
        """Save what changed: the named files (`rels`), else what the mount's watch collected,
        else (no watch it can trust, or `whole`) whatever a scan of the whole mount finds."""
        store_id = resource.memory_store_id
        folder = self.host_dir(resource)
        key = (self.session_id, store_id)
        if rels is None and not whole and self._watch:
            taken = WATCHES.take(key, str(folder))
            if taken is not None:
                watched, collected = taken
                try:
                    return await self._write_back_core(conn, resource, None, collected, None)
                except BaseException:
                    WATCHES.fail(watched)
                    raise
        watch = WATCHES.begin(key, str(folder)) if rels is None and self._watch else None
        try:
            notes = await self._write_back_core(conn, resource, rels, None, watch)
        except BaseException:
            if watch is not None:
                WATCHES.fail(watch)
            raise
        WATCHES.arm(watch)
        return notes

    async def _write_back_core(
        self,
        conn: Connection,
        resource: MemoryStoreResource,
        rels: list[str] | None,
        collected: Changes | None,
        watch: Any,
    ) -> list[str]:
        if collected is not None and not collected.size():
            return []  # the watch saw nothing change
        store_id = resource.memory_store_id
        folder = self.host_dir(resource)
        before = await memory_mounts.get(conn, self.session_id, store_id)
        if before is None or not folder.is_dir():
            if watch is not None:
                WATCHES.fail(watch)
            return []
        store = await conn.fetchrow("SELECT archived_at FROM memory_stores WHERE id = $1", store_id)
        notes: list[str] = []
        scan: mf.Scan | None = None
        cache: _Cache | None = None
        started = time.time_ns()
        walked: dict[str, str] = {}  # what walks of new folders passed over (watch mode)
        if collected is not None:
            found = await asyncio.to_thread(self._walk_new, resource, collected)
            if found is None:  # a new folder too big to walk: the whole mount
                return await self._write_back(conn, resource, None, whole=True)
            files, walked = found
            # Every file the mount had under a folder gone, or made or moved in (its files may
            # have been removed before it was watched), is looked at too.
            folders = {"/" + g for g in collected.gone} | {f"/{w}/" for w in collected.walk}
            gone = await memory_mounts.entries_under(
                conn, self.session_id, store_id, sorted(folders)
            )
            candidates = files | {path[1:] for path in gone}
            base = await memory_mounts.entries(
                conn,
                self.session_id,
                store_id,
                ["/" + rel for rel in candidates if not mf.name_problem(rel)],
            )
            for rel, reason in walked.items():
                notes.append(self._skip_note(resource, rel, reason))
        elif rels is None:
            scan, cache = await asyncio.to_thread(self._scan, resource, watch)
            if not scan.complete and watch is not None:
                WATCHES.fail(watch)  # folders not listed are not watched
            if not scan.complete and not any(r.endswith("/") for r in scan.skipped):
                notes.append(
                    f"{resource.mount_path}/ holds more than {self._max_entries():,} files and "
                    "folders; only part of it was looked at, and no file was taken as deleted"
                )
            valid = cache is not None and cache.header == (before.seq, before.syncs)
            if valid and cache is not None:
                candidates = {rel for rel, sig in scan.files.items() if cache.files.get(rel) != sig}
                if scan.complete:
                    candidates |= {rel for rel in cache.files if rel not in scan.files}
                base = await memory_mounts.entries(
                    conn,
                    self.session_id,
                    store_id,
                    ["/" + rel for rel in candidates if not mf.name_problem(rel)],
                )
            else:
                base = await memory_mounts.entries(conn, self.session_id, store_id)
                candidates = set(scan.files) | (
                    {path[1:] for path in base} if scan.complete else set()
                )
            for rel, reason in scan.skipped.items():
                if not (valid and cache is not None and cache.skipped.get(rel) == reason):
                    notes.append(self._skip_note(resource, rel, reason))
        else:
            candidates = set(rels)
            base = await memory_mounts.entries(
                conn,
                self.session_id,
                store_id,
                ["/" + rel for rel in candidates if not mf.name_problem(rel)],
            )
        self._heartbeat()
        # A name that is not valid UTF-8 (or otherwise no memory path) never reaches the
        # database: it is noted, and its file left as it is.
        unnamed = {rel for rel in candidates if mf.name_problem(rel)}
        for rel in sorted(unnamed):
            reason = f"{mf.name_problem(rel)}, so it cannot be a memory path"
            if not (cache is not None and cache.skipped.get(rel) == reason):
                notes.append(self._skip_note(resource, rel, reason))
        candidates -= unnamed
        reads = await asyncio.to_thread(_read_all, folder, sorted(candidates))
        if rels is not None and any(isinstance(r, str) for r in reads.values()):
            # A link on the way (the file tool followed it inside the mount): look at it all.
            return await self._write_back(conn, resource, None)
        if scan is None and any(isinstance(r, mf.Read) and r.links > 1 for r in reads.values()):
            # A file with another name may have been written through that one, unseen.
            return await self._write_back(conn, resource, None, whole=True)

        skipped: dict[str, str] = dict(scan.skipped) if scan else dict(walked)
        for rel in unnamed:
            skipped[rel] = f"{mf.name_problem(rel)}, so it cannot be a memory path"
        changes: list[_Change] = []
        for rel in sorted(candidates):
            path = "/" + rel
            got = reads[rel]
            entry = base.get(path)
            if isinstance(got, str):
                skipped[rel] = got
                if not (cache is not None and cache.skipped.get(rel) == got):
                    notes.append(self._skip_note(resource, rel, got))
                continue
            if got is None:
                if entry is not None:
                    changes.append(_Change("delete", path, base=entry))
                continue
            problem = mf.name_problem(path) or path_problem(path)
            if problem:
                reason = f"{path!r} is not a valid memory path: it {problem}"
                skipped[rel] = reason
                if not (cache is not None and cache.skipped.get(rel) == reason):
                    notes.append(self._skip_note(resource, rel, reason))
                continue
            if entry is not None and got.sha256 == entry.content_sha256:
                continue
            changes.append(_Change("update" if entry else "create", path, base=entry, read=got))
        changes = _pair_renames(changes)

        changed: dict[str, mf.Sig | None] = {}
        after = before
        if changes and resource.read_only:
            after, undone = await self._undo(conn, resource, changes)
            changed.update(undone)
            notes += [
                f"{self._virtual(resource, c.path)}: {resource.mount_path} is read-only; the "
                "change was undone"
                for c in changes
            ]
        elif changes and store is None:
            notes += [
                f"{self._virtual(resource, c.path)}: not saved: the memory store "
                f"{store_id} no longer exists"
                for c in changes
            ]
        elif changes and store["archived_at"] is not None:
            notes += [
                f"{self._virtual(resource, c.path)}: not saved: the memory store "
                f"{store_id} is archived (read-only)"
                for c in changes
            ]
        elif changes:
            after, more_notes, resolved = await self._push(conn, resource, changes)
            notes += more_notes
            changed.update(resolved)

        # The cache: every file as scanned (or as the sync left it), trusted unless racy.
        if scan is not None:
            files = {rel: _trusted(sig, started) for rel, sig in scan.files.items()}
            for rel, sig in changed.items():
                if sig is None:
                    files.pop(rel, None)
                else:
                    files[rel] = _trusted(sig, started)
            if not scan.complete and cache is not None:
                files = {**cache.files, **files}
            fresh = _Cache(header=(after.seq, after.syncs), files=files, skipped=skipped)
            if fresh != cache:
                await asyncio.to_thread(self._save_cache, resource, fresh)
        else:
            for rel, got in reads.items():
                if isinstance(got, mf.Read) and rel not in changed:
                    changed[rel] = got.sig
                elif got is None and rel not in changed:
                    changed[rel] = None
            await self._update_cache(resource, before, after, changed, started)
        return notes

    def _max_entries(self) -> int:
        return max(4 * self._settings.memory_max_memories, 20_000)

    def _scan(self, resource: MemoryStoreResource, watch: Any) -> tuple[mf.Scan, _Cache | None]:
        def on_dir(fd: int, rel: str) -> None:
            WATCHES.add_dir(watch, fd, rel)

        scan = mf.walk(
            self.host_dir(resource),
            self._max_entries(),
            on_dir=on_dir if watch is not None else None,
        )
        return scan, self._load_cache(resource)

    def _walk_new(
        self, resource: MemoryStoreResource, collected: Changes
    ) -> tuple[set[str], dict[str, str]] | None:
        """The files a watch collected, with every file under the folders made or moved in
        (walked, and watched, now); None when one of those holds too much to walk."""
        files = set(collected.files)
        skipped: dict[str, str] = {}
        watch = WATCHES.current((self.session_id, resource.memory_store_id))
        tops = sorted(collected.walk)
        tops = [t for t in tops if not any(t.startswith(o + "/") for o in tops)]
        budget = self._max_entries()
        for top in tops:

            def on_dir(fd: int, rel: str) -> None:
                WATCHES.add_dir(watch, fd, rel)

            scan = mf.walk(self.host_dir(resource), budget, under=top, on_dir=on_dir)
            if not scan.complete:
                return None
            budget -= len(scan.files) + len(scan.skipped)
            files |= set(scan.files)
            skipped.update(scan.skipped)
        return files, skipped

    def _skip_note(self, resource: MemoryStoreResource, rel: str, reason: str) -> str:
        return f"{resource.mount_path}/{rel}: not saved to memory: {reason}"

    async def _push(
        self, conn: Connection, resource: MemoryStoreResource, changes: list[_Change]
    ) -> tuple[MountRow, list[str], dict[str, mf.Sig | None]]:
        """Write the changes as versions, with their bases as preconditions; settle those that
        lost to a change made elsewhere by taking the store's version."""
        store_id = resource.memory_store_id
        notes: list[str] = []
        conflicts: list[_Conflict] = []
        after = await memory_mounts.get(conn, self.session_id, store_id)
        assert after is not None
        for start in range(0, len(changes), CHUNK):
            chunk = changes[start : start + CHUNK]
            removed: list[str] = []
            upserted: list[tuple[str, Entry]] = []
            async with conn.transaction():
                number = after.syncs + 1
                for change in chunk:
                    outcome = await self._apply(conn, store_id, number, change)
                    if isinstance(outcome, _Conflict):
                        conflicts.append(outcome)
                    elif isinstance(outcome, str):
                        notes.append(f"{self._virtual(resource, change.path)}: {outcome}")
                    else:
                        removed += outcome[0]
                        upserted += outcome[1]
                after = await memory_mounts.apply(
                    conn,
                    self.session_id,
                    store_id,
                    removed=removed,
                    upserted=upserted,
                    count_sync=True,
                )
            self._heartbeat()
        resolved: dict[str, mf.Sig | None] = {}
        if conflicts:
            after, resolved = await self._settle(conn, resource, conflicts)
            for conflict in conflicts:
                notes.append(
                    f"{self._virtual(resource, conflict.path)}: your change was NOT saved: this "
                    "memory was changed elsewhere since this session last read it. The file now "
                    "holds the store's current version (or is gone, if it was deleted there): "
                    "read it again, then redo your change."
                )
        return after, notes, resolved

    async def _apply(
        self, conn: Connection, store_id: str, number: int, change: _Change
    ) -> tuple[list[str], list[tuple[str, Entry]]] | _Conflict | str:
        """One change in a savepoint: (paths removed, entries set) when written, a conflict
        when the store's version must win, or why it was not saved."""
        version_id, memory_id = memory.sync_ids(self.session_id, store_id, number, change.path)
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
                        self._actor,
                        max_memories=self._settings.memory_max_memories,
                        version_id=version_id,
                        memory_id=memory_id,
                    )
                elif change.kind == "delete":
                    assert base is not None
                    written = await memory.delete_memory(
                        conn,
                        store_id,
                        base.memory_id,
                        self._actor,
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
                        self._actor,
                        content=read.content,
                        path=change.path if change.kind == "rename" else None,
                        expected_sha256=base.content_sha256,
                        version_id=version_id,
                    )
        except MemoryPathConflictError as error:
            if change.kind == "rename":
                return _Conflict(
                    path=change.old_path or change.path,
                    memory_id=base.memory_id if base else None,
                    also_remove=change.path,
                )
            return _Conflict(path=change.path, memory_id=error.conflicting_memory_id)
        except (MemoryPreconditionFailedError, NotFoundError):
            if change.kind == "rename":
                return _Conflict(
                    path=change.old_path or change.path,
                    memory_id=base.memory_id if base else None,
                    also_remove=change.path,
                )
            return _Conflict(path=change.path, memory_id=base.memory_id if base else None)
        except InvalidRequestError as error:
            return f"not saved to memory: {error.message}"
        got = written.memory
        if got is None:  # made by an earlier try and deleted since: nothing to keep
            return ([change.old_path] if change.old_path else []), []
        entry = Entry(got.id, got.content_sha256, got.memory_version_id)
        removed = [change.old_path] if change.kind == "rename" and change.old_path else []
        return removed, [(got.path, entry)]

    async def _settle(
        self, conn: Connection, resource: MemoryStoreResource, conflicts: list[_Conflict]
    ) -> tuple[MountRow, dict[str, mf.Sig | None]]:
        """Put the store's versions in the files the agent changed in vain: the file first,
        then its base, so a crash in between leaves a file whose content the store already
        holds (the next write-back sees it as unchanged)."""
        store_id = resource.memory_store_id
        heads = await memory.heads(conn, store_id, [c.memory_id for c in conflicts if c.memory_id])
        known = await memory_mounts.entries(
            conn,
            self.session_id,
            store_id,
            [h.path for h in heads.values()] + [c.also_remove for c in conflicts if c.also_remove],
        )
        folder = self.host_dir(resource)
        displaced = self._displaced(resource)

        def settle() -> tuple[list[str], list[tuple[str, Entry]], dict[str, mf.Sig | None]]:
            removed: list[str] = []
            upserted: list[tuple[str, Entry]] = []
            changed: dict[str, mf.Sig | None] = {}
            for conflict in conflicts:
                for extra in filter(None, (conflict.also_remove,)):
                    if extra not in known:
                        _remove(folder, extra, changed, displaced)
                head = heads.get(conflict.memory_id) if conflict.memory_id else None
                if head is None or head.path != conflict.path:
                    _remove(folder, conflict.path, changed, displaced)
                    removed.append(conflict.path)
                if head is not None:
                    holder = known.get(head.path)
                    if holder is None or holder.memory_id == head.memory_id:
                        try:
                            changed[head.path[1:]] = mf.write_file(
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

        removed, upserted, changed = await asyncio.to_thread(settle)
        async with conn.transaction():
            after = await memory_mounts.apply(
                conn,
                self.session_id,
                store_id,
                removed=[p for p in removed if p not in {u[0] for u in upserted}],
                upserted=upserted,
                count_sync=True,
            )
        return after, changed

    async def _undo(
        self, conn: Connection, resource: MemoryStoreResource, changes: list[_Change]
    ) -> tuple[MountRow, dict[str, mf.Sig | None]]:
        """A read-only mount changed anyway: put each file back as the store has it."""
        conflicts = []
        for change in changes:
            if change.kind == "create":
                conflicts.append(_Conflict(path=change.path, memory_id=None))
            else:
                memory_id = change.base.memory_id if change.base else None
                conflicts.append(
                    _Conflict(
                        path=change.old_path or change.path,
                        memory_id=memory_id,
                        also_remove=change.path if change.kind == "rename" else None,
                    )
                )
        return await self._settle(conn, resource, conflicts)


def _trusted(sig: mf.Sig, scan_started_ns: int) -> mf.Sig:
    """The signature to remember: one changed too close to the scan is remembered as never
    matching, so the file is read again next time (its ctime tick may not be over)."""
    if sig[3] >= scan_started_ns - RACY_NS:
        return (sig[0], sig[1], sig[2], -1)
    return sig


def _fresh_folder(folder: Path) -> None:
    if folder.exists() or folder.is_symlink():
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
        else:
            folder.unlink()
    folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)


# Creating files is the cost of a mount (each is a few metadata writes to the disk's journal),
# and they go faster side by side: a batch is written by several threads, one per top folder
# (so where /a and /a/b both exist, which one becomes a file does not depend on timing).
_WRITERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="memory-mount")


def _write_batch(folder: Path, rows: Iterable[Any]) -> list[tuple[str, Entry, mf.Sig]]:
    groups: dict[str, list[Any]] = {}
    for row in rows:
        groups.setdefault(row["path"].split("/", 2)[1], []).append(row)
    done = _WRITERS.map(lambda group: _write_rows(folder, group), groups.values())
    return [item for written in done for item in written]


def _write_rows(folder: Path, rows: Iterable[Any]) -> list[tuple[str, Entry, mf.Sig]]:
    written = []
    for row in rows:
        path = row["path"]
        try:
            sig = mf.write_file(folder, path[1:], row["content"])
        except OSError as error:
            # A memory at /a beside one at /a/b, or a name longer than the filesystem allows:
            # not in the folder (nor in the mount's files, so never taken as deleted).
            log.warning("memory mount: %s cannot be a file here: %s", path, error)
            continue
        written.append(
            (path, Entry(row["id"], row["content_sha256"], row["memory_version_id"]), sig)
        )
    return written


def _read_all(folder: Path, rels: list[str]) -> dict[str, mf.Read | str | None]:
    """Each file's text, None when absent, or why it cannot be a memory."""
    reads: dict[str, mf.Read | str | None] = {}
    for rel in rels:
        try:
            reads[rel] = mf.read_file(folder, rel)
        except mf.Skip as skip:
            reads[rel] = skip.reason
        except OSError as error:
            reads[rel] = f"it cannot be read ({error.strerror or error})"
    return reads


def _local_sha(folder: Path, rel: str) -> str | bool | None:
    """The file's digest, None when absent, False when it is not a readable memory file."""
    try:
        got = mf.read_file(folder, rel)
    except (mf.Skip, OSError):
        return False
    return None if got is None else got.sha256


def _remove(
    folder: Path,
    path: str,
    changed: dict[str, mf.Sig | None],
    displaced: Path,
    expected: str | None = None,
) -> None:
    try:
        mf.remove_file(folder, path[1:], displaced, expected)
    except OSError as error:
        log.warning("memory mount: cannot remove %s: %s", path, error)
        return
    changed[path[1:]] = None


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
        local = _local_sha(folder, old_path[1:])
        if local is None or local == entry.content_sha256:
            if local is not None:
                _remove(folder, old_path, changed, displaced, entry.content_sha256)
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
        local = _local_sha(folder, head.path[1:])
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
            sig = mf.replace_file(folder, head.path[1:], head.content or "", expected, displaced)
        except OSError as error:
            log.warning("memory mount: %s cannot be a file here: %s", head.path, error)
            continue
        if sig is None:
            continue  # changed meanwhile: the write-back settles it
        changed[head.path[1:]] = sig
        upserted.append((head.path, entry_for))
    return removed, upserted, changed


def _pair_renames(changes: list[_Change]) -> list[_Change]:
    """A file removed and another added with the same content in one write-back is a rename
    (`mv`): one version that keeps the memory's id and history, not a delete and a create."""
    deletes: dict[str, list[_Change]] = {}
    for change in changes:
        if change.kind == "delete" and change.base is not None:
            deletes.setdefault(change.base.content_sha256, []).append(change)
    if not deletes:
        return changes
    paired: set[int] = set()
    out: list[_Change] = []
    for change in changes:
        if change.kind == "create" and change.read is not None:
            candidates = deletes.get(change.read.sha256) or []
            if candidates:
                gone = candidates.pop(0)
                paired.add(id(gone))
                out.append(
                    _Change(
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
