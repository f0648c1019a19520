"""The bash tool: one shell per session rebuilt from saved state, deadlines, output caps, sandbox.

Tests marked `needs_bwrap` run only where `detect_sandbox` finds a working bubblewrap; the
others run unsandboxed too (`none`), which is also what machines without bubblewrap use.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from reverie.activities.tools import (
    Mount,
    SandboxMode,
    SandboxUnavailableError,
    ToolOutcome,
    Workspace,
    detect_sandbox,
    run_builtin_tool,
)
from reverie.activities.tools import sandbox as sandbox_module
from reverie.egress import EgressPolicy
from tests.sandbox_support import needs_bwrap

MODES = [
    pytest.param("none", id="none"),
    pytest.param("bwrap", id="bwrap", marks=needs_bwrap),
]
LIMITED = EgressPolicy.for_networking("limited", ["127.0.0.1"])
UNRESTRICTED = EgressPolicy.for_networking("unrestricted", [])


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace.for_session(tmp_path / "workspaces", "sesn_bash")


async def bash(
    workspace: Workspace,
    mode: SandboxMode,
    command: str | None = None,
    networking: EgressPolicy = LIMITED,
    **extra: Any,
) -> ToolOutcome:
    tool_input = {"command": command, **extra} if command is not None else extra
    return await run_builtin_tool("bash", tool_input, workspace, networking, sandbox=mode)


def text(outcome: ToolOutcome) -> str:
    return outcome.content[0]["text"]


# --- one shell per session -------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_cd_and_export_carry_over(workspace: Workspace, mode: SandboxMode) -> None:
    first = await bash(workspace, mode, "mkdir -p a/b && cd a/b && export GREETING='hi there'")
    assert not first.is_error, text(first)
    second = await bash(workspace, mode, 'basename "$PWD"; echo "$GREETING"')
    assert text(second) == "b\nhi there"
    await bash(workspace, mode, "cd ..; unset GREETING; export OTHER=1")
    third = await bash(workspace, mode, 'basename "$PWD"; echo "[$GREETING] $OTHER"')
    assert text(third) == "a\n[] 1"


@pytest.mark.parametrize("mode", MODES)
async def test_state_survives_a_new_workspace_object(
    workspace: Workspace, mode: SandboxMode
) -> None:
    await bash(workspace, mode, "mkdir -p deep && cd deep && export TOKEN=abc123")
    # A worker restart: nothing in memory, the same session folder.
    restarted = Workspace.for_session(workspace.root, workspace.session_id)
    outcome = await bash(restarted, mode, 'basename "$PWD"; echo "$TOKEN"')
    assert text(outcome) == "deep\nabc123"


@pytest.mark.parametrize("mode", MODES)
async def test_restart_resets_the_shell(workspace: Workspace, mode: SandboxMode) -> None:
    await bash(workspace, mode, "mkdir -p sub && cd sub && export FLAG=on")
    restarted = await bash(workspace, mode, restart=True)
    assert not restarted.is_error and "restarted" in text(restarted)
    outcome = await bash(workspace, mode, 'echo "$PWD|${FLAG:-off}"')
    home = "/workspace" if mode == "bwrap" else str(workspace.work_dir)
    assert text(outcome) == f"{home}|off"


@pytest.mark.parametrize("mode", MODES)
async def test_exit_status_is_reported_not_an_error(
    workspace: Workspace, mode: SandboxMode
) -> None:
    outcome = await bash(workspace, mode, "echo out; echo err >&2; exit 2")
    assert not outcome.is_error
    assert text(outcome) == "out\nerr\nexit code: 2"
    missing = await bash(workspace, mode, "no_such_command_xyz")
    assert "bash: line 1: no_such_command_xyz: command not found" in text(missing)
    assert text(missing).endswith("exit code: 127")
    # `exit` still saves the state.
    await bash(workspace, mode, "mkdir -p kept && cd kept && exit 1")
    assert text(await bash(workspace, mode, 'basename "$PWD"')) == "kept"


@pytest.mark.parametrize("mode", MODES)
async def test_no_output_is_still_a_text_block(workspace: Workspace, mode: SandboxMode) -> None:
    assert text(await bash(workspace, mode, "true")) == "(no output)"


@pytest.mark.parametrize("mode", MODES)
async def test_worker_environment_does_not_leak(
    workspace: Workspace, mode: SandboxMode, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-very-secret")
    monkeypatch.setenv("DATABASE_URL", "postgres://secret")
    outcome = await bash(workspace, mode, "env")
    assert "secret" not in text(outcome)
    assert "WORKSPACE=" in text(outcome)


# --- deadlines and output --------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
async def test_timeout_kills_the_command_and_its_children(
    workspace: Workspace, mode: SandboxMode
) -> None:
    started = time.monotonic()
    outcome = await bash(
        workspace, mode, "echo begun; (sleep 0.5; echo late > late.txt) & sleep 30", timeout_ms=300
    )
    assert time.monotonic() - started < 2
    assert outcome.is_error
    assert text(outcome) == "begun\ntimed out after 300 ms"
    await asyncio.sleep(0.7)
    assert not (workspace.work_dir / "late.txt").exists()


@pytest.mark.parametrize("mode", MODES)
async def test_background_jobs_end_with_the_call(workspace: Workspace, mode: SandboxMode) -> None:
    started = time.monotonic()
    outcome = await bash(workspace, mode, "(sleep 0.3; echo late > bg.txt) & echo started")
    assert text(outcome) == "started"
    assert time.monotonic() - started < 0.3
    await asyncio.sleep(0.5)
    assert not (workspace.work_dir / "bg.txt").exists()


@pytest.mark.parametrize("mode", MODES)
async def test_cancellation_kills_the_command(workspace: Workspace, mode: SandboxMode) -> None:
    task = asyncio.ensure_future(bash(workspace, mode, "sleep 0.5; echo late > cancelled.txt"))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.5)
    assert not (workspace.work_dir / "cancelled.txt").exists()


async def test_output_is_capped_with_a_note(workspace: Workspace) -> None:
    command = "head -c 300000 /dev/zero | tr '\\0' a; echo; echo THE-END"
    outcome = await bash(workspace, "none", command)
    body = text(outcome)
    assert len(body) < 101 * 1024
    assert "[output cut: 197,609 of 300,009 bytes dropped here" in body
    assert body.startswith("aaaa") and body.endswith("THE-END")


async def test_heartbeat_while_running(workspace: Workspace) -> None:
    beats = 0

    def beat() -> None:
        nonlocal beats
        beats += 1

    tool_input = {"command": "sleep 1.15"}
    await run_builtin_tool("bash", tool_input, workspace, LIMITED, sandbox="none", heartbeat=beat)
    assert beats >= 1


async def test_unsandboxed_mode_explains_virtual_paths(workspace: Workspace) -> None:
    outcome = await bash(workspace, "none", "ls /workspace")
    assert "without a sandbox" in text(outcome)


async def test_command_or_restart_is_required(workspace: Workspace) -> None:
    outcome = await bash(workspace, "none")
    assert outcome.is_error and "command is required" in text(outcome)


# --- the sandbox -----------------------------------------------------------------------------


@needs_bwrap
async def test_sandbox_system_is_read_only(workspace: Workspace, tmp_path: Path) -> None:
    name = f"reverie-test-{uuid.uuid4().hex}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outcome = await bash(
        workspace,
        "bwrap",
        f"touch /etc/{name} 2>/dev/null; echo $?; touch /var/tmp/{name} 2>/dev/null; echo $?; "
        f"(echo x > {elsewhere}/{name}) 2>/dev/null; echo $?",
    )
    assert text(outcome) == "1\n1\n1"
    assert not Path(f"/etc/{name}").exists()
    assert not Path(f"/var/tmp/{name}").exists()
    assert list(elsewhere.iterdir()) == []


@needs_bwrap
async def test_sandbox_session_folders_are_writable(workspace: Workspace) -> None:
    outcome = await bash(
        workspace,
        "bwrap",
        "echo w > /workspace/w.txt && echo o > /mnt/session/outputs/o.txt && echo ok",
    )
    assert text(outcome) == "ok"
    assert (workspace.work_dir / "w.txt").read_text() == "w\n"
    assert (workspace.outputs_dir / "o.txt").read_text() == "o\n"


@needs_bwrap
async def test_sandbox_hides_other_sessions_and_hidden_folders(tmp_path: Path) -> None:
    secret_home = tmp_path / "reverie-home"
    secret_home.mkdir()
    (secret_home / "stack.json").write_text("{}")
    other = Workspace.for_session(tmp_path / "workspaces", "sesn_other")
    (other.work_dir / "private.txt").write_text("other session's data")
    mine = Workspace.for_session(tmp_path / "workspaces", "sesn_mine", hidden=[secret_home])

    outcome = await bash(
        mine,
        "bwrap",
        f"ls -A {mine.root} 2>/dev/null | wc -l; ls -A {secret_home} 2>/dev/null | wc -l; "
        f"cat {other.work_dir}/private.txt 2>/dev/null || echo hidden; ls -A /workspace | wc -l",
    )
    assert text(outcome) == "0\n0\nhidden\n0"


@needs_bwrap
async def test_sandbox_mounts_by_access(workspace: Workspace, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    (store / "fact.md").write_text("fact\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    mounted = Workspace.for_session(
        workspace.root,
        workspace.session_id,
        [
            Mount(host_path=store, virtual_path="/mnt/memory/facts", read_only=True),
            Mount(host_path=scratch, virtual_path="/mnt/memory/scratch", read_only=False),
        ],
    )
    outcome = await bash(
        mounted,
        "bwrap",
        "cat /mnt/memory/facts/fact.md; touch /mnt/memory/facts/new 2>/dev/null; echo $?; "
        "echo s > /mnt/memory/scratch/s.txt; echo $?",
    )
    assert text(outcome) == "fact\n1\n0"
    assert sorted(p.name for p in store.iterdir()) == ["fact.md"]
    assert (scratch / "s.txt").read_text() == "s\n"


@needs_bwrap
async def test_sandbox_has_its_own_process_tree(workspace: Workspace) -> None:
    outcome = await bash(workspace, "bwrap", "ls /proc | grep -c '^[0-9]'")
    # bwrap's init, bash, ls, grep: nowhere near the host's process count.
    assert int(text(outcome)) < 10


# --- choosing the sandbox --------------------------------------------------------------------


def test_detect_sandbox_without_bubblewrap(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sandbox_module, "bwrap_unavailable_reason", lambda: "bwrap is not on PATH")
    with caplog.at_level(logging.WARNING):
        assert detect_sandbox("none") == "none"
    assert "UNSANDBOXED" in caplog.text
    for setting in (None, "auto", "bwrap"):
        with pytest.raises(SandboxUnavailableError, match="REVERIE_SANDBOX=none"):
            detect_sandbox(setting)
    with pytest.raises(ValueError):
        detect_sandbox("docker")


def test_detect_sandbox_prefers_bubblewrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_module, "bwrap_unavailable_reason", lambda: None)
    assert detect_sandbox(None) == "bwrap"
    assert detect_sandbox("none") == "bwrap"
