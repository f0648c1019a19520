"""The `reverie` command line, run as a real process against the test stack.

Each command is a subprocess started with asyncio, so the in-process worker keeps running on
this event loop while the command waits on it. Independent commands run side by side: each
one pays Python's start-up, and the file should stay quick.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from anthropic.types.beta import BetaEnvironment

from reverie.settings import Settings
from reverie.starter.client import ReverieClient
from reverie.starter.stack import free_port
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import new_agent
from tests.sdk_conformance import assert_fits

COMMAND = (sys.executable, "-m", "reverie.starter.cli")


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        assert self.code == 0, self.err
        return json.loads(self.out)


Cli = Callable[..., Awaitable[Result]]


def cli_env(settings: Settings, **changes: str | None) -> dict[str, str]:
    """The test stack's addresses, as a user's shell would export them; None unsets."""
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": settings.temporal_address or "",
        "DATABASE_URL": settings.database_url or "",
        "REVERIE_TASK_QUEUE": settings.task_queue,
        "REVERIE_HOME": str(settings.reverie_home),
    }
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


async def run_cli(env: dict[str, str], *args: str, timeout: float = 30) -> Result:
    process = await asyncio.create_subprocess_exec(
        *COMMAND,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    return Result(process.returncode or 0, out.decode(), err.decode())


@pytest.fixture
def cli(settings: Settings) -> Cli:
    env = cli_env(settings)

    async def run(*args: str) -> Result:
        return await run_cli(env, *args)

    return run


async def test_agent_commands(cli: Cli, reverie: ReverieClient, model_name: str) -> None:
    created = await cli(
        "agent", "create", "--name", "helper", "--model", model_name, "--system", "Be brief.",
        "--metadata", "team=core", "tier=1", "--json",
    )  # fmt: skip
    agent = created.json()
    assert (agent["version"], agent["model"]["id"]) == (1, model_name)
    assert agent["metadata"] == {"team": "core", "tier": "1"}
    agent_id = agent["id"]

    updated = await cli(
        "agent", "update", agent_id, "--version", "1", "--name", "helper-2",
        "--metadata", "tier=", "--json",
    )  # fmt: skip
    assert updated.json()["version"] == 2
    assert (updated.json()["name"], updated.json()["metadata"]) == ("helper-2", {"team": "core"})

    same, stale, first, versions, listed = await asyncio.gather(
        cli("agent", "update", agent_id, "--name", "helper-2", "--json"),
        cli("agent", "update", agent_id, "--version", "1", "--system", "Be long."),
        cli("agent", "get", agent_id, "--version", "1", "--json"),
        cli("agent", "versions", agent_id, "--json"),
        cli("agent", "list", "--limit", "100"),
    )
    assert same.json()["version"] == 2, "an update that changes nothing makes no version"
    assert stale.code == 1 and stale.out == ""
    assert "error: version_conflict_error: " in stale.err
    assert f"agent {agent_id} is at version 2, not 1" in stale.err
    assert (first.json()["name"], first.json()["version"]) == ("helper", 1)
    assert [v["version"] for v in versions.json()["data"]] == [2, 1]
    row = next(line for line in listed.out.splitlines() if line.startswith(agent_id))
    assert row.split()[1:4] == ["2", "helper-2", model_name]
    assert listed.out.startswith("ID")

    archived = await cli("agent", "archive", agent_id, "--json")
    assert archived.json()["archived_at"] is not None
    live = await reverie.list_agents(limit=100)
    assert agent_id not in [a.id for a in live.data]


async def test_session_commands(
    cli: Cli,
    settings: Settings,
    reverie: ReverieClient,
    fake_model: FakeModelServer,
    model_name: str,
) -> None:
    fake_model.script(model_name, [Reply.text("Hello from the CLI."), Reply.text("late", delay=30)])
    agent_id = await new_agent(reverie, model_name)
    created = await cli(
        "session", "create", "--agent", agent_id, "--title", "cli", "--metadata", "k=v",
        "--message", "Hi there", "--json",
    )  # fmt: skip
    session_id = created.json()["id"]
    assert (created.json()["title"], created.json()["metadata"]) == ("cli", {"k": "v"})

    # --follow prints the first turn as it is recorded, and ends once the session is idle.
    followed = await cli("session", "events", session_id, "--follow", "--json")
    assert followed.code == 0, followed.err
    events = [json.loads(line) for line in followed.out.splitlines()]
    kinds = [event["type"] for event in events]
    assert kinds[0] == "user.message" and kinds[-1] == "session.status_idle"
    message = events[kinds.index("agent.message")]
    assert message["content"] == [{"type": "text", "text": "Hello from the CLI."}]

    sent = await cli("session", "send", session_id, "write a long essay", "--json")
    echo = sent.json()["data"][0]
    assert echo["type"] == "user.message" and echo["id"].startswith("sevt_")
    await fake_model.wait_for_requests(model_name, 2)
    interrupted = await cli("session", "interrupt", session_id)
    assert interrupted.code == 0 and "  user.interrupt" in interrupted.out
    # Settled long before the 30 s reply would have come: the interrupt cut the call short.
    await reverie.wait_until_settled(session_id, timeout=20)

    unreachable = cli_env(settings, TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}")
    second_turn, listed, unknown, no_server = await asyncio.gather(
        cli("session", "events", session_id, "--after", str(len(events))),
        cli("session", "list", "--agent", agent_id),
        cli("session", "create", "--agent", "agent_nope", "--json"),
        run_cli(unreachable, "session", "get", session_id),
    )
    lines = second_turn.out.splitlines()
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3}  user\.message  write a long essay", lines[0])
    assert "user.interrupt" in [line.split()[1] for line in lines]
    assert lines[-1].split()[1] == "session.status_idle" and "agent.message" not in second_turn.out
    assert listed.out.splitlines()[1].split()[:2] == [session_id, "idle"]
    assert (
        unknown.code == 1 and "error: not_found_error: no agent with id 'agent_nope'" in unknown.err
    )
    assert json.loads(unknown.out)["error"]["type"] == "not_found_error"
    assert no_server.code == 2 and "is `reverie up` running?" in no_server.err

    archived = await cli("session", "archive", session_id, "--json")
    assert archived.json()["archived_at"] is not None


async def test_up_runs_the_stack_until_interrupted(settings: Settings, tmp_path: Path) -> None:
    home = tmp_path / "home"
    stack_file = home / "stack.json"
    env = cli_env(settings, REVERIE_HOME=str(home), TEMPORAL_ADDRESS=None)
    port, ui_port = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        *COMMAND, "up", "--port", str(port), "--ui-port", str(ui_port), "--json",
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not stack_file.exists():
            assert process.returncode is None, await process.stderr.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no stack file within 30s"
            await asyncio.sleep(0.1)
        stack = json.loads(stack_file.read_text())
        assert stack["temporal_address"] == f"127.0.0.1:{port}"
        assert stack["ui_address"] == f"http://127.0.0.1:{ui_port}"
        assert stack["database_url"] == settings.database_url

        # Another shell finds everything through the stack file alone.
        elsewhere = cli_env(
            settings, REVERIE_HOME=str(home), TEMPORAL_ADDRESS=None, DATABASE_URL=None
        )
        listed, second = await asyncio.gather(
            run_cli(elsewhere, "agent", "list", "--json"),
            run_cli(env, "up", "--port", str(free_port())),
        )
        assert isinstance(listed.json()["data"], list)
        assert second.code == 1 and "already running" in second.err

        process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), 20)
        assert process.returncode == 0, err.decode()
        assert (
            json.loads(out.decode().splitlines()[0])["temporal_address"]
            == stack["temporal_address"]
        )
        assert not stack_file.exists()
    finally:
        if process.returncode is None:  # a failed assertion: still stop what it started
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()


async def test_environment_commands(cli: Cli, reverie: ReverieClient, model_name: str) -> None:
    created = (
        await cli("env", "create", "--name", "web", "--allowed-host", "example.com", "--json")
    ).json()
    assert created["config"]["networking"] == {
        "type": "limited",
        "allowed_hosts": ["example.com"],
        "allow_mcp_servers": False,
        "allow_package_managers": False,
    }
    assert_fits(created, BetaEnvironment)
    registries = (
        await cli("env", "update", created["id"], "--allow-package-managers", "--json")
    ).json()
    # Flags left out keep what the environment has.
    assert registries["config"]["networking"]["allowed_hosts"] == ["example.com"]
    assert registries["config"]["networking"]["allow_package_managers"] is True
    updated, listed = await asyncio.gather(
        cli("env", "update", created["id"], "--networking", "unrestricted", "--json"),
        cli("env", "list", "--limit", "100"),
    )
    assert updated.json()["config"]["networking"] == {"type": "unrestricted"}
    assert created["id"] in listed.out
    agent_id = await new_agent(reverie, model_name)
    session = (
        await cli(
            "session", "create", "--agent", agent_id, "--environment", created["id"], "--json"
        )
    ).json()
    assert session["environment_id"] == created["id"]
    refused = await cli("env", "create", "--name", "bad", "--allow-host", "http://x/")
    assert refused.code == 1 and "host" in refused.err
    missing = await cli("session", "create", "--agent", agent_id, "--environment", "env_nope")
    assert missing.code == 1 and "no environment" in missing.err
    in_use = await cli("env", "delete", created["id"])
    assert in_use.code == 1 and "used by 1 session" in in_use.err
    spare = (await cli("env", "create", "--name", "spare", "--json")).json()
    deleted = (await cli("env", "delete", spare["id"], "--json")).json()
    assert deleted == {"type": "environment_deleted", "id": spare["id"]}
