"""The file tools in a session workspace: the SDK's behaviour behind virtual paths, and refusals."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import Any

import pytest

from reverie.activities.tools import (
    Mount,
    Networking,
    ToolOutcome,
    Workspace,
    run_builtin_tool,
)

LIMITED = Networking(type="limited")
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
