"""The file tools in a session workspace: the SDK's behaviour behind virtual paths, refusals,
and the attacks on them (symlink races, FIFOs, devices, hard links, catastrophic regexes)."""

from __future__ import annotations

import asyncio
import base64
import ctypes
import errno
import os
import platform
import socket
import stat
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from reverie.activities.tools import (
    Mount,
    ToolOutcome,
    Workspace,
    beneath,
    files,
    run_builtin_tool,
)
from reverie.activities.tools import files as files_module
from reverie.egress import EgressPolicy

LIMITED = EgressPolicy.for_networking("limited", [])
# A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace.for_session(tmp_path / "workspaces", "sesn_files")


async def run(workspace: Workspace, name: str, **tool_input: Any) -> ToolOutcome:
    outcome = await run_builtin_tool(name, tool_input, workspace, LIMITED, sandbox="none")
    # Whatever happened, the agent never sees where the workspace is on the host.
    assert str(workspace.root) not in repr(outcome.content)
    return outcome


def text(outcome: ToolOutcome) -> str:
    return "\n".join(block["text"] for block in outcome.content if block["type"] == "text")


def files_under(path: Path) -> set[Path]:
    return {p for p in path.rglob("*")}


# --- happy paths -----------------------------------------------------------------------------


async def test_for_session_creates_the_folders(workspace: Workspace) -> None:
    assert workspace.work_dir.is_dir() and workspace.outputs_dir.is_dir()
    assert workspace.state_dir.is_dir()
    assert workspace.work_dir == workspace.root / "sesn_files" / "work"


async def test_write_then_read(workspace: Workspace) -> None:
    written = await run(workspace, "write", file_path="notes/a.txt", content="alpha\nbeta\n")
    assert not written.is_error
    assert "/workspace/notes/a.txt" in text(written)
    assert (workspace.work_dir / "notes" / "a.txt").read_text() == "alpha\nbeta\n"
    read = await run(workspace, "read", file_path="/workspace/notes/a.txt")
    assert not read.is_error and text(read) == "alpha\nbeta\n"


async def test_read_with_view_range(workspace: Workspace) -> None:
    (workspace.work_dir / "lines.txt").write_text("".join(f"line {i}\n" for i in range(1, 11)))
    outcome = await run(workspace, "read", file_path="lines.txt", view_range=[3, 5])
    assert text(outcome) == "line 3\nline 4\nline 5"
    to_end = await run(workspace, "read", file_path="lines.txt", view_range=[9, -1])
    assert text(to_end).split("\n")[:2] == ["line 9", "line 10"]


async def test_read_image_gives_an_image_block(workspace: Workspace) -> None:
    (workspace.work_dir / "dot.png").write_bytes(PNG)
    outcome = await run(workspace, "read", file_path="dot.png")
    assert not outcome.is_error
    assert outcome.content[0]["type"] == "image"
    assert outcome.content[0]["source"]["media_type"] == "image/png"


async def test_empty_result_is_never_an_empty_text_block(workspace: Workspace) -> None:
    (workspace.work_dir / "empty.txt").write_text("")
    outcome = await run(workspace, "read", file_path="empty.txt")
    assert not outcome.is_error and text(outcome)


async def test_edit_unique_ambiguous_and_replace_all(workspace: Workspace) -> None:
    target = workspace.work_dir / "code.py"
    target.write_text("x = 1\ny = 1\nz = 2\n")
    unique = await run(
        workspace, "edit", file_path="code.py", old_string="z = 2", new_string="z = 3"
    )
    assert not unique.is_error
    assert target.read_text() == "x = 1\ny = 1\nz = 3\n"

    ambiguous = await run(
        workspace, "edit", file_path="code.py", old_string="= 1", new_string="= 9"
    )
    assert ambiguous.is_error and "2 times" in text(ambiguous)
    assert target.read_text() == "x = 1\ny = 1\nz = 3\n"

    every = await run(
        workspace, "edit", file_path="code.py", old_string="= 1", new_string="= 9", replace_all=True
    )
    assert not every.is_error
    assert target.read_text() == "x = 9\ny = 9\nz = 3\n"

    missing = await run(workspace, "edit", file_path="code.py", old_string="nope", new_string="")
    assert missing.is_error and "not found" in text(missing)


