"""Opening a path beneath a root directory without ever following a link out of it.

The file tools must not check a path and then open it again by name: between the two, the
agent's own `bash` can swap a folder for a symlink (a `renameat2` exchange) and the open lands
in another session's workspace or on the host. Here every path is resolved by the kernel
relative to a descriptor of its root: `openat2(2)` with `RESOLVE_BENEATH` refuses, atomically,
any resolution that leaves the root (absolute symlinks, `..` or relative symlinks climbing out)
and any `/proc` magic link. Where `openat2` is unavailable (Linux before 5.6, or a container's
seccomp profile answering ENOSYS/EPERM) the same rules are applied by a walk of our own, one
component at a time from the root's descriptor with `O_NOFOLLOW`: a symlink met on the way is
read and followed only lexically, from descriptors already held, so it cannot lead out either.

Every open carries O_NONBLOCK (a FIFO or a device never blocks the caller), O_NOCTTY and
O_CLOEXEC, and the helpers for the tools then refuse anything but a regular file. Symlinks
that stay inside the root are followed.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import sys
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_BENEATH = 0x08
# openat2's number on every architecture but alpha (new syscalls share one table since 5.1).
SYS_OPENAT2 = 437
# Added to every open: nothing blocks on a FIFO or grabs a terminal, nothing leaks into children.
BASE_FLAGS = os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
MAX_SYMLINK_HOPS = 40
# openat2 answers EAGAIN when a rename raced a `..`; it is retried this many times.
_EAGAIN_RETRIES = 16
# The walk looks again at a name that changed between two of its calls this many times.
_RACE_RETRIES = 8
# O_PATH (Linux) opens a folder without reading it; elsewhere a plain read-only open does.
O_PATH = getattr(os, "O_PATH", 0)
_DIR_FLAGS = (O_PATH or os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC


class NotAllowed(Exception):
    """The path resolved, but to something the tools must not use; `reason` is for the model."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
# None until probed; tests set it to False to exercise the walk.
_OPENAT2: bool | None = None


def _openat2(dir_fd: int, path: str, flags: int, mode: int) -> int:
    how = _OpenHow(flags, mode, RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)
    encoded = os.fsencode(path)
    for _ in range(_EAGAIN_RETRIES):
        fd = _syscall(
            ctypes.c_long(SYS_OPENAT2),
            ctypes.c_int(dir_fd),
            ctypes.c_char_p(encoded),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
        if fd >= 0:
            return int(fd)
        code = ctypes.get_errno()
        if code != errno.EAGAIN:
            raise OSError(code, os.strerror(code), path)
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), path)


def openat2_available() -> bool:
    """Whether this kernel (and seccomp profile) lets us call openat2; probed once."""
    global _OPENAT2
    if _OPENAT2 is None and not sys.platform.startswith("linux"):
        _OPENAT2 = False
    if _OPENAT2 is None:
        try:
            with opened_root(Path("/")) as root:
                os.close(_openat2(root, ".", O_PATH | os.O_CLOEXEC, 0))
            _OPENAT2 = True
        except OSError as error:
            if error.errno not in (errno.ENOSYS, errno.EPERM, errno.EINVAL, errno.E2BIG):
                raise
            _OPENAT2 = False
    return _OPENAT2


def _components(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def _walk(root_fd: int, relative: str, flags: int, mode: int) -> int:
    """`openat2(RESOLVE_BENEATH)` done by hand: each component is opened with O_NOFOLLOW
    relative to a descriptor we hold; a symlink's text is spliced into the remaining path, and
    `..` pops our own stack of descriptors, so nothing outside the root is ever named."""
    parts: deque[str] = deque(relative.split("/"))
    stack: list[int] = []
    hops = 0
    retries = 0

    def here() -> int:
        return stack[-1] if stack else root_fd

    def follow(name: str, refused: OSError | None) -> None:
        """`name` is a symlink (or the open was refused because it looked like one)."""
        nonlocal hops, retries
        try:
            target = os.readlink(name, dir_fd=here())
        except OSError as error:
            # Not a symlink (any more): swapped meanwhile, so look again, a few times.
            if error.errno != errno.EINVAL or refused is None or retries >= _RACE_RETRIES:
                raise refused or error from None
            retries += 1
            parts.appendleft(name)
            return
        hops += 1
        if hops > MAX_SYMLINK_HOPS:
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), relative)
        if not target or target.startswith("/"):
            raise OSError(errno.EXDEV, "symbolic link leads outside the root", relative)
        parts.extendleft(reversed(target.split("/")))

    try:
        while parts:
            name = parts.popleft()
            if name in ("", "."):
                continue
            if name == "..":
                if not stack:
                    raise OSError(errno.EXDEV, "path leads outside the root", relative)
                os.close(stack.pop())
                continue
            if any(part not in ("", ".") for part in parts):
                # A folder on the way: O_NOFOLLOW|O_DIRECTORY refuses a symlink (ENOTDIR).
                try:
                    stack.append(os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=here()))
                except OSError as error:
                    if error.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    follow(name, error)
                continue
            # The last component; anything left ("a/" or "a/.") says it must be a folder.
            extra = os.O_DIRECTORY if parts else 0
            try:
                fd = os.open(name, flags | extra | os.O_NOFOLLOW, mode, dir_fd=here())
            except OSError as error:
                if error.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                follow(name, error)
                continue
            if flags & O_PATH and stat.S_ISLNK(os.fstat(fd).st_mode):
                # O_PATH|O_NOFOLLOW opens the link itself rather than failing.
                os.close(fd)
                follow(name, None)
                continue
            return fd
        return os.open(".", flags, mode, dir_fd=here())
    finally:
        for fd in stack:
            os.close(fd)


