"""What a tool run changed in a mount, found and saved: after `write`/`edit` the one file, after
`bash` what the mount's watch saw change, and where the watch cannot vouch a walk of the whole
mount compared with the signature cache, so that a write-back costs what changed. Each change
is saved (`memory_push`), undone (a read-only mount) or refused with a note for the agent (the
store gone or archived); untrusted content (links, special, huge or binary files, bad names,
too many files) is skipped with a note, and nothing is followed out of the mount."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from reverie import memory_files as mf
from reverie.activities import memory_cache
from reverie.activities.memory_cache import SigCache, trusted
from reverie.activities.memory_changes import Change, pair_renames
from reverie.activities.memory_conflicts import undo
from reverie.activities.memory_context import MountContext
from reverie.activities.memory_disk import read_all
from reverie.activities.memory_push import push
from reverie.activities.memory_watch import WATCHES, Changes, Watch
from reverie.models.memory import path_problem
from reverie.store import memory_mounts
from reverie.store.memory_mounts import Entry, MountRow
from reverie.store.pool import Connection


@dataclass
class _Look:
    """The files a write-back looks at, with their bases, and what it learnt finding them."""

    candidates: set[str]
    base: dict[str, Entry]
    notes: list[str] = field(default_factory=list)
    scan: mf.Scan | None = None  # a walk of the whole mount, when one was made
    cache: SigCache | None = None  # the signature cache, as the walk found it
    walked: dict[str, str] = field(default_factory=dict)  # what walks of new folders passed over


async def write_back(
    conn: Connection, mount: MountContext, rels: list[str] | None, *, whole: bool = False
) -> list[str]:
    """Save what changed: the named files (`rels`), else what the mount's watch collected,
    else (no watch it can trust, or `whole`) whatever a scan of the whole mount finds.
    Answers the notes for the agent."""
    folder = mount.folder
    if rels is None and not whole and mount.watch:
        taken = WATCHES.take(mount.key, str(folder))
        if taken is not None:
            watched, collected = taken
            try:
                return await _write_back(conn, mount, None, collected, None)
            except BaseException:
                WATCHES.fail(watched)
                raise
    watch = WATCHES.begin(mount.key, str(folder)) if rels is None and mount.watch else None
    try:
        notes = await _write_back(conn, mount, rels, None, watch)
    except BaseException:
        if watch is not None:
            WATCHES.fail(watch)
        raise
    WATCHES.arm(watch)
    return notes


async def _write_back(
    conn: Connection,
    mount: MountContext,
    rels: list[str] | None,
    collected: Changes | None,
    watch: Watch | None,
) -> list[str]:
    if collected is not None and not collected.size():
        return []  # the watch saw nothing change
    store_id = mount.store_id
    folder = mount.folder
    before = await memory_mounts.get(conn, mount.session_id, store_id)
    if before is None or not folder.is_dir():
        if watch is not None:
            WATCHES.fail(watch)
        return []
    store = await conn.fetchrow("SELECT archived_at FROM memory_stores WHERE id = $1", store_id)
    started = time.time_ns()
    if collected is not None:
        look = await _look_at_collected(conn, mount, collected)
        if look is None:  # a new folder too big to walk: the whole mount
            return await write_back(conn, mount, None, whole=True)
    elif rels is None:
        look = await _look_at_whole(conn, mount, before, watch)
    else:
        look = _Look(candidates=set(rels), base=await _bases(conn, mount, set(rels)))
    mount.heartbeat()
    notes, scan, cache = look.notes, look.scan, look.cache
    # A name that is not valid UTF-8 (or otherwise no memory path) never reaches the
    # database: it is noted, and its file left as it is.
    unnamed = {rel for rel in look.candidates if mf.name_problem(rel)}
    for rel in sorted(unnamed):
        reason = f"{mf.name_problem(rel)}, so it cannot be a memory path"
        if not (cache is not None and cache.skipped.get(rel) == reason):
            notes.append(mount.skip_note(rel, reason))
    look.candidates -= unnamed
    reads = await asyncio.to_thread(read_all, folder, sorted(look.candidates))
    if rels is not None and any(isinstance(r, str) for r in reads.values()):
        # A link on the way (the file tool followed it inside the mount): look at it all.
        return await write_back(conn, mount, None)
    if scan is None and any(isinstance(r, mf.Read) and r.links > 1 for r in reads.values()):
        # A file with another name may have been written through that one, unseen.
        return await write_back(conn, mount, None, whole=True)

    skipped: dict[str, str] = dict(scan.skipped) if scan else dict(look.walked)
    for rel in unnamed:
        skipped[rel] = f"{mf.name_problem(rel)}, so it cannot be a memory path"
    changes = pair_renames(_changes(mount, look, reads, skipped))
    after, changed = await _save(conn, mount, changes, store, before, notes)
    await _remember(mount, look, reads, skipped, before, after, changed, started)
    return notes


async def _bases(conn: Connection, mount: MountContext, rels: set[str]) -> dict[str, Entry]:
    """The bases of these files (those whose names can be memory paths)."""
    return await memory_mounts.entries(
        conn,
        mount.session_id,
        mount.store_id,
        ["/" + rel for rel in rels if not mf.name_problem(rel)],
    )


async def _look_at_collected(
    conn: Connection, mount: MountContext, collected: Changes
) -> _Look | None:
    """What the watch collected, with the new folders walked; None when one is too big."""
    found = await asyncio.to_thread(_walk_new, mount, collected)
    if found is None:
        return None
    files, walked = found
    # Every file the mount had under a folder gone, or made or moved in (its files may
    # have been removed before it was watched), is looked at too.
    folders = {"/" + g for g in collected.gone} | {f"/{w}/" for w in collected.walk}
    gone = await memory_mounts.entries_under(
        conn, mount.session_id, mount.store_id, sorted(folders)
    )
    candidates = files | {path[1:] for path in gone}
    look = _Look(candidates=candidates, base=await _bases(conn, mount, candidates), walked=walked)
    for rel, reason in walked.items():
        look.notes.append(mount.skip_note(rel, reason))
    return look


async def _look_at_whole(
    conn: Connection, mount: MountContext, before: MountRow, watch: Watch | None
) -> _Look:
    """A walk of the whole mount, compared with the signature cache where that is valid."""
    notes: list[str] = []
    scan, cache = await asyncio.to_thread(_scan, mount, watch)
    if not scan.complete and watch is not None:
        WATCHES.fail(watch)  # folders not listed are not watched
    if not scan.complete and not any(r.endswith("/") for r in scan.skipped):
        notes.append(
            f"{mount.resource.mount_path}/ holds more than {mount.max_entries:,} files and "
            "folders; only part of it was looked at, and no file was taken as deleted"
        )
    valid = cache is not None and cache.header == (before.seq, before.syncs)
    if valid and cache is not None:
        candidates = {rel for rel, sig in scan.files.items() if cache.files.get(rel) != sig}
        if scan.complete:
            candidates |= {rel for rel in cache.files if rel not in scan.files}
        base = await _bases(conn, mount, candidates)
    else:
        base = await memory_mounts.entries(conn, mount.session_id, mount.store_id)
        candidates = set(scan.files) | ({path[1:] for path in base} if scan.complete else set())
    for rel, reason in scan.skipped.items():
        if not (valid and cache is not None and cache.skipped.get(rel) == reason):
            notes.append(mount.skip_note(rel, reason))
    return _Look(candidates=candidates, base=base, notes=notes, scan=scan, cache=cache)


def _changes(
    mount: MountContext,
    look: _Look,
    reads: dict[str, mf.Read | str | None],
    skipped: dict[str, str],
) -> list[Change]:
    """Each file read, as a change to save (or skipped, in `skipped`, with a note)."""
    cache = look.cache
    changes: list[Change] = []
    for rel in sorted(look.candidates):
        path = "/" + rel
        got = reads[rel]
        entry = look.base.get(path)
        if isinstance(got, str):
            skipped[rel] = got
            if not (cache is not None and cache.skipped.get(rel) == got):
                look.notes.append(mount.skip_note(rel, got))
            continue
        if got is None:
            if entry is not None:
                changes.append(Change("delete", path, base=entry))
            continue
        problem = mf.name_problem(path) or path_problem(path)
        if problem:
            reason = f"{path!r} is not a valid memory path: it {problem}"
            skipped[rel] = reason
            if not (cache is not None and cache.skipped.get(rel) == reason):
                look.notes.append(mount.skip_note(rel, reason))
            continue
        if entry is not None and got.sha256 == entry.content_sha256:
            continue
        changes.append(Change("update" if entry else "create", path, base=entry, read=got))
    return changes


async def _save(
    conn: Connection,
    mount: MountContext,
    changes: list[Change],
    store: Any,
    before: MountRow,
    notes: list[str],
) -> tuple[MountRow, dict[str, mf.Sig | None]]:
    """The changes saved, undone (a read-only mount) or refused (the store gone or archived),
    each told in `notes`; answers the mount's row after, and the files the sync rewrote."""
    changed: dict[str, mf.Sig | None] = {}
    after = before
    store_id = mount.store_id
    if changes and mount.resource.read_only:
        after, undone = await undo(conn, mount, changes)
        changed.update(undone)
        notes += [
            f"{mount.virtual(c.path)}: {mount.resource.mount_path} is read-only; the "
            "change was undone"
            for c in changes
        ]
    elif changes and store is None:
        notes += [
            f"{mount.virtual(c.path)}: not saved: the memory store {store_id} no longer exists"
            for c in changes
        ]
    elif changes and store["archived_at"] is not None:
        notes += [
            f"{mount.virtual(c.path)}: not saved: the memory store "
            f"{store_id} is archived (read-only)"
            for c in changes
        ]
    elif changes:
        after, more_notes, resolved = await push(conn, mount, changes)
        notes += more_notes
        changed.update(resolved)
    return after, changed


