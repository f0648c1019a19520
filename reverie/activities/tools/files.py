"""The file tools (`read`, `write`, `edit`, `glob`, `grep`), race-free beneath the session's roots.

The input fields and the answers' wording are the SDK's (`anthropic.lib.tools.agent_toolset`),
but the SDK checks a path and then opens it again by name, and the agent's own `bash` can swap
a folder for a symlink in between. Here every path is opened relative to a descriptor of its
root with `beneath.py` (never through a link leading out), only regular files are read or
written (a FIFO, socket or device never is, so nothing blocks), a file with several hard links
is not written, blocking filesystem work runs in a thread under a deadline, and the model's
regular expression runs in a `grep` subprocess that is killed at its timeout, never in this
process (a catastrophic pattern would hold the GIL and stall every session of the worker).
"""

from __future__ import annotations

import asyncio
import base64
import errno
import os
import posixpath
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, TypeVar

from reverie.activities.tools import beneath
from reverie.activities.tools.beneath import NotAllowed
from reverie.activities.tools.inputs import (
    EditInput,
    GlobInput,
    GrepInput,
    ReadInput,
    ToolInput,
    WriteInput,
)
from reverie.activities.tools.models import WORK_VIRTUAL, ToolOutcome
from reverie.activities.tools.paths import HostPath, PathRefused, to_host, to_virtual_text
from reverie.activities.tools.process_loop import on_process_loop
from reverie.activities.tools.workspace import Workspace

FILE_INPUTS: dict[str, type[ToolInput]] = {
    "read": ReadInput,
    "write": WriteInput,
    "edit": EditInput,
    "glob": GlobInput,
    "grep": GrepInput,
}

# Deadlines. A tool past its deadline answers with an error; the thread doing filesystem work
# cannot be interrupted, but nothing it does can block (every open is O_NONBLOCK on a regular
# file), so it ends soon after; grep, a subprocess, is killed.
FILE_TOOL_TIMEOUT = 30.0
GREP_TIMEOUT = 30.0
# How far `read` with `view_range` scans for its lines: a sparse file of terabytes without a
# newline must not keep a thread reading zeros long after the tool gave up.
MAX_SCAN_BYTES = 256 * 1024 * 1024
T = TypeVar("T")
# grep runs in the worker, outside the sandbox: a line of many gigabytes written by the agent
# must not make it take the host's memory (it reports "memory exhausted" instead).
GREP_MEMORY_BYTES = 1024**3
_GREP_LIMITS = (
    ["/usr/bin/prlimit", f"--as={GREP_MEMORY_BYTES}", "--"]
    if os.access("/usr/bin/prlimit", os.X_OK)
    else []
)
# The file tools' own threads: a tool stuck on a slow filesystem waits here, never in the
# event loop's default executor, which DNS lookups (web_fetch, the egress proxy) also need.
_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="reverie-file-tools")


async def _in_thread(function: Callable[..., T], *args: Any) -> T:
    return await asyncio.get_running_loop().run_in_executor(_THREADS, function, *args)


# The SDK's limits.
MAX_FILE_BYTES = 256 * 1024
# What an edit may grow a file to (it starts from at most MAX_FILE_BYTES).
MAX_EDIT_RESULT_BYTES = 4 * 1024 * 1024
MAX_IMAGE_BASE64_BYTES = 5 * 1024 * 1024
MAX_PDF_BYTES = 20 * 1024 * 1024
GREP_OUTPUT_LIMIT = 100 * 1024
GREP_MAX_LINE_LENGTH = 2000
GLOB_RESULT_LIMIT = 200
WALK_MAX_ENTRIES = 50_000
# Deeper folders are not walked by glob: each level holds a descriptor open.
GLOB_MAX_DEPTH = 64
_READ_CHUNK = 64 * 1024
_BINARY_MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".pdf": "application/pdf",
}
_GLOB_MAGIC = re.compile(r"[*?\[]")
_GREP_PATH = "/usr/bin:/bin"
_STDERR_LIMIT = 4096


class _Failed(Exception):
    """A refusal or failure, worded for the model."""


# --- paths and errors ------------------------------------------------------------------------


