"""Which files of a memory mount changed since its last write-back, without looking at the
others: inotify watches on every folder of the mount, kept by the worker process between tool
runs, so that the write-back after `bash` costs what changed, not the store's size.

A mount's watch is set up by a whole-mount scan (each folder is watched before it is listed, so
nothing changed after the listing goes unseen) and then collects the names events mention:
files created, written, truncated, linked, moved or removed; folders made or moved in (walked
at the write-back), removed or moved away (every file the mount had under them is looked at).
Anything it cannot vouch for makes it *broken*, and the next write-back scans the whole mount
again, which sets up a new watch:
- the kernel's queue overflowed (16,384 events by default), or a watch could not be added;
- the mount's folder itself was removed, moved or rebuilt;
- more names collected than a whole scan would cost to look at (`MAX_PENDING`);
- more folders than its share of the kernel's watches (`MAX_DIRS_PER_MOUNT`, and a quarter of
  the user's quota for all mounts: an agent making folders by the thousand must not use up a
  quota shared with the worker user's other programs); a broken watch gives its back at once;
- a write-back that used it failed (what it had collected is not lost: the scan sees it).

Only processes write files the kernel tells about; writes through a shared mapping are seen
when the file is closed (every process of a sandbox is gone when its `bash` call ends). A file
with several names is written through whichever name a process opened: the write-back scans
the whole mount when a changed file has more than one link.

One inotify descriptor serves every mount of the process (the kernel allows 128 per user);
at most `MAX_MOUNTS` mounts are watched, the least recently synced dropped first.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from reverie.memory_files import TEMP_PREFIX

log = logging.getLogger(__name__)

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

MASK = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_EXCL_UNLINK
)
_EVENT = struct.Struct("iIII")
# Names one mount collects before a whole scan is cheaper than looking at each.
MAX_PENDING = 5_000
MAX_MOUNTS = 512
# Kernel watches are a per-user quota shared with every other program of the worker's user (root
# here): an agent making folders by the thousand must not use it up. Beyond these, a mount is
# scanned whole instead.
MAX_DIRS_PER_MOUNT = 4_096


def _max_dirs_total() -> int:
    try:
        with open("/proc/sys/fs/inotify/max_user_watches") as quota:
            return max(1_000, min(65_536, int(quota.read()) // 4))
    except (OSError, ValueError):
        return 8_192


Key = tuple[str, str]  # (session id, memory store id)


@dataclass
class Changes:
    """What a write-back must look at: files by relative path, folders to walk (new or moved
    in), folders gone (every file the mount had under them)."""

    files: set[str] = field(default_factory=set)
    walk: set[str] = field(default_factory=set)
    gone: set[str] = field(default_factory=set)

    def size(self) -> int:
        return len(self.files) + len(self.walk) + len(self.gone)


@dataclass
class Watch:
    """One mount's watch: its folders' watch descriptors and what they saw change."""

    key: Key
    root: str
    dirs: dict[int, str] = field(default_factory=dict)  # watch descriptor -> "" or "a/b/"
    pending: Changes = field(default_factory=Changes)
    armed: bool = False  # a whole scan made it, and the write-back that did succeeded
    broken: bool = False


class MountWatches:
    """The process's watches on memory mounts (thread-safe: scans add watches from threads)."""

    def __init__(self, max_mounts: int = MAX_MOUNTS) -> None:
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._failed = False
        self._mounts: OrderedDict[Key, Watch] = OrderedDict()
        self._by_wd: dict[int, Watch] = {}
        self._max_mounts = max_mounts
        self._max_dirs = _max_dirs_total()
        self._libc = ctypes.CDLL(None, use_errno=True)

    # ---- set up ----------------------------------------------------------------------------

    def _inotify(self) -> int | None:
        if self._fd is None and not self._failed:
            fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd < 0:
                self._failed = True
                log.warning(
                    "memory mounts: no inotify (%s); every write-back after bash scans its mount",
                    os.strerror(ctypes.get_errno()),
                )
                return None
            self._fd = fd
        return self._fd

    def begin(self, key: Key, root: str) -> Watch | None:
        """A new watch for a mount about to be scanned whole (any old one is dropped); None
        where inotify is unavailable."""
        with self._lock:
            self._drop(key)
            if self._inotify() is None:
                return None
            mount = Watch(key=key, root=root)
            self._mounts[key] = mount
            while len(self._mounts) > self._max_mounts:
                self._drop(next(iter(self._mounts)))
            return mount

    def add_dir(self, mount: Watch | None, dir_fd: int, rel: str) -> None:
        """Watch the folder open at `dir_fd` (reached without following links) as `rel`."""
        if mount is None or mount.broken:
            return
        with self._lock:
            fd = self._fd
            if fd is None or self._mounts.get(mount.key) is not mount:
                return
            if len(mount.dirs) >= MAX_DIRS_PER_MOUNT or len(self._by_wd) >= self._max_dirs:
                self._break(mount)
                return
            wd = self._libc.inotify_add_watch(fd, f"/proc/self/fd/{dir_fd}".encode(), MASK)
            if wd < 0:
                code = ctypes.get_errno()
                if code != errno.ENOENT:
                    log.info("memory mount watch not set (%s): whole scans", os.strerror(code))
                self._break(mount)
                return
            other = self._by_wd.get(wd)
            if other is not None and other is not mount:
                # The same folder watched for another mount: cannot be told apart.
                self._break(mount)
                self._break(other)
                return
            mount.dirs[wd] = rel
            self._by_wd[wd] = mount

    def arm(self, mount: Watch | None) -> None:
        """The whole-mount write-back that set this watch up succeeded: from now on, what it
        collects is all that changed."""
        if mount is not None:
            with self._lock:
                mount.armed = not mount.broken

    def current(self, key: Key) -> Watch | None:
        with self._lock:
            return self._mounts.get(key)

    def drop(self, key: Key) -> None:
        with self._lock:
            self._drop(key)

    def _drop(self, key: Key) -> None:
        mount = self._mounts.pop(key, None)
        if mount is not None:
            self._break(mount)

    # ---- use -------------------------------------------------------------------------------

    def take(self, key: Key, root: str) -> tuple[Watch, Changes] | None:
        """What changed in the mount since its last write-back, or None when its watch cannot
        say (none, not yet armed, broken): the mount must then be scanned whole."""
        with self._lock:
            self._drain()
            mount = self._mounts.get(key)
            if mount is None or mount.root != root or not mount.armed or mount.broken:
                return None
            self._mounts.move_to_end(key)
            changes, mount.pending = mount.pending, Changes()
            return mount, changes

    def fail(self, mount: Watch) -> None:
        """A write-back using the watch failed: the next one scans the whole mount."""
        with self._lock:
            self._break(mount)

    def _break(self, mount: Watch) -> None:
        """The mount's watch can no longer vouch: its kernel watches are given back now."""
        mount.broken = True
        mount.pending = Changes()
        for wd in mount.dirs:
            if self._by_wd.get(wd) is mount:
                del self._by_wd[wd]
                if self._fd is not None:
                    self._libc.inotify_rm_watch(self._fd, wd)
        mount.dirs.clear()

    def drain(self) -> None:
        with self._lock:
            self._drain()

    def _drain(self) -> None:
        fd = self._fd
        if fd is None:
            return
        while True:
            try:
                data = os.read(fd, 1 << 16)
            except BlockingIOError:
                return
            except OSError as error:
                log.warning("memory mount watches: read failed: %s", error)
                self._broken_all()
                return
            if not data:
                return
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size
                raw = data[offset : offset + length].split(b"\0", 1)[0]
                offset += length
                self._event(wd, mask, os.fsdecode(raw))

    def _broken_all(self) -> None:
        for mount in self._mounts.values():
            self._break(mount)

    def _event(self, wd: int, mask: int, name: str) -> None:
        if mask & IN_Q_OVERFLOW:
            self._broken_all()
            return
        mount = self._by_wd.get(wd)
        if mount is None:
            return
        rel = mount.dirs.get(wd)
        if mask & IN_IGNORED:
            mount.dirs.pop(wd, None)
            del self._by_wd[wd]
            if rel == "":
                self._break(mount)
            return
        if rel is None or mount.broken:
            return
        if mask & IN_UNMOUNT or (rel == "" and mask & (IN_DELETE_SELF | IN_MOVE_SELF)):
            self._break(mount)
            return
        if not name:
            return  # the folder's own events: its parent reports what matters
        if name.startswith(TEMP_PREFIX):
            return
        path = rel + name
        pending = mount.pending
        if mask & IN_ISDIR:
            if mask & (IN_CREATE | IN_MOVED_TO):
                pending.walk.add(path)
            if mask & (IN_DELETE | IN_MOVED_FROM):
                pending.gone.add(path + "/")
        else:
            pending.files.add(path)
        if pending.size() > MAX_PENDING:
            self._break(mount)


WATCHES = MountWatches()