async def _remember(
    mount: MountContext,
    look: _Look,
    reads: dict[str, mf.Read | str | None],
    skipped: dict[str, str],
    before: MountRow,
    after: MountRow,
    changed: dict[str, mf.Sig | None],
    started: int,
) -> None:
    """The cache: every file as scanned (or as the sync left it), trusted unless racy."""
    scan, cache = look.scan, look.cache
    if scan is not None:
        files = {rel: trusted(sig, started) for rel, sig in scan.files.items()}
        for rel, sig in changed.items():
            if sig is None:
                files.pop(rel, None)
            else:
                files[rel] = trusted(sig, started)
        if not scan.complete and cache is not None:
            files = {**cache.files, **files}
        fresh = SigCache(header=(after.seq, after.syncs), files=files, skipped=skipped)
        if fresh != cache:
            await asyncio.to_thread(memory_cache.save, mount.sigs, fresh)
    else:
        for rel, got in reads.items():
            if isinstance(got, mf.Read) and rel not in changed:
                changed[rel] = got.sig
            elif got is None and rel not in changed:
                changed[rel] = None
        await memory_cache.journal(mount.sigs, before, after, changed, started)


def _scan(mount: MountContext, watch: Watch | None) -> tuple[mf.Scan, SigCache | None]:
    """The whole mount walked (each folder watched before it is listed), and the cache."""

    def on_dir(fd: int, rel: str) -> None:
        WATCHES.add_dir(watch, fd, rel)

    scan = mf.walk(mount.folder, mount.max_entries, on_dir=on_dir if watch is not None else None)
    return scan, memory_cache.load(mount.sigs)


def _walk_new(mount: MountContext, collected: Changes) -> tuple[set[str], dict[str, str]] | None:
    """The files a watch collected, with every file under the folders made or moved in
    (walked, and watched, now); None when one of those holds too much to walk."""
    files = set(collected.files)
    skipped: dict[str, str] = {}
    watch = WATCHES.current(mount.key)
    tops = sorted(collected.walk)
    tops = [t for t in tops if not any(t.startswith(o + "/") for o in tops)]
    budget = mount.max_entries
    for top in tops:

        def on_dir(fd: int, rel: str) -> None:
            WATCHES.add_dir(watch, fd, rel)

        scan = mf.walk(mount.folder, budget, under=top, on_dir=on_dir)
        if not scan.complete:
            return None
        budget -= len(scan.files) + len(scan.skipped)
        files |= set(scan.files)
        skipped.update(scan.skipped)
    return files, skipped