def open_beneath(root_fd: int, relative: str, flags: int, mode: int = 0) -> int:
    """Open `relative` beneath `root_fd`, following only symlinks that stay inside.

    A path or link leading out raises OSError(EXDEV); BASE_FLAGS are always added.
    """
    # openat2 refuses O_PATH with any flag but these few; O_PATH opens nothing, so none is needed.
    flags |= os.O_CLOEXEC if flags & O_PATH else BASE_FLAGS
    if not flags & os.O_CREAT:
        mode = 0
    if openat2_available():
        return _openat2(root_fd, relative or ".", flags, mode)
    return _walk(root_fd, relative, flags, mode)


@contextmanager
def opened_root(host: Path) -> Iterator[int]:
    """A descriptor of a root folder (trusted: Reverie made or resolved it), closed after."""
    fd = os.open(host, _DIR_FLAGS)
    try:
        yield fd
    finally:
        os.close(fd)


@contextmanager
def closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a plain file"


def _regular(fd: int) -> os.stat_result:
    """fstat of an open descriptor; anything but a regular file is refused (and closed)."""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise NotAllowed(f"not a regular file ({_kind(info.st_mode)})")
    except BaseException:
        os.close(fd)
        raise
    return info


def open_for_reading(root_fd: int, relative: str) -> tuple[int, os.stat_result]:
    """A regular file opened read-only, and its fstat."""
    fd = _open_file(root_fd, relative, os.O_RDONLY)
    return fd, _regular(fd)


def open_for_writing(
    root_fd: int, relative: str, *, create: bool, read: bool = False
) -> tuple[int, os.stat_result]:
    """A regular file with one link opened for writing (and reading, if `read`), created with
    its missing parent folders when `create`; never truncated here, so a refused file is left
    as it was: the caller truncates once the checks passed."""
    flags = (os.O_RDWR if read else os.O_WRONLY) | (os.O_CREAT if create else 0)
    try:
        fd = _open_file(root_fd, relative, flags)
    except FileNotFoundError:
        if not create:
            raise
        make_parents(root_fd, relative)
        fd = _open_file(root_fd, relative, flags)
    info = _regular(fd)
    if info.st_nlink > 1:
        os.close(fd)
        raise NotAllowed(
            f"has {info.st_nlink} hard links; a file with more than one name could be another "
            "file the agent may not write, so it is not written (copy it to a new file instead)"
        )
    if (owner := _sandbox_owner(root_fd)) is not None and info.st_uid != owner[0]:
        os.fchown(fd, *owner)
    return fd, info


def _sandbox_owner(root_fd: int) -> tuple[int, int] | None:
    """Whom a file the worker writes must belong to: when the worker is root, the sandbox runs
    as an unprivileged user that owns the session's folders, and must be able to change what the
    file tools wrote; otherwise the worker and the sandbox are one user and nothing is needed."""
    if os.geteuid() != 0:
        return None
    info = os.fstat(root_fd)
    return None if info.st_uid == 0 else (info.st_uid, info.st_gid)


def _open_file(root_fd: int, relative: str, flags: int) -> int:
    try:
        return open_beneath(root_fd, relative, flags, 0o666)
    except OSError as error:
        # A socket, or a FIFO without a reader opened for writing: not a file to use.
        if error.errno in (errno.ENXIO, errno.ENODEV, errno.EOPNOTSUPP):
            raise NotAllowed("not a regular file") from None
        raise


def make_parents(root_fd: int, relative: str) -> None:
    """Create the missing folders above `relative`, one by one; each mkdir is relative to a
    descriptor that was itself resolved beneath the root, so none can land outside."""
    parts = _components(relative)[:-1]
    for depth in range(len(parts)):
        parent = "/".join(parts[:depth]) or "."
        with (
            closing(open_beneath(root_fd, parent, _DIR_FLAGS)) as parent_fd,
            suppress(FileExistsError),
        ):
            os.mkdir(parts[depth], 0o777, dir_fd=parent_fd)
            if (owner := _sandbox_owner(root_fd)) is not None:
                os.chown(parts[depth], *owner, dir_fd=parent_fd, follow_symlinks=False)
