"""The files of a memory mount, handled as untrusted: the agent (and its bash) may have put
anything there — links, FIFOs, devices, huge or binary files, names that are not memory paths,
deep trees, a million entries. Everything here goes from a descriptor of the mount's root, one
component at a time with O_NOFOLLOW, so no link is ever followed (in or out) and nothing blocks;
only regular files count. Blocking: call these in a thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from reverie.models.memory import MAX_CONTENT_BYTES, MAX_PATH_SEGMENTS

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
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
            with _parent(root, under + "/x") as (fd, _):
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
        top = os.open(root, _DIR)
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
                                child = os.open(entry.name, _DIR, dir_fd=fd)
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
    stack: list[tuple[int, str]] = [(os.open(root, _DIR), "")]
    try:
        while stack:
            fd, prefix = stack.pop()
            try:
                on_dir(fd, prefix)
                with os.scandir(fd) as entries:
                    for entry in entries:
                        if entry.is_dir(follow_symlinks=False):
                            with contextlib.suppress(OSError):
                                child = os.open(entry.name, _DIR, dir_fd=fd)
                                stack.append((child, f"{prefix}{entry.name}/"))
            finally:
                os.close(fd)
    finally:
        for fd, _ in stack:
            with contextlib.suppress(OSError):
                os.close(fd)


@contextlib.contextmanager
def _parent(root: Path, rel: str, *, create: bool = False) -> Iterator[tuple[int, str]]:
    """(descriptor of the folder holding `rel`, the last name), reached without following any
    link; with `create`, missing folders are made (mode 0755, owned like the root)."""
    parts = rel.split("/")
    fd = os.open(root, _DIR)
    try:
        owner = _owner(fd) if create else None
        for part in parts[:-1]:
            try:
                child = os.open(part, _DIR, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                made = False
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                    made = True
                child = os.open(part, _DIR, dir_fd=fd)
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


def _owner(root_fd: int) -> tuple[int, int] | None:
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
        with _parent(root, rel) as (fd, name):
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
        with _parent(root, rel) as (dir_fd, name):
            fd = os.open(name, _FILE, dir_fd=dir_fd)
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


_libc = ctypes.CDLL(None, use_errno=True)
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


def _renameat2(dir_fd: int, old: str, new: str, flags: int) -> bool:
    """renameat2(2) within one folder; False where the kernel or filesystem lacks it."""
    function = getattr(_libc, "renameat2", None)
    if function is None:
        return False
    if function(dir_fd, os.fsencode(old), dir_fd, os.fsencode(new), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), new)


def _temp_file(dir_fd: int, data: bytes) -> str:
    temp = f"{TEMP_PREFIX}{secrets.token_hex(8)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _FILE, 0o644, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, 0o644)
        if (owner := _owner(dir_fd)) is not None:
            os.fchown(fd, *owner)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(temp, dir_fd=dir_fd)
        raise
    os.close(fd)
    return temp


def _digest_at(dir_fd: int, name: str) -> str | None:
    """The digest of the regular file `name` (None: not a readable regular file)."""
    try:
        fd = os.open(name, _FILE, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        digest = hashlib.sha256()
        while chunk := os.read(fd, 1 << 16):
            digest.update(chunk)
        return digest.hexdigest()
    finally:
        os.close(fd)


def write_file(root: Path, rel: str, content: str, displaced: Path | None = None) -> Sig:
    """Put `content` at `rel`: written under a temporary name, then renamed over whatever file
    is there (a link there is replaced, never followed). A file there is moved to `displaced`
    (see `collect_displaced`), not dropped. OSError when it cannot be (a folder or a file on the way,
    a name too long)."""
    with _parent(root, rel, create=True) as (dir_fd, name):
        temp = _temp_file(dir_fd, content.encode("utf-8"))
        swapped = False
        try:
            if displaced is None:
                os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            elif _renameat2(dir_fd, temp, name, _RENAME_EXCHANGE):
                swapped = True  # the old file is at `temp` now
            else:
                # No exchange here (or nothing at `name`): keep the old file, then rename.
                with contextlib.suppress(FileNotFoundError):
                    _keep(dir_fd, name, displaced, rel, link=True)
                os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except FileNotFoundError:
            # Nothing to exchange with: the name is free.
            os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dir_fd)
            raise
        if swapped:
            assert displaced is not None
            _keep(dir_fd, temp, displaced, rel)
        return sig_of(os.stat(name, dir_fd=dir_fd, follow_symlinks=False))


def replace_file(
    root: Path, rel: str, content: str, expected: str | None, displaced: Path | None = None
) -> Sig | None:
    """Put `content` at `rel` only if the file there still has the digest `expected` (None:
    only if there is no file), atomically where the kernel can: the new file is exchanged
    with the old one (renameat2 RENAME_EXCHANGE), the old one checked, and exchanged back if
    someone changed it meanwhile. None when it was left alone. Whichever file leaves `rel`
    after having been there goes to `displaced` (see `collect_displaced`)."""
    with _parent(root, rel, create=True) as (dir_fd, name):
        temp = _temp_file(dir_fd, content.encode("utf-8"))
        was_there = False  # `temp` names a file that was at `rel` for a moment or more
        kept_sha = expected
        try:
            if expected is None:
                if not _renameat2(dir_fd, temp, name, _RENAME_NOREPLACE):
                    with contextlib.suppress(FileNotFoundError):
                        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                        return None
                    os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            elif _renameat2(dir_fd, temp, name, _RENAME_EXCHANGE):
                was_there = True
                if _digest_at(dir_fd, temp) != expected:
                    _renameat2(dir_fd, temp, name, _RENAME_EXCHANGE)  # theirs goes back
                    kept_sha = hashlib.sha256(content.encode("utf-8")).hexdigest()
                    return None
            else:
                if _digest_at(dir_fd, name) != expected:
                    return None
                if displaced is not None:
                    _keep(dir_fd, name, displaced, rel, link=True, sha=expected)
                os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except (FileExistsError, FileNotFoundError):
            return None  # someone made or removed the file meanwhile: theirs stays
        finally:
            with contextlib.suppress(OSError):
                if was_there and displaced is not None:
                    # Ours (exchanged back) or theirs (checked): either as it was checked.
                    _keep(dir_fd, temp, displaced, rel, sha=kept_sha)
                else:
                    os.unlink(temp, dir_fd=dir_fd)
        return sig_of(os.stat(name, dir_fd=dir_fd, follow_symlinks=False))


def remove_file(
    root: Path, rel: str, displaced: Path | None = None, expected: str | None = None
) -> None:
    """Remove the file (or link) at `rel`; nothing there is fine. A file is moved to
    `displaced` (see `collect_displaced`), not dropped, with the digest `expected` it was
    checked to have."""
    with (
        contextlib.suppress(FileNotFoundError, NotADirectoryError),
        _parent(root, rel) as (dir_fd, name),
    ):
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISREG(info.st_mode) and displaced is not None:
            _keep(dir_fd, name, displaced, rel, sha=expected)
        elif not stat.S_ISDIR(info.st_mode):
            os.unlink(name, dir_fd=dir_fd)


# ---- displaced files ------------------------------------------------------------------------
#
# A sync that replaces or removes a file of the mount (a pull, a conflict settled for the
# store) cannot know whether a tool still holds that file open and will write through it: that
# write would land in a file nobody reads again, lost unseen. So the file is not dropped but
# moved, with the path it had and its signature, into a folder of the session's state that no
# sandbox sees (`displace`); each write-back looks there (`collect_displaced`): a file whose
# signature changed since was written after it left (a conflict the agent is told of), and a
# file nobody holds open any more (a write lease can be taken) is dropped.

_F_SETSIG = getattr(fcntl, "F_SETSIG", 10)
_F_SETLEASE = getattr(fcntl, "F_SETLEASE", 1024)


def _open_displaced(displaced: Path) -> int:
    displaced.mkdir(parents=True, exist_ok=True, mode=0o700)
    return os.open(displaced, _DIR)


def _keep(
    dir_fd: int,
    name: str,
    displaced: Path,
    rel: str,
    *,
    link: bool = False,
    sha: str | None = None,
) -> None:
    """Move (or, with `link`, hard-link) the regular file `name` into `displaced` with a note
    of its path, its signature and the digest `sha` it was checked to have (a write between
    that check and the move is then seen); anything else is just removed."""
    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    if not stat.S_ISREG(info.st_mode):
        if not link:
            os.unlink(name, dir_fd=dir_fd)
        return
    keep_fd = _open_displaced(displaced)
    try:
        token = secrets.token_hex(8)
        if link:
            os.link(name, token, src_dir_fd=dir_fd, dst_dir_fd=keep_fd, follow_symlinks=False)
        else:
            os.rename(name, token, src_dir_fd=dir_fd, dst_dir_fd=keep_fd)
        kept = os.stat(token, dir_fd=keep_fd, follow_symlinks=False)
        note = json.dumps({"rel": rel, "sig": list(sig_of(kept)), "sha": sha}).encode()
        fd = os.open(f"{token}.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=keep_fd)
        try:
            os.write(fd, note)
        finally:
            os.close(fd)
    finally:
        os.close(keep_fd)


def _held_open(fd: int) -> bool:
    """Whether anyone but us has the file open (a write lease is refused then). Where leases
    are unavailable, nobody is assumed to."""
    try:
        # A lease break (someone opening it meanwhile) signals us: with SIGURG, ignored.
        fcntl.fcntl(fd, _F_SETSIG, signal.SIGURG)
        fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_WRLCK)
    except OSError as error:
        return error.errno in (errno.EAGAIN, errno.EBUSY)
    fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_UNLCK)
    return False


def collect_displaced(displaced: Path) -> list[str]:
    """The paths of displaced files written since they were displaced (or last looked at);
    files nobody holds open any more are dropped."""
    try:
        names = sorted(os.listdir(displaced))
    except (FileNotFoundError, NotADirectoryError):
        return []
    keep_fd = os.open(displaced, _DIR)
    written: list[str] = []
    try:
        present = set(names)
        for name in names:
            if name.endswith(".json"):
                if name[: -len(".json")] not in present:
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=keep_fd)
                continue
            note = _read_note(keep_fd, f"{name}.json")
            try:
                fd = os.open(name, _FILE, dir_fd=keep_fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=keep_fd)
                continue
            try:
                sig = sig_of(os.fstat(fd))
                sha = note.get("sha") if note is not None else None
                changed = note is not None and tuple(note.get("sig") or ()) != sig
                if isinstance(sha, str) and not changed:
                    changed = _digest_fd(fd) != sha
                if note is not None and (changed or sha is not None):
                    if changed:
                        written.append(str(note.get("rel")))
                    note.update(sig=list(sig), sha=None)
                    with contextlib.suppress(OSError):
                        _rewrite(keep_fd, f"{name}.json", json.dumps(note).encode())
                if not _held_open(fd):
                    os.unlink(name, dir_fd=keep_fd)
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{name}.json", dir_fd=keep_fd)
            finally:
                os.close(fd)
    finally:
        os.close(keep_fd)
    return written


def _digest_fd(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, 1 << 16, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def _read_note(dir_fd: int, name: str) -> dict | None:
    try:
        fd = os.open(name, _FILE, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        note = json.loads(os.read(fd, 1 << 16))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    return note if isinstance(note, dict) else None


def _rewrite(dir_fd: int, name: str, data: bytes) -> None:
    temp = f".{name}.{secrets.token_hex(4)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=dir_fd)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