async def test_glob_and_grep_answer_in_virtual_paths(workspace: Workspace) -> None:
    (workspace.work_dir / "src" / "pkg").mkdir(parents=True)
    (workspace.work_dir / "src" / "pkg" / "mod.py").write_text("def hello():\n    return 42\n")
    (workspace.work_dir / "README.md").write_text("hello world\n")

    found = await run(workspace, "glob", pattern="**/*.py")
    assert text(found) == "/workspace/src/pkg/mod.py"
    absolute = await run(workspace, "glob", pattern="/workspace/src/**/*.py")
    assert text(absolute) == "/workspace/src/pkg/mod.py"
    none = await run(workspace, "glob", pattern="*.rs")
    assert not none.is_error and text(none) == "no matches"

    hits = await run(workspace, "grep", pattern="hel+o")
    assert set(text(hits).splitlines()) == {
        "/workspace/src/pkg/mod.py:1:def hello():",
        "/workspace/README.md:1:hello world",
    }
    scoped = await run(workspace, "grep", pattern="return", path="/workspace/src")
    assert text(scoped) == "/workspace/src/pkg/mod.py:2:    return 42"


async def test_write_to_outputs_lands_in_outputs_dir(workspace: Workspace) -> None:
    outcome = await run(
        workspace, "write", file_path="/mnt/session/outputs/report.md", content="# Done\n"
    )
    assert not outcome.is_error
    assert "/mnt/session/outputs/report.md" in text(outcome)
    assert (workspace.outputs_dir / "report.md").read_text() == "# Done\n"
    listed = await run(workspace, "glob", pattern="*.md", path="/mnt/session/outputs")
    assert text(listed) == "/mnt/session/outputs/report.md"


# --- refusals --------------------------------------------------------------------------------


async def test_relative_escape_is_refused(workspace: Workspace, tmp_path: Path) -> None:
    before = files_under(tmp_path)
    for path in ("../escape.txt", "../../escape.txt", "sub/../../escape.txt"):
        outcome = await run(workspace, "write", file_path=path, content="x")
        assert outcome.is_error and "outside" in text(outcome), path
    assert files_under(tmp_path) == before


async def test_absolute_paths_elsewhere_are_refused(workspace: Workspace, tmp_path: Path) -> None:
    read = await run(workspace, "read", file_path="/etc/passwd")
    assert read.is_error and "outside" in text(read) and "root:" not in text(read)
    sneaky = await run(workspace, "read", file_path="/workspace/../etc/passwd")
    assert sneaky.is_error and "root:" not in text(sneaky)
    # A host path of the workspace itself is not a path the agent has.
    host_path = str(workspace.work_dir / "x")
    host = await run_builtin_tool(
        "read", {"file_path": host_path}, workspace, LIMITED, sandbox="none"
    )
    assert host.is_error

    target = Path("/tmp") / f"reverie-test-{uuid.uuid4().hex}"
    write = await run(workspace, "write", file_path=str(target), content="x")
    assert write.is_error and not target.exists()
    grep = await run(workspace, "grep", pattern="root", path="/etc")
    assert grep.is_error
    glob = await run(workspace, "glob", pattern="/etc/*")
    assert glob.is_error
    assert not (tmp_path / "escape.txt").exists()


