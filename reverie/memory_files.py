"""The files of a memory mount, handled as untrusted: the agent (and its bash) may have put
anything there — links, FIFOs, devices, huge or binary files, names that are not memory paths,
deep trees, a million entries. Everything here goes from a descriptor of the mount's root, one
component at a time with O_NOFOLLOW, so no link is ever followed (in or out) and nothing blocks;
only regular files count. Blocking: call these in a thread. This module finds and reads
them; `memory_file_writes` changes them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from reverie.models.memory import MAX_CONTENT_BYTES, MAX_PATH_SEGMENTS

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
# Files being written by a sync are first made under this name, then renamed into place.
TEMP_PREFIX = ".reverie-sync-"
# Under the workspace root, beside the sessions' folders (a session id never starts with `.`):
# `<root>/.memory/<session>/mounts/<slug>` (bound into the sandbox) and `.../state` (never).
MEMORY_DIR = ".memory"


def session_folder(workspaces: Path, session_id: str) -> Path:
    """Where a session's memory mounts and their sync state live on the worker's host."""
    if not session_id or session_id.startswith(".") or "/" in session_id:
        raise ValueError(f"not a session id: {session_id!r}")
    return workspaces / MEMORY_DIR / session_id


def remove_session_folder(workspaces: Path, session_id: str) -> None:
    """Remove a session's memory mounts once it can run no more tools (archived or deleted):
    every change was written back after its tool run. Missing is fine; links inside are
    removed, never followed (shutil.rmtree works from descriptors)."""
    shutil.rmtree(session_folder(workspaces, session_id), ignore_errors=True)


# (inode, size, mtime, ctime): a file whose signature is unchanged since a sync recorded it
# was not written since (the kernel sets ctime on every change; nobody can set it back).
Sig = tuple[int, int, int, int]


class Skip(Exception):
    """A file the sync cannot save as a memory; `reason` is shown to the agent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sig_of(info: os.stat_result) -> Sig:
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link (memory holds regular text files only)"
    if stat.S_ISFIFO(mode):
        return "a FIFO, not a regular file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a regular file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a regular file"
    return "not a regular file"


def name_problem(name: str) -> str | None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "its name is not valid UTF-8"
    return None


@dataclass
class Scan:
    """A walk of a mount: its regular files by path relative to the root, with signatures, and
    what was passed over (with why). `complete` is False when the walk did not see everything
    (too many entries, a folder it could not read): files it did not reach must not be taken
    as deleted."""

    files: dict[str, Sig] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    complete: bool = True


def walk(
    root: Path,
    max_entries: int,
    *,
    under: str = "",
    on_dir: Callable[[int, str], None] | None = None,
) -> Scan:
    """Every regular file below `root` (or below its folder `under`, reached without following
    a link), never following a link; at most `max_entries` entries are looked at. `on_dir`
    is called with each folder's descriptor and relative path ("" or ending in "/") before
    the folder is listed (a watch set there then sees whatever changes after the listing)."""
    scan = Scan()
    seen = 0
    if under:
        try:
            with parent_folder(root, under + "/x") as (fd, _):
                top = os.dup(fd)
        except (FileNotFoundError, NotADirectoryError):
            return scan  # gone meanwhile: nothing there
        except OSError as error:
            if error.errno != errno.ELOOP:
                raise
            scan.skipped[under + "/"] = "a symbolic link is on its path"
            return scan
        prefix0 = under + "/"
    else:
        top = os.open(root, DIR_FLAGS)
        prefix0 = ""
    stack: list[tuple[int, str, int]] = [(top, prefix0, prefix0.count("/"))]
    try:
        while stack:
            fd, prefix, depth = stack.pop()
            try:
                if on_dir is not None:
                    on_dir(fd, prefix)
                with os.scandir(fd) as entries:
                    for entry in entries:
                        seen += 1
                        if seen > max_entries:
                            scan.complete = False
                            return scan
                        rel = f"{prefix}{entry.name}"
                        if entry.name.startswith(TEMP_PREFIX):
                            continue
                        try:
                            info = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue  # gone meanwhile
                        if stat.S_ISDIR(info.st_mode):
                            if depth + 1 >= MAX_PATH_SEGMENTS:
                                scan.skipped[rel + "/"] = (
                                    f"folders nest deeper than a memory path may "
                                    f"({MAX_PATH_SEGMENTS} segments)"
                                )
                                continue
                            try:
                                child = os.open(entry.name, DIR_FLAGS, dir_fd=fd)
                            except FileNotFoundError:
                                continue
                            except OSError as error:
                                # Unreadable is not deleted: nothing is taken as deleted now.
                                scan.skipped[rel + "/"] = (
                                    f"the folder cannot be read ({error.strerror or error})"
                                )
                                scan.complete = False
                                continue
                            stack.append((child, rel + "/", depth + 1))
                        elif stat.S_ISREG(info.st_mode):
                            scan.files[rel] = sig_of(info)
                        else:
                            scan.skipped[rel] = _kind(info.st_mode)
            finally:
                os.close(fd)
    finally:
        for fd, _, _ in stack:
            with contextlib.suppress(OSError):
                os.close(fd)
    return scan


