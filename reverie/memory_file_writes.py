"""Changing the files of a memory mount without losing a write: a file is written under a
temporary name and renamed (or exchanged) into place, replaced only while it still has the
digest it was checked to have, and a file a sync replaces or removes is kept aside
(`displaced`) while a tool may still write through it, so that such a write is seen. Like
`memory_files`, everything goes from a descriptor of the mount's root without following links.
Blocking: call these in a thread.
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
import signal
import stat
from pathlib import Path

from reverie.memory_files import (
    DIR_FLAGS,
    FILE_FLAGS,
    TEMP_PREFIX,
    Sig,
    mount_owner,
    parent_folder,
    sig_of,
)

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
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | FILE_FLAGS, 0o644, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fchmod(fd, 0o644)
        if (owner := mount_owner(dir_fd)) is not None:
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
        fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
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
    (see `collect_displaced`), not dropped. OSError when it cannot be (a folder or a file on
    the way, a name too long)."""
    with parent_folder(root, rel, create=True) as (dir_fd, name):
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
                    keep(dir_fd, name, displaced, rel, link=True)
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
            keep(dir_fd, temp, displaced, rel)
        return sig_of(os.stat(name, dir_fd=dir_fd, follow_symlinks=False))


def replace_file(
    root: Path, rel: str, content: str, expected: str | None, displaced: Path | None = None
) -> Sig | None:
    """Put `content` at `rel` only if the file there still has the digest `expected` (None:
    only if there is no file), atomically where the kernel can: the new file is exchanged
    with the old one (renameat2 RENAME_EXCHANGE), the old one checked, and exchanged back if
    someone changed it meanwhile. None when it was left alone. Whichever file leaves `rel`
    after having been there goes to `displaced` (see `collect_displaced`)."""
    with parent_folder(root, rel, create=True) as (dir_fd, name):
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
                    keep(dir_fd, name, displaced, rel, link=True, sha=expected)
                os.rename(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except (FileExistsError, FileNotFoundError):
            return None  # someone made or removed the file meanwhile: theirs stays
        finally:
            with contextlib.suppress(OSError):
                if was_there and displaced is not None:
                    # Ours (exchanged back) or theirs (checked): either as it was checked.
                    keep(dir_fd, temp, displaced, rel, sha=kept_sha)
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
        parent_folder(root, rel) as (dir_fd, name),
    ):
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISREG(info.st_mode) and displaced is not None:
            keep(dir_fd, name, displaced, rel, sha=expected)
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
    return os.open(displaced, DIR_FLAGS)


def keep(
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
    keep_fd = os.open(displaced, DIR_FLAGS)
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
                fd = os.open(name, FILE_FLAGS, dir_fd=keep_fd)
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
        fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
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
