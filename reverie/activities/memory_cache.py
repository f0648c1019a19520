"""The stat signatures of a mount's files as of its last sync, so that a write-back reads and
hashes only the files whose signature changed.

A snapshot (`<store>.sigs`, rewritten by whole-mount scans and materialisations) and a journal
of the changes since (`<store>.sigs.log`, appended to by pulls and one-file write-backs: they
cost what they change, not the mount's size). Each journal record carries the mount state it
starts from; loading replays records while they chain, so a record written after a lost one (a
crash between a commit and its record) leaves the cache behind the mount's row, hence stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import marshal
import os
from dataclasses import dataclass, field
from pathlib import Path

from reverie import memory_files as mf
from reverie.store.memory_mounts import MountRow

# A file changed this close to a scan may change again within the same ctime tick: its
# signature is not trusted (it is looked at again next time).
RACY_NS = 200_000_000
# The signature journal is folded into its snapshot once it grows past this.
JOURNAL_COMPACT_BYTES = 1 << 20


@dataclass
class SigCache:
    """Stat signatures of a mount's files as of a sync, valid only while the mount's row in
    PostgreSQL still has the (seq, syncs) it was written with."""

    header: tuple[int, int]
    files: dict[str, mf.Sig] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def trusted(sig: mf.Sig, scan_started_ns: int) -> mf.Sig:
    """The signature to remember: one changed too close to the scan is remembered as never
    matching, so the file is read again next time (its ctime tick may not be over)."""
    if sig[3] >= scan_started_ns - RACY_NS:
        return (sig[0], sig[1], sig[2], -1)
    return sig


def journal_of(snapshot: Path) -> Path:
    return snapshot.with_suffix(".sigs.log")


def load(snapshot: Path) -> SigCache | None:
    """The snapshot with the journal's chaining records applied; None without a snapshot."""
    try:
        data = marshal.loads(snapshot.read_bytes())
        header = (int(data["header"][0]), int(data["header"][1]))
        cache = SigCache(header=header, files=dict(data["files"]), skipped=dict(data["skipped"]))
    except (OSError, EOFError, ValueError, TypeError, KeyError, IndexError):
        return None
    with contextlib.suppress(OSError), open(journal_of(snapshot), "rb") as journal:
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


def save(snapshot: Path, cache: SigCache) -> None:
    """A new snapshot, written whole then renamed in; the journal it folds in goes."""
    snapshot.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = snapshot.with_name(f".{snapshot.name}.{os.getpid()}")
    partial.write_bytes(
        marshal.dumps(
            {"header": list(cache.header), "files": cache.files, "skipped": cache.skipped}
        )
    )
    partial.replace(snapshot)
    with contextlib.suppress(FileNotFoundError):
        journal_of(snapshot).unlink()


async def journal(
    snapshot: Path,
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
            rel: None if sig is None else trusted(sig, started_ns) for rel, sig in changed.items()
        },
    }

    def append() -> None:
        path = journal_of(snapshot)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(path, "ab") as out:
            out.write(marshal.dumps(record))
            size = out.tell()
        if size > JOURNAL_COMPACT_BYTES:
            cache = load(snapshot)
            if cache is not None:
                save(snapshot, cache)

    await asyncio.to_thread(append)