def walk_folders(root: Path, on_dir: Callable[[int, str], None]) -> None:
    """Call `on_dir` for every folder below `root` (and itself), never following a link, with
    no look at the files (a fresh mount of a sync's own making)."""
    stack: list[tuple[int, str]] = [(os.open(root, DIR_FLAGS), "")]
    try:
        while stack:
            fd, prefix = stack.pop()
            try:
                on_dir(fd, prefix)
                with os.scandir(fd) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            with contextlib.suppress(OSError):
                                child = os.open(entry.name, DIR_FLAGS, dir_fd=fd)
                                stack.append((child, f"{prefix}{entry.name}/"))
            finally:
                os.close(fd)
    finally:
        for fd, _ in stack:
            with contextlib.suppress(OSError):
                os.close(fd)


@contextlib.contextmanager
def parent_folder(root: Path, rel: str, *, create: bool = False) -> Iterator[tuple[int, str]]:
    """(descriptor of the folder holding `rel`, the last name), reached without following any
    link; with `create`, missing folders are made (mode 0755, owned like the root)."""
    parts = rel.split("/")
    fd = os.open(root, DIR_FLAGS)
    try:
        owner = mount_owner(fd) if create else None
        for part in parts[:-1]:
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                made = False
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                    made = True
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
                if made:
                    # Whatever the worker's umask, the sandbox's user may go through it.
                    os.fchmod(child, 0o755)
                    if owner is not None:
                        os.fchown(child, *owner)
            os.close(fd)
            fd = child
        yield fd, parts[-1]
    finally:
        os.close(fd)


def mount_owner(root_fd: int) -> tuple[int, int] | None:
    """Whom files written into the mount must belong to: the sandbox's user, when the worker
    is root and the mount was handed over to it (as the file tools do)."""
    if os.geteuid() != 0:
        return None
    info = os.fstat(root_fd)
    return None if info.st_uid == 0 else (info.st_uid, info.st_gid)


def stat_file(root: Path, rel: str) -> Sig | None:
    """The signature of the regular file at `rel`, None when nothing is there; `Skip` when
    something else is (a link, a FIFO, a folder...), or a link is on the way."""
    try:
        with parent_folder(root, rel) as (fd, name):
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise Skip("a symbolic link is on its path") from None
        raise
    if not stat.S_ISREG(info.st_mode):
        if stat.S_ISDIR(info.st_mode):
            return None
        raise Skip(_kind(info.st_mode))
    return sig_of(info)


@dataclass(frozen=True)
class Read:
    content: str
    sha256: str
    sig: Sig
    links: int = 1  # more than one: the same file may be written through another name


def read_file(root: Path, rel: str) -> Read | None:
    """The file's text, None when there is no file; `Skip` when it cannot be a memory."""
    try:
        with parent_folder(root, rel) as (dir_fd, name):
            fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise Skip("it is a symbolic link, or one is on its path") from None
        if error.errno in (errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP):
            raise Skip("it is not a regular file") from None
        raise
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            return None
        if not stat.S_ISREG(info.st_mode):
            raise Skip(_kind(info.st_mode))
        if info.st_size > MAX_CONTENT_BYTES:
            raise Skip(_too_big(info.st_size))
        chunks = bytearray()
        while len(chunks) <= MAX_CONTENT_BYTES:
            chunk = os.read(fd, MAX_CONTENT_BYTES + 1 - len(chunks))
            if not chunk:
                break
            chunks += chunk
        if len(chunks) > MAX_CONTENT_BYTES:
            raise Skip(_too_big(len(chunks)))
        data = bytes(chunks)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Skip("its content is not valid UTF-8 text") from None
    if "\x00" in text:
        raise Skip("its content holds NUL bytes, which a memory cannot")
    return Read(
        content=text,
        sha256=hashlib.sha256(data).hexdigest(),
        sig=sig_of(after),
        links=after.st_nlink,
    )


def _too_big(size: int) -> str:
    return f"it is {size:,} bytes; a memory holds at most {MAX_CONTENT_BYTES:,} bytes (100 kB)"