async def test_symlink_out_of_the_workspace_is_refused(
    workspace: Workspace, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.txt"
    secret.write_text("top secret\n")
    (workspace.work_dir / "link.txt").symlink_to(secret)
    (workspace.work_dir / "linkdir").symlink_to(outside)

    read = await run(workspace, "read", file_path="link.txt")
    assert read.is_error and "top secret" not in text(read)
    write = await run(workspace, "write", file_path="link.txt", content="overwritten")
    assert write.is_error
    edit = await run(workspace, "edit", file_path="link.txt", old_string="top", new_string="no")
    assert edit.is_error
    into_dir = await run(workspace, "write", file_path="linkdir/new.txt", content="x")
    assert into_dir.is_error

    assert secret.read_text() == "top secret\n"
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    grep = await run(workspace, "grep", pattern="secret")
    assert "top secret" not in text(grep)


async def test_read_only_mount_refuses_write_and_edit(workspace: Workspace, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "fact.md").write_text("the sky is blue\n")
    writable = tmp_path / "scratch"
    writable.mkdir()
    mounted = Workspace.for_session(
        workspace.root,
        workspace.session_id,
        [
            Mount(host_path=store, virtual_path="/mnt/memory/facts", read_only=True),
            Mount(host_path=writable, virtual_path="/mnt/memory/scratch", read_only=False),
        ],
    )
    read = await run(mounted, "read", file_path="/mnt/memory/facts/fact.md")
    assert not read.is_error and text(read) == "the sky is blue\n"

    write = await run(mounted, "write", file_path="/mnt/memory/facts/new.md", content="x")
    assert write.is_error and "read-only" in text(write)
    edit = await run(
        mounted, "edit", file_path="/mnt/memory/facts/fact.md", old_string="blue", new_string="red"
    )
    assert edit.is_error and "read-only" in text(edit)
    # Nor through a symlink in the work folder (the SDK checks the resolved target).
    (mounted.work_dir / "facts").symlink_to(store)
    via_link = await run(mounted, "write", file_path="facts/fact.md", content="x")
    assert via_link.is_error

    assert sorted(p.name for p in store.iterdir()) == ["fact.md"]
    assert (store / "fact.md").read_text() == "the sky is blue\n"

    ok = await run(mounted, "write", file_path="/mnt/memory/scratch/todo.md", content="- a\n")
    assert not ok.is_error and "/mnt/memory/scratch/todo.md" in text(ok)
    assert (writable / "todo.md").read_text() == "- a\n"


# --- inputs ----------------------------------------------------------------------------------


async def test_invalid_inputs_and_unknown_tools_are_error_outcomes(workspace: Workspace) -> None:
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("read", {}, "file_path"),
        ("read", {"file_path": 7}, "file_path"),
        ("read", {"file_path": "a", "view_range": [1]}, "view_range"),
        ("write", {"file_path": "a"}, "content"),
        ("edit", {"file_path": "a", "old_string": "x"}, "new_string"),
        ("glob", {"pattern": "*", "colour": "red"}, "colour"),
        ("bash", {"timeout_ms": -1, "command": "true"}, "timeout_ms"),
        ("nonsense", {}, "unknown tool"),
        ("web_search", {"query": "x"}, "search provider"),
    ]
    for name, tool_input, expected in cases:
        outcome = await run_builtin_tool(name, tool_input, workspace, LIMITED, sandbox="none")
        assert outcome.is_error, (name, tool_input)
        assert expected in text(outcome), (name, text(outcome))


