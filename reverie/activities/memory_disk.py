"""The mount's files on disk, for the sync's steps (run in threads): a fresh folder, memories
written into it side by side, files read as memories, removed or checked by digest. Never
follows anything out of the mount (`memory_files` and `memory_file_writes` do the confined
I/O)."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from reverie import memory_files as mf
from reverie.memory_file_writes import remove_file, write_file
from reverie.store.memory_mounts import Entry

log = logging.getLogger(__name__)


def fresh_folder(folder: Path) -> None:
    """An empty mount folder where whatever stood at its place is gone."""
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


def write_batch(folder: Path, rows: Iterable[Any]) -> list[tuple[str, Entry, mf.Sig]]:
    """Memory rows (id, path, content, digest, version) written as files: those written."""
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
            sig = write_file(folder, path[1:], row["content"])
        except OSError as error:
            # A memory at /a beside one at /a/b, or a name longer than the filesystem allows:
            # not in the folder (nor in the mount's files, so never taken as deleted).
            log.warning("memory mount: %s cannot be a file here: %s", path, error)
            continue
        written.append(
            (path, Entry(row["id"], row["content_sha256"], row["memory_version_id"]), sig)
        )
    return written


def read_all(folder: Path, rels: list[str]) -> dict[str, mf.Read | str | None]:
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


def local_sha(folder: Path, rel: str) -> str | bool | None:
    """The file's digest, None when absent, False when it is not a readable memory file."""
    try:
        got = mf.read_file(folder, rel)
    except (mf.Skip, OSError):
        return False
    return None if got is None else got.sha256


def remove(
    folder: Path,
    path: str,
    changed: dict[str, mf.Sig | None],
    displaced: Path,
    expected: str | None = None,
) -> None:
    """Take the memory path's file out of the mount (kept in `displaced`, with the digest
    `expected` it was checked to have), noted in `changed`. A failure is logged, not raised."""
    try:
        remove_file(folder, path[1:], displaced, expected)
    except OSError as error:
        log.warning("memory mount: cannot remove %s: %s", path, error)
        return
    changed[path[1:]] = None