def _reason(error: OSError, target: HostPath) -> str:
    """The SDK's runtime-independent phrase for a filesystem error, plus our refusals."""
    code = error.errno
    if code == errno.EXDEV:
        return (
            f"is, or goes through, a symbolic link leading outside {target.root.virtual}; "
            "such links are not followed"
        )
    if code == errno.ELOOP:
        return "too many levels of symbolic links"
    if code in (errno.ENXIO, errno.ENODEV):
        return "not a regular file"
    if code == errno.EAGAIN:
        return "the folder changed while the path was being resolved; try again"
    if isinstance(error, FileNotFoundError):
        return "no such file or directory"
    if isinstance(error, NotADirectoryError):
        return "not a directory"
    if isinstance(error, IsADirectoryError):
        return "is a directory"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, FileExistsError):
        return "file already exists"
    return (error.strerror or "i/o error").lower()


def _target(workspace: Workspace, op: str, path: str, *, writes: bool = False) -> HostPath:
    try:
        target = to_host(workspace, path)
    except PathRefused as refused:
        raise _Failed(f"{op}: {refused}") from None
    if writes and target.root.read_only:
        raise _Failed(f"{op}: {target.virtual} is inside read-only directory {target.root.virtual}")
    return target


def _open(op: str, target: HostPath, opener: Callable[[int], Any]) -> Any:
    """Run `opener(root_fd)` for `target`, turning refusals into the model's wording."""
    try:
        with beneath.opened_root(target.root.host) as root_fd:
            return opener(root_fd)
    except NotAllowed as refused:
        raise _Failed(f"{op}: {target.virtual}: {refused.reason}") from None
    except OSError as error:
        raise _Failed(f"{op}: {target.virtual}: {_reason(error, target)}") from None


def _read_at_most(fd: int, limit: int) -> bytes:
    """Up to `limit + 1` bytes, so a file that grew past its fstat size is noticed."""
    chunks = bytearray()
    while len(chunks) <= limit:
        chunk = os.read(fd, min(_READ_CHUNK, limit + 1 - len(chunks)))
        if not chunk:
            break
        chunks += chunk
    return bytes(chunks)


def _replace_content(fd: int, data: bytes) -> None:
    os.ftruncate(fd, 0)
    view = memoryview(data)
    offset = 0
    while offset < len(view):
        offset += os.pwrite(fd, view[offset:], offset)


# --- read ------------------------------------------------------------------------------------


def _read(params: ReadInput, workspace: Workspace) -> ToolOutcome:
    target = _target(workspace, "read", params.file_path)
    name = target.virtual
    media_type = _BINARY_MEDIA_TYPES.get(posixpath.splitext(name)[1].lower())
    fd, info = _open("read", target, lambda root: beneath.open_for_reading(root, target.relative))
    with beneath.closing(fd):
        try:
            if media_type is not None:
                if params.view_range:
                    raise _Failed("read: view_range is not supported for image/PDF files")
                block = _binary_block(fd, name, info.st_size, media_type)
                return ToolOutcome(content=[block], is_error=False)
            if info.st_size > MAX_FILE_BYTES:
                if not params.view_range:
                    raise _Failed(_too_big(name, info.st_size))
                start, end = params.view_range
                text = _read_line_range(fd, name, start, end, MAX_FILE_BYTES)
                return ToolOutcome.text(to_virtual_text(workspace, text))
            data = _read_at_most(fd, MAX_FILE_BYTES)
            if len(data) > MAX_FILE_BYTES:
                raise _Failed(_too_big(name, max(len(data), info.st_size)))
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _Failed(
                f"read: {name}: not valid UTF-8 text (binary files are only supported for "
                "image/PDF extensions)"
            ) from None
        except OSError as error:
            raise _Failed(f"read: {name}: {_reason(error, target)}") from None
    if params.view_range:
        start_line, end_line = params.view_range
        lines = text.split("\n")
        text = "\n".join(lines[max(0, start_line - 1) : end_line if end_line > 0 else len(lines)])
    return ToolOutcome.text(to_virtual_text(workspace, text))


def _too_big(name: str, size: int) -> str:
    return (
        f"read: {name} is {size} bytes, exceeds {MAX_FILE_BYTES}-byte limit. Use the view_range "
        "parameter to read specific line ranges, e.g. view_range: [1, 500]."
    )