def test_workspace_refuses_bad_ids_and_mounts(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Workspace.for_session(tmp_path, "../other")
    with pytest.raises(ValueError):
        Mount(host_path=tmp_path, virtual_path="/etc/memory", read_only=True)
    with pytest.raises(ValueError):
        Mount(host_path=tmp_path, virtual_path="/mnt/session/outputs/x", read_only=True)
    with pytest.raises(ValueError):
        Mount(host_path=tmp_path, virtual_path="/mnt/memory/../x", read_only=True)


# --- attacks on the file tools ---------------------------------------------------------------
#
# The model is an attacker: its `bash` runs in the same workspace, and one model answer can hold
# a command that keeps swapping a folder for a symlink next to dozens of file tool calls.


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each attack test runs with the kernel's openat2 and with the O_NOFOLLOW walk that
    stands in for it where openat2 is unavailable."""
    if request.param == "openat2":
        if not beneath.openat2_available():
            pytest.skip("openat2 is not available here")
        monkeypatch.setattr(beneath, "_OPENAT2", True)
    else:
        monkeypatch.setattr(beneath, "_OPENAT2", False)
    return str(request.param)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the workspace (another session's, or the host's) with a secret in it."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "f.txt").write_text("OUTSIDE SECRET\n")
    return folder


class LoopWatch:
    """The longest the event loop went without running a 10 ms ticker: a tool that blocks the
    loop (and so every session on the worker) shows up as a long gap."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._last = time.monotonic()

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(0.01)
            self._gap()

    def _gap(self) -> None:
        now = time.monotonic()
        self.longest = max(self.longest, now - self._last)
        self._last = now


@asynccontextmanager
async def watched_loop() -> AsyncIterator[LoopWatch]:
    watch = LoopWatch()
    task = asyncio.create_task(watch.tick())
    await asyncio.sleep(0.02)
    try:
        yield watch
    finally:
        watch._gap()
        task.cancel()


def _renameat2() -> Any:
    libc = ctypes.CDLL(None, use_errno=True)
    if hasattr(libc, "renameat2"):
        call = libc.renameat2
        return lambda a, b: call(-100, os.fsencode(a), -100, os.fsencode(b), 2)
    number = {"x86_64": 316, "aarch64": 276}.get(platform.machine())
    if number is None:
        pytest.skip("no renameat2 here")
    return lambda a, b: libc.syscall(number, -100, os.fsencode(a), -100, os.fsencode(b), 2)


@pytest.fixture
def swapping(workspace: Workspace, outside: Path) -> Iterator[threading.Event]:
    """`/workspace/d/f.txt` says "inside", while a thread keeps exchanging the folder `d` with a
    symlink to `outside` (renameat2 RENAME_EXCHANGE, as the attacker's bash would)."""
    real = workspace.work_dir / "d"
    real.mkdir()
    (real / "f.txt").write_text("inside\n")
    link = workspace.work_dir / "l"
    link.symlink_to(outside)
    exchange = _renameat2()
    if exchange(real, link) != 0 or exchange(real, link) != 0:
        pytest.skip(f"renameat2 exchange fails here: {os.strerror(ctypes.get_errno())}")
    stop = threading.Event()
    swaps = 0

    def swap() -> None:
        nonlocal swaps
        while not stop.is_set():
            exchange(real, link)
            swaps += 1

    thread = threading.Thread(target=swap, daemon=True)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join()
    assert swaps > 100


@pytest.mark.timeout(60)
async def test_race_swapping_a_folder_for_a_symlink_never_reaches_outside(
    workspace: Workspace, outside: Path, swapping: threading.Event, resolver: str
) -> None:
    async def many(name: str, count: int, **tool_input: Any) -> list[ToolOutcome]:
        outcomes: list[ToolOutcome] = []
        for _ in range(count // 20):
            outcomes += await asyncio.gather(
                *(run(workspace, name, **tool_input) for _ in range(20))
            )
        return outcomes

    reads = await many("read", 200, file_path="d/f.txt")
    assert not any("OUTSIDE" in text(o) for o in reads)
    assert all(o.is_error or text(o) == "inside\n" for o in reads)

    writes = await many("write", 200, file_path="d/f.txt", content="written\n")
    edits = await many("edit", 100, file_path="d/f.txt", old_string="SECRET", new_string="pwned")
    greps = await many("grep", 40, pattern="SECRET|inside|written", path="d")
    globs = await many("glob", 40, pattern="d/*")
    swapping.set()

    assert all(o.is_error or text(o) == "wrote 8 bytes to /workspace/d/f.txt" for o in writes)
    assert all("not found" in text(o) or "symbolic link" in text(o) for o in edits), {
        text(o) for o in edits
    }
    assert not any("SECRET" in text(o) for o in greps)
    assert all("/workspace/d/f.txt" in text(o) or o.is_error for o in globs)
    assert (outside / "f.txt").read_text() == "OUTSIDE SECRET\n"
    assert sorted(p.name for p in outside.iterdir()) == ["f.txt"]


@pytest.mark.timeout(10)
async def test_fifo_is_refused_at_once_and_the_loop_keeps_running(
    workspace: Workspace, resolver: str
) -> None:
    os.mkfifo(workspace.work_dir / "f")
    async with watched_loop() as watch:
        started = time.monotonic()
        write = await run(workspace, "write", file_path="f", content="x")
        read = await run(workspace, "read", file_path="f")
        edit = await run(workspace, "edit", file_path="f", old_string="x", new_string="y")
        grep = await run(workspace, "grep", pattern="x", path="f")
        found = await run(workspace, "grep", pattern="x")
        elapsed = time.monotonic() - started
    for outcome in (write, read, edit, grep):
        assert outcome.is_error and "not a regular file" in text(outcome), text(outcome)
    assert text(found) == "no matches"
    assert elapsed < 5 and watch.longest < 1.0
    assert stat.S_ISFIFO(os.lstat(workspace.work_dir / "f").st_mode)


async def test_socket_and_device_are_not_read(workspace: Workspace, resolver: str) -> None:
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind(str(workspace.work_dir / "sock"))
        server.listen()
        for name, tool_input in [
            ("read", {"file_path": "sock"}),
            ("write", {"file_path": "sock", "content": "x"}),
        ]:
            outcome = await run(workspace, name, **tool_input)
            assert outcome.is_error and "not a regular file" in text(outcome)
    finally:
        server.close()
    try:
        os.mknod(workspace.work_dir / "zero", stat.S_IFCHR | 0o666, os.makedev(1, 5))
    except PermissionError:
        pytest.skip("cannot make a device node here (not root)")
    read = await run(workspace, "read", file_path="zero")
    assert read.is_error and "not a regular file (a device)" in text(read)
    write = await run(workspace, "write", file_path="zero", content="x")
    assert write.is_error and "not a regular file" in text(write)
    assert text(await run(workspace, "grep", pattern="x")) == "no matches"


async def test_symlinks_out_are_refused_by_every_tool_and_inside_ones_followed(
    workspace: Workspace, outside: Path, resolver: str
) -> None:
    work = workspace.work_dir
    (work / "abs").symlink_to(outside)
    (work / "abs.txt").symlink_to(outside / "f.txt")
    (work / "up").symlink_to("../../../outside")
    (work / "real").mkdir()
    (work / "real" / "in.txt").write_text("inside text\n")
    (work / "rel").symlink_to("real")
    (work / "sub").mkdir()
    (work / "sub" / "back.txt").symlink_to("../real/in.txt")

    for path in ("abs/f.txt", "abs.txt", "up/f.txt"):
        read = await run(workspace, "read", file_path=path)
        assert read.is_error and "OUTSIDE" not in text(read)
        assert "symbolic link leading outside /workspace" in text(read), text(read)
        write = await run(workspace, "write", file_path=path, content="x")
        assert write.is_error and "symbolic link" in text(write)
        edit = await run(workspace, "edit", file_path=path, old_string="O", new_string="x")
        assert edit.is_error and "symbolic link" in text(edit)
    made = await run(workspace, "write", file_path="abs/new/deeper.txt", content="x")
    assert made.is_error
    assert sorted(p.name for p in outside.iterdir()) == ["f.txt"]
    assert (outside / "f.txt").read_text() == "OUTSIDE SECRET\n"

    listed = text(await run(workspace, "glob", pattern="**/*.txt"))
    assert "f.txt" not in listed and "abs.txt" not in listed
    assert set(listed.splitlines()) == {"/workspace/real/in.txt", "/workspace/sub/back.txt"}
    assert (await run(workspace, "glob", pattern="abs/*")).is_error
    searched = text(await run(workspace, "grep", pattern="SECRET|inside"))
    assert "SECRET" not in searched and "/workspace/real/in.txt:1:inside text" in searched
    assert (await run(workspace, "grep", pattern="SECRET", path="abs")).is_error

    # Symlinks that stay inside the workspace are followed.
    assert text(await run(workspace, "read", file_path="rel/in.txt")) == "inside text\n"
    assert text(await run(workspace, "read", file_path="sub/back.txt")) == "inside text\n"
    assert text(await run(workspace, "glob", pattern="rel/*")) == "/workspace/rel/in.txt"
    grep = await run(workspace, "grep", pattern="inside", path="rel")
    assert text(grep) == "/workspace/rel/in.txt:1:inside text"
    edited = await run(
        workspace, "edit", file_path="sub/back.txt", old_string="inside", new_string="still in"
    )
    assert not edited.is_error
    written = await run(workspace, "write", file_path="rel/new/made.txt", content="new\n")
    assert not written.is_error
    assert (work / "real" / "in.txt").read_text() == "still in text\n"
    assert (work / "real" / "new" / "made.txt").read_text() == "new\n"


async def test_dangling_symlink_out_is_not_written_through(
    workspace: Workspace, outside: Path, resolver: str
) -> None:
    (workspace.work_dir / "abs").symlink_to(outside / "created.txt")
    (workspace.work_dir / "rel").symlink_to("../../../outside/created.txt")
    (workspace.work_dir / "dir").symlink_to(outside / "made")
    for path in ("abs", "rel", "dir/x.txt"):
        outcome = await run(workspace, "write", file_path=path, content="x")
        assert outcome.is_error and "symbolic link" in text(outcome), text(outcome)
    assert sorted(p.name for p in outside.iterdir()) == ["f.txt"]
    # One pointing inside is written through, like a shell would.
    (workspace.work_dir / "inside").symlink_to("target.txt")
    assert not (await run(workspace, "write", file_path="inside", content="ok")).is_error
    assert (workspace.work_dir / "target.txt").read_text() == "ok"


async def test_hard_link_is_not_written(workspace: Workspace, outside: Path) -> None:
    os.link(outside / "f.txt", workspace.work_dir / "h.txt")
    write = await run(workspace, "write", file_path="h.txt", content="x")
    assert write.is_error and "hard links" in text(write)
    edit = await run(workspace, "edit", file_path="h.txt", old_string="SECRET", new_string="x")
    assert edit.is_error and "hard links" in text(edit)
    assert (outside / "f.txt").read_text() == "OUTSIDE SECRET\n"


@pytest.mark.timeout(30)
async def test_catastrophic_regex_does_not_stall_the_worker(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "GREP_TIMEOUT", 3.0)
    # Under the SDK's 2000-character line cap, so its in-process `re` would have tried it.
    (workspace.work_dir / "a.txt").write_text("a" * 1000 + "b\n")
    async with watched_loop() as watch:
        started = time.monotonic()
        outcome = await run(workspace, "grep", pattern="(a+)+$")
        elapsed = time.monotonic() - started
    # PCRE gives up on its own or grep is killed at the deadline; either way, no match.
    assert "a.txt:1" not in text(outcome)
    assert elapsed < files.GREP_TIMEOUT + 2 and watch.longest < 1.0


@pytest.mark.timeout(20)
async def test_grep_past_its_timeout_is_killed(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    slow = tmp_path / "slow-grep"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    monkeypatch.setattr(files, "_GREP", files._Grep(str(slow), "-P"))
    monkeypatch.setattr(files, "GREP_TIMEOUT", 0.5)
    async with watched_loop() as watch:
        started = time.monotonic()
        outcome = await run(workspace, "grep", pattern="x")
        elapsed = time.monotonic() - started
    assert outcome.is_error and text(outcome) == "grep: timed out after 0.5 s"
    assert elapsed < 3 and watch.longest < 1.0


async def test_file_tool_past_its_deadline_answers_with_an_error(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    def stuck(params: Any, workspace: Workspace) -> ToolOutcome:
        time.sleep(1)
        return ToolOutcome.text("too late")

    monkeypatch.setitem(files._IN_THREAD, "read", stuck)
    monkeypatch.setattr(files, "FILE_TOOL_TIMEOUT", 0.2)
    outcome = await run(workspace, "read", file_path="x")
    assert outcome.is_error and text(outcome) == "read: timed out after 0.2 s"


# --- behaviour kept from the SDK -------------------------------------------------------------


async def test_large_file_needs_view_range(workspace: Workspace) -> None:
    lines = [f"{i:07d} " + "x" * 92 for i in range(1, 4001)]
    (workspace.work_dir / "big.txt").write_text("\n".join(lines) + "\n")
    whole = await run(workspace, "read", file_path="big.txt")
    assert whole.is_error and "exceeds 262144-byte limit" in text(whole)
    assert "view_range" in text(whole)
    part = await run(workspace, "read", file_path="big.txt", view_range=[2, 3])
    assert text(part) == "\n".join(lines[1:3])
    tail = await run(workspace, "read", file_path="big.txt", view_range=[4000, -1])
    assert text(tail) == lines[-1] + "\n"
    huge = await run(workspace, "read", file_path="big.txt", view_range=[1, -1])
    assert huge.is_error and "Narrow the view_range" in text(huge)
    edit = await run(workspace, "edit", file_path="big.txt", old_string="x", new_string="y")
    assert edit.is_error and "cannot modify a file this large" in text(edit)


async def test_binary_and_pdf_reads(workspace: Workspace) -> None:
    (workspace.work_dir / "doc.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    pdf = await run(workspace, "read", file_path="doc.pdf")
    assert pdf.content[0]["type"] == "document"
    assert base64.b64decode(pdf.content[0]["source"]["data"]) == b"%PDF-1.4\n%%EOF\n"
    ranged = await run(workspace, "read", file_path="doc.pdf", view_range=[1, 2])
    assert ranged.is_error and "not supported for image/PDF" in text(ranged)
    (workspace.work_dir / "blob.bin").write_bytes(b"\xff\xfe\x00")
    blob = await run(workspace, "read", file_path="blob.bin")
    assert blob.is_error and "not valid UTF-8 text" in text(blob)


async def test_glob_patterns(workspace: Workspace) -> None:
    work = workspace.work_dir
    for name in ("a.py", "b.py", "c.txt", ".hidden.py", "x/y/z.py", "x/[odd].md", "ab1.py"):
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_text("")

    async def names(pattern: str, **extra: Any) -> set[str]:
        outcome = await run(workspace, "glob", pattern=pattern, **extra)
        assert not outcome.is_error, text(outcome)
        return set() if text(outcome) == "no matches" else set(text(outcome).splitlines())

    w = "/workspace/"
    assert await names("*.py") == {w + "a.py", w + "b.py", w + ".hidden.py", w + "ab1.py"}
    assert await names("?.py") == {w + "a.py", w + "b.py"}
    assert await names("[ab].py") == {w + "a.py", w + "b.py"}
    assert await names("[!a].py") == {w + "b.py"}
    assert await names("ab[0-9].py") == {w + "ab1.py"}
    assert await names("**/z.py") == {w + "x/y/z.py"}
    assert await names("x/**") == {w + "x/y", w + "x/y/z.py", w + "x/[odd].md"}
    assert await names("x/*/*.py") == {w + "x/y/z.py"}
    assert await names("*.md") == set()
    assert await names("x/[[]odd].md") == {w + "x/[odd].md"}
    assert await names("*.py", path="x/y") == {w + "x/y/z.py"}
    assert await names("missing/*") == set()
    dotdot = await run(workspace, "glob", pattern="x/../*")
    assert dotdot.is_error and "'..' is not permitted" in text(dotdot)
    both = await run(workspace, "glob", pattern="/workspace/*", path="/workspace")
    assert both.is_error and "absolute pattern" in text(both)


async def test_glob_lists_newest_first_and_at_most_200(workspace: Workspace) -> None:
    for i in range(250):
        path = workspace.work_dir / f"f{i:03d}.txt"
        path.write_text("")
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    listed = text(await run(workspace, "glob", pattern="*.txt")).splitlines()
    assert listed[0] == "/workspace/f249.txt" and listed[199] == "/workspace/f050.txt"
    assert listed[200:] == ["[showing the 200 newest of 250 matches]"]


async def test_grep_output_is_capped_and_bad_patterns_are_errors(workspace: Workspace) -> None:
    (workspace.work_dir / "many.txt").write_text("match this line\n" * 20_000)
    capped = text(await run(workspace, "grep", pattern="match"))
    assert capped.endswith(f"[output truncated at {files.GREP_OUTPUT_LIMIT} bytes]")
    assert len(capped) < files.GREP_OUTPUT_LIMIT * 2
    assert capped.startswith("/workspace/many.txt:1:match this line\n")
    bad = await run(workspace, "grep", pattern="(unclosed")
    assert bad.is_error and text(bad).startswith("grep: ") and "/usr" not in text(bad)
    dash = await run(workspace, "grep", pattern="-v")
    assert not dash.is_error and text(dash) == "no matches"


def test_beneath_refuses_escapes_without_openat2(tmp_path: Path) -> None:
    """The walk alone: `..` past the root, absolute links and loops are refused."""
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "f").write_text("x")
    (root / "loop").symlink_to("loop")
    (root / "a" / "up").symlink_to("../a/f")
    with beneath.opened_root(root) as fd:
        for path, code in [("a/../..", errno.EXDEV), ("loop", errno.ELOOP)]:
            with pytest.raises(OSError) as raised:
                beneath._walk(fd, path, os.O_RDONLY, 0)
            assert raised.value.errno == code
        with beneath.closing(beneath._walk(fd, "a/up", os.O_RDONLY, 0)) as opened:
            assert os.read(opened, 10) == b"x"
        with pytest.raises(NotADirectoryError):
            beneath._walk(fd, "a/up/", os.O_RDONLY, 0)


@pytest.mark.timeout(20)
async def test_hostile_glob_patterns_stay_fast(workspace: Workspace) -> None:
    deep = workspace.work_dir.joinpath(*["a"] * 40)
    deep.mkdir(parents=True)
    (deep / ("a" * 200)).write_text("")
    async with watched_loop() as watch:
        started = time.monotonic()
        stars = await run(workspace, "glob", pattern="**/" + "*a" * 30 + "*b")
        nested = await run(workspace, "glob", pattern="/".join(["**", "a"] * 20) + "/x")
        elapsed = time.monotonic() - started
    assert text(stars) == "no matches" and text(nested) == "no matches"
    assert elapsed < 5 and watch.longest < 1.0
    found = await run(workspace, "glob", pattern="**/" + "*a" * 30 + "*")
    assert text(found) == "/workspace/" + "a/" * 40 + "a" * 200


async def test_view_range_scan_is_bounded_on_a_sparse_file(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sparse file of terabytes without a newline must not keep a thread reading zeros."""
    monkeypatch.setattr(files_module, "MAX_SCAN_BYTES", 4 * 1024 * 1024)
    with open(workspace.work_dir / "sparse.bin", "wb") as sparse:
        sparse.truncate(1024**4)  # 1 TiB of holes
    outcome = await run(workspace, "read", file_path="sparse.bin", view_range=[2, 2])
    assert outcome.is_error and "is not within the first 4,194,304 bytes" in text(outcome)


async def test_grep_memory_is_bounded(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    """grep runs in the worker: a line of gigabytes must not take the host's memory. With a
    50 MB bound and a 120 MB line, grep gives up instead."""
    if not os.access("/usr/bin/prlimit", os.X_OK):
        pytest.skip("prlimit (util-linux) is missing")
    monkeypatch.setattr(files_module, "_GREP_LIMITS", ["/usr/bin/prlimit", "--as=50000000", "--"])
    with open(workspace.work_dir / "line.txt", "wb") as line:
        line.write(b"a" * 120_000_000)
    outcome = await run(workspace, "grep", pattern="b")
    assert outcome.is_error and "memory exhausted" in text(outcome), text(outcome)


async def test_edit_cannot_blow_a_file_up(workspace: Workspace) -> None:
    """`replace_all` of one character by 4 KiB over a 256 KiB file would build a gigabyte in
    the worker's memory: refused before any replacing, and the file is left as it was."""
    (workspace.work_dir / "a.txt").write_text("a" * 256 * 1024)
    outcome = await run(
        workspace,
        "edit",
        file_path="a.txt",
        old_string="a",
        new_string="B" * 4096,
        replace_all=True,
    )
    assert outcome.is_error and "over the edit tool's limit" in text(outcome)
    assert (workspace.work_dir / "a.txt").read_text() == "a" * 256 * 1024