def _binary_block(fd: int, name: str, size: int, media_type: str) -> dict[str, Any]:
    """An image/PDF as a base64 content block; the API's caps are checked before reading."""
    pdf = media_type == "application/pdf"
    # The image cap is on the encoded form: n raw bytes become 4*ceil(n/3) base64 bytes.
    limit = MAX_PDF_BYTES if pdf else (MAX_IMAGE_BASE64_BYTES // 4) * 3
    too_big = f"read: {name} is {{}} bytes, exceeds {limit}-byte limit for image/PDF files."
    if size > limit:
        raise _Failed(too_big.format(size))
    data = _read_at_most(fd, limit)
    if len(data) > limit:
        raise _Failed(too_big.format(len(data)))
    encoded = base64.standard_b64encode(data).decode("ascii")
    source = {"type": "base64", "media_type": media_type, "data": encoded}
    return {"type": "document" if pdf else "image", "source": source}


def _read_line_range(fd: int, name: str, start_line: int, end_line: int, limit: int) -> str:
    """Lines `[start_line, end_line]` of a large file, streamed, at most `limit` bytes."""
    start = max(0, start_line - 1)
    end = end_line if end_line > 0 else sys.maxsize
    collected = bytearray()
    line = 0
    scanned = 0
    while start < end and line < end:
        chunk = os.read(fd, _READ_CHUNK)
        if not chunk:
            break
        scanned += len(chunk)
        if scanned > MAX_SCAN_BYTES:
            raise _Failed(
                f"read: {name}: line {start_line} is not within the first {MAX_SCAN_BYTES:,} "
                "bytes, which is as far as view_range looks; use bash (e.g. tail -c or sed) "
                "for such a file"
            )
        position = 0
        while position < len(chunk) and line < end:
            newline = chunk.find(b"\n", position)
            stop = len(chunk) if newline < 0 else newline
            if line >= start:
                collected += chunk[position:stop]
                if newline >= 0 and line + 1 < end:
                    collected += b"\n"
                if len(collected) > limit:
                    raise _Failed(_range_too_big(name, start_line, end_line, start, end, limit))
            if newline < 0:
                break
            line += 1
            position = newline + 1
    return collected.decode("utf-8")


def _range_too_big(
    name: str, start_line: int, end_line: int, start: int, end: int, limit: int
) -> str:
    if end - start == 1:
        return (
            f"read: line {start + 1} of {name} alone exceeds {limit}-byte limit. The read tool "
            "cannot return part of a line, so view_range cannot narrow this further."
        )
    return (
        f"read: view_range [{start_line}, {end_line}] of {name} exceeds {limit}-byte limit. "
        "Narrow the view_range to read a smaller portion."
    )


# --- write and edit --------------------------------------------------------------------------


def _write(params: WriteInput, workspace: Workspace) -> ToolOutcome:
    target = _target(workspace, "write", params.file_path, writes=True)
    try:
        data = params.content.encode("utf-8")
    except UnicodeEncodeError:
        raise _Failed("write: content is not valid Unicode text") from None
    fd, _ = _open(
        "write", target, lambda root: beneath.open_for_writing(root, target.relative, create=True)
    )
    with beneath.closing(fd):
        try:
            _replace_content(fd, data)
        except OSError as error:
            raise _Failed(f"write: {target.virtual}: {_reason(error, target)}") from None
    return ToolOutcome.text(f"wrote {len(params.content)} bytes to {target.virtual}")


def _edit(params: EditInput, workspace: Workspace) -> ToolOutcome:
    target = _target(workspace, "edit", params.file_path, writes=True)
    name = target.virtual
    fd, info = _open(
        "edit",
        target,
        lambda root: beneath.open_for_writing(root, target.relative, create=False, read=True),
    )
    with beneath.closing(fd):
        try:
            if info.st_size > MAX_FILE_BYTES:
                raise _Failed(_edit_too_big(name, info.st_size))
            data = _read_at_most(fd, MAX_FILE_BYTES)
            if len(data) > MAX_FILE_BYTES:
                raise _Failed(_edit_too_big(name, len(data)))
            text = data.decode("utf-8")
            count = text.count(params.old_string)
            if count == 0:
                raise _Failed(f"edit: old_string not found in {name}")
            if not params.replace_all and count > 1:
                raise _Failed(f"edit: old_string appears {count} times in {name} (must be unique)")
            replaced = count if params.replace_all else 1
            grown = len(data) + replaced * (
                len(params.new_string.encode()) - len(params.old_string.encode())
            )
            if grown > MAX_EDIT_RESULT_BYTES:
                # Checked before replacing: a short old_string replaced everywhere by a long
                # new_string would otherwise build gigabytes in the worker's memory.
                raise _Failed(
                    f"edit: the result would be {grown:,} bytes, over the edit tool's limit of "
                    f"{MAX_EDIT_RESULT_BYTES:,}; make smaller edits or use bash"
                )
            updated = text.replace(
                params.old_string, params.new_string, -1 if params.replace_all else 1
            )
            _replace_content(fd, updated.encode("utf-8"))
        except UnicodeError:
            raise _Failed(
                f"edit: {name}: not valid UTF-8 text (cannot edit binary files)"
            ) from None
        except OSError as error:
            raise _Failed(f"edit: {name}: {_reason(error, target)}") from None
    return ToolOutcome.text(f"edited {name} ({count if params.replace_all else 1} replacement(s))")


def _edit_too_big(name: str, size: int) -> str:
    return (
        f"edit: {name} is {size} bytes, exceeds {MAX_FILE_BYTES}-byte limit. "
        "The edit tool loads the whole file and cannot modify a file this large."
    )


# --- glob ------------------------------------------------------------------------------------


def _split_absolute_pattern(workspace: Workspace, pattern: str) -> tuple[str, str]:
    """`/workspace/src/**/*.py` as root `/workspace` and pattern `src/**/*.py`.

    The SDK only takes relative patterns; an absolute one under a known folder is what the
    agent will naturally write, so it is split rather than refused.
    """
    for root in workspace.roots():
        if pattern.startswith(root.virtual + "/"):
            return root.virtual, pattern[len(root.virtual) + 1 :]
    raise _Failed(f"glob: pattern {pattern!r} is not under a folder this session can use")


class GlobMatcher:
    """Matches a path one name at a time against glob segments, as the walk goes down.

    `*` and `?` stay within a name, `[...]` is a character class (`[!...]` or `[^...]`
    negated), a `**` segment matches any number of folders, and `**` at the end anything below.
    Hidden names match like any other, as in pathlib. The state is the set of segments a path
    could have reached, so matching costs names x segments and never backtracks: the pattern
    is the model's, and a regex over whole paths could be made to run for hours in this process.
    """

    def __init__(self, parts: list[str]) -> None:
        if parts[-1] == "**":
            # Something below, not the folder itself.
            parts = [*parts[:-1], "*", "**"]
        collapsed: list[str] = []
        for part in parts:
            if not (part == "**" and collapsed and collapsed[-1] == "**"):
                collapsed.append(part)
        self._segments = [None if part == "**" else _name_regex(part) for part in collapsed]
        self.start = self._closure({0})

    def _closure(self, states: set[int]) -> frozenset[int]:
        """`**` also matches no folder at all: a state on it may skip it."""
        result = set(states)
        for index in sorted(states):
            while index < len(self._segments) and self._segments[index] is None:
                index += 1
                result.add(index)
        return frozenset(result)

    def step(self, states: frozenset[int], name: str) -> frozenset[int]:
        """The states after one more name (empty: nothing below can match)."""
        reached: set[int] = set()
        for index in states:
            if index == len(self._segments):
                continue
            segment = self._segments[index]
            if segment is None:
                reached.add(index)
            elif segment.fullmatch(name):
                reached.add(index + 1)
        return self._closure(reached)

    def matches(self, states: frozenset[int]) -> bool:
        return len(self._segments) in states

    def may_go_deeper(self, states: frozenset[int]) -> bool:
        return any(index < len(self._segments) for index in states)


def _name_regex(segment: str) -> re.Pattern[str]:
    """One name's glob as a regex that cannot backtrack badly: between two stars, the next
    fixed-length piece is matched at its first occurrence, atomically (as `fnmatch` does)."""
    pieces: list[str] = [""]
    stars = 0
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "*":
            if pieces[-1] or not stars:
                pieces.append("")
            stars += 1
        elif char == "?":
            pieces[-1] += "."
        elif char == "[" and (end := _class_end(segment, i)) is not None:
            body = segment[i + 1 : end]
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            escaped = "".join(c if c == "-" else re.escape(c) for c in body)
            pieces[-1] += f"[^{escaped}]" if negate else f"[{escaped}]"
            i = end
        else:
            pieces[-1] += re.escape(char)
        i += 1
    if not stars:
        return re.compile(pieces[0], re.DOTALL)
    head, *middle, tail = pieces
    regex = head + "".join(f"(?>.*?{piece})" for piece in middle if piece) + ".*" + tail
    return re.compile(regex, re.DOTALL)


def _class_end(segment: str, start: int) -> int | None:
    """The index of the `]` closing the class opened at `start`, or None (then `[` is literal)."""
    j = start + 1
    if j < len(segment) and segment[j] in "!^":
        j += 1
    if j < len(segment) and segment[j] == "]":
        j += 1
    end = segment.find("]", j)
    return None if end < 0 else end


@dataclass
class _Walk:
    """One glob walk's state: what matched, and how much of the budget is left."""

    matcher: GlobMatcher
    # Checks a symlink that matched: it is listed only if it resolves inside the root.
    link_inside: Callable[[str], float | None]
    budget: int = WALK_MAX_ENTRIES
    matches: list[tuple[float, str]] = field(default_factory=list)

    def scan(self, dir_fd: int, states: frozenset[int], prefix: str = "", depth: int = 0) -> None:
        """List `dir_fd` and the folders below it, by descriptor: each subfolder is opened with
        O_NOFOLLOW|O_DIRECTORY relative to its parent, so a symlinked folder is never entered,
        even one swapped in after it was listed."""
        with os.scandir(dir_fd) as entries:
            for entry in entries:
                if self.budget <= 0:
                    return
                self.budget -= 1
                after = self.matcher.step(states, entry.name)
                if not after:
                    continue
                relative = prefix + entry.name
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if self.matcher.matches(after):
                    mtime: float | None = info.st_mtime
                    if stat.S_ISLNK(info.st_mode):
                        mtime = self.link_inside(relative)
                    if mtime is not None:
                        self.matches.append((mtime, relative))
                if (
                    stat.S_ISDIR(info.st_mode)
                    and self.matcher.may_go_deeper(after)
                    and depth + 1 < GLOB_MAX_DEPTH
                ):
                    self._descend(dir_fd, entry.name, after, relative, depth + 1)

    def _descend(
        self, dir_fd: int, name: str, states: frozenset[int], relative: str, depth: int
    ) -> None:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | beneath.BASE_FLAGS
        try:
            child = os.open(name, flags, dir_fd=dir_fd)
        except OSError:
            return
        with beneath.closing(child):
            self.scan(child, states, relative + "/", depth)


def _glob(params: GlobInput, workspace: Workspace) -> ToolOutcome:
    pattern = params.pattern
    if pattern.startswith("/"):
        if params.path is not None:
            raise _Failed(
                "glob: absolute pattern not permitted; pass a relative pattern (and optionally path)"
            )
        base, pattern = _split_absolute_pattern(workspace, pattern)
    else:
        base = params.path or WORK_VIRTUAL
    parts = [part for part in pattern.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise _Failed("glob: '..' is not permitted in the pattern")
    if not parts:
        raise _Failed(f"glob: pattern {params.pattern!r} names no files")
    # Literal leading folders are opened directly (following symlinks that stay inside) rather
    # than walked to.
    literal = 0
    while literal < len(parts) - 1 and not _GLOB_MAGIC.search(parts[literal]):
        literal += 1
    try:
        matcher = GlobMatcher(parts[literal:])
    except re.error as error:
        raise _Failed(f"glob: invalid pattern: {error}") from None
    target = _target(workspace, "glob", posixpath.join(base, *parts[:literal]))

    def walk(root_fd: int) -> _Walk | None:
        def link_inside(relative: str) -> float | None:
            try:
                path = posixpath.join(target.relative, relative)
                with beneath.closing(beneath.open_beneath(root_fd, path, beneath.O_PATH)) as fd:
                    return os.fstat(fd).st_mtime
            except OSError:
                return None

        try:
            top = beneath.open_beneath(root_fd, target.relative, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            return None
        state = _Walk(matcher=matcher, link_inside=link_inside)
        with beneath.closing(top):
            state.scan(top, matcher.start)
        return state

    state = _open("glob", target, walk)
    if state is None or not state.matches:
        return ToolOutcome.text("no matches")
    state.matches.sort(key=lambda match: (-match[0], match[1]))
    lines = [posixpath.join(target.virtual, path) for _, path in state.matches]
    notes = []
    if len(lines) > GLOB_RESULT_LIMIT:
        notes.append(f"[showing the {GLOB_RESULT_LIMIT} newest of {len(lines)} matches]")
    if state.budget <= 0:
        notes.append(f"[stopped after {WALK_MAX_ENTRIES} entries; narrow the pattern or path]")
    return ToolOutcome.text("\n".join(lines[:GLOB_RESULT_LIMIT] + notes))


# --- grep ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Grep:
    executable: str
    syntax: str


_GREP: _Grep | None = None


async def _grep_program() -> _Grep:
    """GNU grep from the system folders, with PCRE (`-P`, closest to the SDK's regexes) when
    it was built with it, else extended regexes (`-E`); found once per process."""
    global _GREP
    if _GREP is None:
        executable = shutil.which("grep", path=_GREP_PATH)
        if executable is None:
            raise _Failed("grep: the grep program is not installed on this worker")
        status = await on_process_loop(_exit_status(executable, "-P", "-e", "x", "--", os.devnull))
        _GREP = _Grep(executable, "-P" if status == 1 else "-E")
    return _GREP


def _open_grep_start(target: HostPath) -> int:
    """The folder or file to search, opened beneath its root; grep gets this descriptor."""

    def opener(root_fd: int) -> int:
        fd = beneath.open_beneath(root_fd, target.relative, os.O_RDONLY)
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            os.close(fd)
            raise NotAllowed("not a regular file or directory")
        return fd

    return _open("grep", target, opener)


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> tuple[bytes, bool]:
    """Up to `limit` bytes of a stream, and whether there was more; stops reading there."""
    data = bytearray()
    while len(data) <= limit:
        chunk = await stream.read(_READ_CHUNK)
        if not chunk:
            return bytes(data), False
        data += chunk
    return bytes(data[:limit]), True


async def _drain(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Everything of a stream read, its first `limit` bytes kept (so the writer never blocks)."""
    data = bytearray()
    while chunk := await stream.read(_READ_CHUNK):
        data += chunk[: max(0, limit - len(data))]
    return bytes(data)


async def _grep(params: GrepInput, workspace: Workspace) -> ToolOutcome:
    target = _target(workspace, "grep", params.path or WORK_VIRTUAL)
    program = await _grep_program()
    fd = await asyncio.wait_for(_in_thread(_open_grep_start, target), FILE_TOOL_TIMEOUT)
    # grep opens the start by this name, which is the descriptor it inherited: the folder we
    # resolved, whatever is renamed meanwhile. Below it, `grep -r` follows no symlink.
    start = f"/proc/self/fd/{fd}"
    argv = [
        *_GREP_LIMITS,
        program.executable,
        "-r",
        "-n",
        "-H",
        "-I",
        "--devices=skip",
        "--color=never",
        "--exclude-dir=.git",
        "--exclude-dir=node_modules",
        program.syntax,
        "-e",
        params.pattern,
        "--",
        start,
    ]
    ran = await on_process_loop(_run_grep(argv, fd))
    if ran is None:
        return ToolOutcome.error(f"grep: timed out after {GREP_TIMEOUT:g} s")
    out, truncated, err, returncode = ran
    lines = [_grep_line(line, start, target.virtual) for line in _lines(out)]
    errors = [_grep_line(line, start, target.virtual) for line in _lines(err)]
    # grep names itself by the path it was started with; the agent needs only "grep".
    errors = [
        line.removeprefix(f"{program.executable}: ").removeprefix("grep: ") for line in errors
    ]
    if truncated:
        lines.append(f"[output truncated at {GREP_OUTPUT_LIMIT} bytes]")
    if not lines:
        if errors and returncode not in (0, 1):
            return ToolOutcome.error(to_virtual_text(workspace, "grep: " + "\n".join(errors)))
        return ToolOutcome.text("no matches")
    if errors and not truncated:
        lines += [f"[grep: {line}]" for line in errors]
    return ToolOutcome.text(to_virtual_text(workspace, "\n".join(lines)))


async def _exit_status(*argv: str) -> int:
    """A program's exit status, its output discarded (run on the process loop)."""
    probe = await asyncio.create_subprocess_exec(
        *argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return await probe.wait()


async def _run_grep(argv: list[str], fd: int) -> tuple[bytes, bool, bytes, int | None] | None:
    """grep started with the start's descriptor `fd` (closed here once it is passed on), its
    output capped, its errors; None when it timed out (run on the process loop)."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(fd,),
            cwd="/",
            env={"PATH": _GREP_PATH, "LC_ALL": "C.UTF-8"},
        )
    finally:
        os.close(fd)
    assert process.stdout is not None and process.stderr is not None
    stdout = process.stdout

    async def read_output() -> tuple[bytes, bool]:
        out, truncated = await _read_capped(stdout, GREP_OUTPUT_LIMIT)
        if truncated:
            # Enough: grep is stopped rather than left blocked on a full pipe.
            _kill(process)
        return out, truncated

    finished = False
    try:
        (out, truncated), err = await asyncio.wait_for(
            asyncio.gather(read_output(), _drain(process.stderr, _STDERR_LIMIT)), GREP_TIMEOUT
        )
        finished = True
    except TimeoutError:
        return None
    finally:
        if not finished:
            _kill(process)
        await process.wait()
    return out, truncated, err, process.returncode


def _kill(process: asyncio.subprocess.Process) -> None:
    """Stop a grep we no longer read from. Only called then: on a child that has exited,
    kill() polls and so reaps it, and the loop's child watcher reports a wrong exit code."""
    with suppress(ProcessLookupError):
        process.kill()


def _lines(data: bytes) -> Iterator[str]:
    yield from data.decode("utf-8", errors="replace").splitlines()


def _grep_line(line: str, start: str, virtual: str) -> str:
    """One line of grep's output with our descriptor's name replaced by the agent's path."""
    if line.startswith(start):
        line = virtual + line[len(start) :]
    elif line.startswith(f"grep: {start}"):
        line = f"grep: {virtual}{line[len('grep: ') + len(start) :]}"
    if len(line) > GREP_MAX_LINE_LENGTH:
        line = line[:GREP_MAX_LINE_LENGTH] + f" [line cut at {GREP_MAX_LINE_LENGTH} characters]"
    return line


# --- entry point -----------------------------------------------------------------------------

_IN_THREAD: dict[str, Callable[[Any, Workspace], ToolOutcome]] = {
    "read": _read,
    "write": _write,
    "edit": _edit,
    "glob": _glob,
}


def _run_sync(name: str, params: ToolInput, workspace: Workspace) -> ToolOutcome:
    try:
        return _IN_THREAD[name](params, workspace)
    except _Failed as failed:
        return ToolOutcome.error(str(failed))


async def run_file_tool(name: str, params: ToolInput, workspace: Workspace) -> ToolOutcome:
    """Run one file tool; every refusal or failure becomes an error outcome, never an exception.

    The filesystem work runs in a thread (grep in a subprocess), so the event loop, shared by
    every session on this worker, never waits on it.
    """
    try:
        if isinstance(params, GrepInput):
            return await _grep(params, workspace)
        return await asyncio.wait_for(
            _in_thread(_run_sync, name, params, workspace), FILE_TOOL_TIMEOUT
        )
    except _Failed as failed:
        return ToolOutcome.error(str(failed))
    except TimeoutError:
        return ToolOutcome.error(f"{name}: timed out after {FILE_TOOL_TIMEOUT:g} s")
    except OSError as error:
        return ToolOutcome.error(f"{name}: {(error.strerror or 'i/o error').lower()}")
