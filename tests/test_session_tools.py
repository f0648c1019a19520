"""Tools inside a session: built-ins, parallel tool uses, confirmations, custom tools, crashes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from reverie.models.errors import InvalidRequestError, NotFoundError, NotSupportedError
from reverie.models.events import Event
from reverie.models.workflow_io import SessionOptions
from reverie.starter.client import ReverieClient
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import all_events, assert_each_once, kill, types_of, worker_process

TOOLSET = {"type": "agent_toolset_20260401", "configs": [{"name": "web_search", "enabled": False}]}


LIMITED_EXAMPLE = {"type": "limited", "allowed_hosts": ["example.com"]}


def ask(*names: str) -> dict:
    return {
        "type": "agent_toolset_20260401",
        "configs": [{"name": "web_search", "enabled": False}]
        + [{"name": n, "permission_policy": {"type": "always_ask"}} for n in names],
    }


async def tool_agent(client: ReverieClient, model: str, tools: list[dict] | None = None) -> str:
    agent = await client.create_agent(
        {"name": "worker", "model": model, "tools": tools or [TOOLSET]}
    )
    return agent.id


def of_type(events: list[Event], kind: str) -> list[Event]:
    return [e for e in events if e.type == kind]


def result_text(event: Event) -> str:
    return "".join(block.get("text", "") for block in event.payload["content"])


def workspace(client: ReverieClient, session_id: str) -> Path:
    return client.settings.workspaces / session_id


async def test_write_a_deliverable_and_read_it_back(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(
        model_name,
        [
            Reply.tool_use(
                "write", {"file_path": "/mnt/session/outputs/report.md", "content": "# Report\n"}
            ),
            Reply.tool_use("read", {"file_path": "/mnt/session/outputs/report.md"}),
            Reply.text("Saved the report."),
        ],
    )
    session = await reverie.create_session({"agent": await tool_agent(reverie, model_name)})
    await reverie.send_message(session.id, "write the report")
    done = await reverie.wait_until_settled(session.id, timeout=30)

    events = await all_events(reverie, session.id)
    assert_each_once(events)
    uses, results = of_type(events, "agent.tool_use"), of_type(events, "agent.tool_result")
    assert [u.payload["name"] for u in uses] == ["write", "read"]
    assert all(u.payload["evaluated_permission"] == "allow" for u in uses)
    assert all(u.payload["evaluation"] == {"type": "always_allow"} for u in uses)
    assert [r.payload["tool_use_id"] for r in results] == [u.id for u in uses]
    assert not any(r.payload["is_error"] for r in results)
    assert "# Report" in result_text(results[1])
    assert (workspace(reverie, session.id) / "outputs" / "report.md").read_text() == "# Report\n"
    assert done.status == "idle" and events[-1].payload["stop_reason"] == {"type": "end_turn"}

    # The model saw each result paired with its tool use.
    third = fake_model.requests(model_name)[2]["messages"]
    tool_result = third[-1]["content"][0]
    assert tool_result["type"] == "tool_result" and tool_result["tool_use_id"] == uses[1].id
    assert {t["name"] for t in fake_model.requests(model_name)[0]["tools"]} == {
        "bash",
        "read",
        "write",
        "edit",
        "glob",
        "grep",
        "web_fetch",
    }


async def test_escape_attempts_get_error_results(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    fake_model.script(
        model_name,
        [
            Reply.tool_uses(
                [
                    ("write", {"file_path": "../../escape.txt", "content": "x"}),
                    ("write", {"file_path": str(outside), "content": "x"}),
                    ("read", {"file_path": "/etc/passwd"}),
                ]
            ),
            Reply.text("ok"),
        ],
    )
    session = await reverie.create_session({"agent": await tool_agent(reverie, model_name)})
    await reverie.send_message(session.id, "try to escape")
    await reverie.wait_until_settled(session.id, timeout=30)
    results = of_type(await all_events(reverie, session.id), "agent.tool_result")
    assert len(results) == 3 and all(r.payload["is_error"] for r in results)
    assert not outside.exists()
    assert not (reverie.settings.workspaces / "escape.txt").exists()
    assert not (reverie.settings.workspaces.parent / "escape.txt").exists()


async def test_tool_uses_of_one_step_run_concurrently(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    # Each command waits for the other's flag: they only both succeed if they overlap.
    wait_for = (
        "for i in $(seq 100); do [ -f {0} ] && echo met-{0} && exit 0; sleep 0.1; done; exit 7"
    )
    fake_model.script(
        model_name,
        [
            Reply.tool_uses(
                [
                    ("bash", {"command": "touch a.flag; " + wait_for.format("b.flag")}),
                    ("bash", {"command": "touch b.flag; " + wait_for.format("a.flag")}),
                ]
            ),
            Reply.text("both done"),
        ],
    )
    session = await reverie.create_session({"agent": await tool_agent(reverie, model_name)})
    await reverie.send_message(session.id, "run both")
    await reverie.wait_until_settled(session.id, timeout=60)
    results = of_type(await all_events(reverie, session.id), "agent.tool_result")
    texts = sorted(result_text(r) for r in results)
    assert "met-a.flag" in texts[0] and "met-b.flag" in texts[1], texts


async def test_bash_state_carries_over_between_tool_uses(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(
        model_name,
        [
            Reply.tool_use("bash", {"command": "mkdir -p sub && cd sub && export GREETING=hello"}),
            Reply.tool_use("bash", {"command": "echo $GREETING from $(basename $PWD)"}),
            Reply.text("done"),
        ],
    )
    session = await reverie.create_session({"agent": await tool_agent(reverie, model_name)})
    await reverie.send_message(session.id, "go")
    await reverie.wait_until_settled(session.id, timeout=30)
    results = of_type(await all_events(reverie, session.id), "agent.tool_result")
    assert "hello from sub" in result_text(results[1])


async def test_confirmations_allow_deny_and_partial(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(
        model_name,
        [
            Reply.tool_uses(
                [
                    ("write", {"file_path": "allowed.txt", "content": "yes"}),
                    ("write", {"file_path": "denied.txt", "content": "no"}),
                    ("read", {"file_path": "allowed.txt"}),
                ]
            ),
            Reply.text("finished"),
        ],
    )
    session = await reverie.create_session(
        {"agent": await tool_agent(reverie, model_name, [ask("write")])}
    )
    await reverie.send_message(session.id, "write two files")
    await reverie.wait_until_settled(session.id, timeout=30)

    events = await all_events(reverie, session.id)
    uses = of_type(events, "agent.tool_use")
    assert [u.payload["evaluated_permission"] for u in uses] == ["ask", "ask", "allow"]
    assert [u.payload["evaluation"]["type"] for u in uses] == [
        "always_ask",
        "always_ask",
        "always_allow",
    ]
    idle = events[-1]
    assert idle.type == "session.status_idle"
    assert idle.payload["stop_reason"] == {
        "type": "requires_action",
        "event_ids": [uses[0].id, uses[1].id],
    }
    # The allowed read already ran (and failed: the file is not written yet).
    assert len(of_type(events, "agent.tool_result")) == 1

    await reverie.send_events(
        session.id,
        [{"type": "user.tool_confirmation", "tool_use_id": uses[0].id, "result": "allow"}],
    )
    await asyncio.sleep(1.0)
    # One answer of two: the session stays parked, the model is not called.
    assert len(fake_model.requests(model_name)) == 1
    assert (await reverie.get_session(session.id)).status == "idle"
    with pytest.raises(InvalidRequestError, match="already been answered"):
        await reverie.send_events(
            session.id,
            [{"type": "user.tool_confirmation", "tool_use_id": uses[0].id, "result": "deny"}],
        )
    with pytest.raises(InvalidRequestError, match="awaiting"):
        await reverie.send_events(
            session.id,
            [{"type": "user.tool_confirmation", "tool_use_id": "sevt_nope", "result": "allow"}],
        )
    with pytest.raises(InvalidRequestError, match="awaiting a custom tool result"):
        await reverie.send_events(
            session.id,
            [{"type": "user.custom_tool_result", "custom_tool_use_id": uses[1].id, "content": "x"}],
        )

    await reverie.send_events(
        session.id,
        [
            {
                "type": "user.tool_confirmation",
                "tool_use_id": uses[1].id,
                "result": "deny",
                "deny_message": "not that file",
            }
        ],
    )
    await reverie.wait_until_settled(session.id, timeout=30)
    events = await all_events(reverie, session.id)
    assert_each_once(events)
    by_use = {r.payload["tool_use_id"]: r for r in of_type(events, "agent.tool_result")}
    assert not by_use[uses[0].id].payload["is_error"]
    assert by_use[uses[1].id].payload["is_error"]
    assert "not that file" in result_text(by_use[uses[1].id])
    files = workspace(reverie, session.id) / "work"
    assert (files / "allowed.txt").read_text() == "yes"
    assert not (files / "denied.txt").exists()
    second = fake_model.requests(model_name)[1]["messages"][-1]["content"]
    assert [b["tool_use_id"] for b in second if b["type"] == "tool_result"] == [u.id for u in uses]
    assert events[-1].payload["stop_reason"] == {"type": "end_turn"}


async def test_custom_tool_round_trip(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    weather = {
        "type": "custom",
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    fake_model.script(
        model_name, [Reply.tool_use("get_weather", {"city": "Paris"}), Reply.text("It is sunny.")]
    )
    session = await reverie.create_session(
        {"agent": await tool_agent(reverie, model_name, [weather])}
    )
    await reverie.send_message(session.id, "weather in Paris?")
    await reverie.wait_until_settled(session.id, timeout=30)
    events = await all_events(reverie, session.id)
    use = of_type(events, "agent.custom_tool_use")[0]
    assert use.payload == {"name": "get_weather", "input": {"city": "Paris"}}
    assert events[-1].payload["stop_reason"] == {"type": "requires_action", "event_ids": [use.id]}

    await reverie.send_events(
        session.id,
        [
            {
                "type": "user.custom_tool_result",
                "custom_tool_use_id": use.id,
                "content": "sunny, 21C",
            }
        ],
    )
    await reverie.wait_until_settled(session.id, timeout=30)
    last = fake_model.requests(model_name)[-1]["messages"][-1]["content"][0]
    assert last["type"] == "tool_result" and last["tool_use_id"] == use.id
    assert last["content"] == [{"type": "text", "text": "sunny, 21C"}]
    texts = [
        e.payload["content"][0]["text"]
        for e in await all_events(reverie, session.id)
        if e.type == "agent.message"
    ]
    assert texts == ["It is sunny."]


async def test_unsupported_tool_options_and_unknown_environment_are_refused(
    reverie: ReverieClient, model_name: str
) -> None:
    plain = await reverie.create_agent(
        {"name": "s", "model": model_name, "tools": [{"type": "agent_toolset_20260401"}]}
    )
    assert plain.tools[0].default_config.enabled  # web_search too: it needs no refusal now
    auto = {
        "type": "agent_toolset_20260401",
        "default_config": {"permission_policy": {"type": "auto"}},
    }
    with pytest.raises(NotSupportedError, match="auto permission policy is not supported yet"):
        await reverie.create_agent({"name": "s", "model": model_name, "tools": [auto]})
    with pytest.raises(NotSupportedError, match="not supported yet"):
        await reverie.create_agent(
            {
                "name": "s",
                "model": model_name,
                "tools": [
                    {
                        "type": "agent_toolset_20260401",
                        "configs": [{"name": "web_search", "allowed_domains": ["example.com"]}],
                    }
                ],
            }
        )
    agent_id = await tool_agent(reverie, model_name)
    with pytest.raises(NotFoundError, match="no environment"):
        await reverie.create_session({"agent": agent_id, "environment_id": "env_missing"})


async def test_environments_crud(reverie: ReverieClient) -> None:
    env = await reverie.create_environment(
        {"name": "web", "config": {"type": "cloud", "networking": LIMITED_EXAMPLE}}
    )
    assert env.id.startswith("env_") and env.networking.type == "limited"
    updated = await reverie.update_environment(
        env.id, {"config": {"type": "cloud", "networking": {"type": "unrestricted"}}}
    )
    assert updated.networking.type == "unrestricted"
    assert env.id in [e.id for e in (await reverie.list_environments(limit=100)).data]
    with pytest.raises(InvalidRequestError, match="host"):
        await reverie.create_environment(
            {
                "name": "bad",
                "config": {
                    "type": "cloud",
                    "networking": {"type": "limited", "allowed_hosts": ["http://x/"]},
                },
            }
        )
    archived = await reverie.archive_environment(env.id)
    assert archived.archived_at is not None
    with pytest.raises(InvalidRequestError, match="default environment"):
        await reverie.archive_environment("env_default")


async def test_interrupt_during_a_long_command(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(
        model_name, [Reply.tool_use("bash", {"command": "sleep 60"}), Reply.text("ok")]
    )
    session = await reverie.create_session({"agent": await tool_agent(reverie, model_name)})
    await reverie.send_message(session.id, "wait a minute")
    for _ in range(100):
        if of_type(await all_events(reverie, session.id), "agent.tool_use"):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    await reverie.interrupt(session.id)
    await reverie.wait_until_settled(session.id, timeout=20)
    events = await all_events(reverie, session.id)
    results = of_type(events, "agent.tool_result")
    assert len(results) == 1 and results[0].payload["is_error"]
    assert "interrupted" in result_text(results[0])
    assert events[-1].type == "session.status_idle"
    assert len(fake_model.requests(model_name)) == 1


async def test_worker_killed_during_a_long_command(
    own_queue: ReverieClient,
    fake_model: FakeModelServer,
    model_name: str,
) -> None:
    fake_model.script(
        model_name,
        [
            Reply.tool_use("bash", {"command": "echo started >> runs.txt; sleep 60"}),
            Reply.text("I see it was interrupted."),
        ],
    )
    async with worker_process(own_queue.settings) as first:
        agent_id = await tool_agent(own_queue, model_name)
        session = await own_queue.create_session(
            {"agent": agent_id}, options=SessionOptions(heartbeat_timeout_seconds=3)
        )
        await own_queue.send_message(session.id, "run the long thing")
        runs = workspace(own_queue, session.id) / "work" / "runs.txt"
        for _ in range(200):
            if runs.exists():
                break
            await asyncio.sleep(0.1)
        assert runs.exists(), "the command never started"
        await kill(first)
    async with worker_process(own_queue.settings):
        await own_queue.wait_until_settled(session.id, timeout=60)

    events = await all_events(own_queue, session.id)
    assert_each_once(events)
    results = of_type(events, "agent.tool_result")
    assert len(results) == 1 and results[0].payload["is_error"]
    assert "interrupted" in result_text(results[0])
    assert runs.read_text() == "started\n", "the command ran more than once"
    assert types_of(events)[-1] == "session.status_idle"
    texts = [e.payload["content"][0]["text"] for e in events if e.type == "agent.message"]
    assert texts == ["I see it was interrupted."]


async def test_two_answers_at_once_only_one_is_taken(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(
        model_name,
        [Reply.tool_use("write", {"file_path": "x.txt", "content": "x"}), Reply.text("ok")],
    )
    session = await reverie.create_session(
        {"agent": await tool_agent(reverie, model_name, [ask("write")])}
    )
    await reverie.send_message(session.id, "write it")
    await reverie.wait_until_settled(session.id, timeout=30)
    use = of_type(await all_events(reverie, session.id), "agent.tool_use")[0]
    answer = {"type": "user.tool_confirmation", "tool_use_id": use.id, "result": "allow"}
    outcomes = await asyncio.gather(
        reverie.send_events(session.id, [answer]),
        reverie.send_events(session.id, [answer]),
        return_exceptions=True,
    )
    refused = [o for o in outcomes if isinstance(o, InvalidRequestError)]
    assert len(refused) == 1 and "already been answered" in refused[0].message
    await reverie.wait_until_settled(session.id, timeout=30)
    events = await all_events(reverie, session.id)
    assert len(of_type(events, "user.tool_confirmation")) == 1
    assert len(of_type(events, "agent.tool_result")) == 1


async def test_a_disabled_tool_is_not_offered_and_not_run(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    no_bash = {
        "type": "agent_toolset_20260401",
        "configs": [{"name": "web_search", "enabled": False}, {"name": "bash", "enabled": False}],
    }
    fake_model.script(
        model_name, [Reply.tool_use("bash", {"command": "touch ran.txt"}), Reply.text("ok")]
    )
    session = await reverie.create_session(
        {"agent": await tool_agent(reverie, model_name, [no_bash])}
    )
    await reverie.send_message(session.id, "try bash anyway")
    await reverie.wait_until_settled(session.id, timeout=30)
    offered = {t["name"] for t in fake_model.requests(model_name)[0]["tools"]}
    assert "bash" not in offered and "read" in offered
    result = of_type(await all_events(reverie, session.id), "agent.tool_result")[0]
    assert result.payload["is_error"] and "not enabled" in result_text(result)
    assert not (workspace(reverie, session.id) / "work" / "ran.txt").exists()


async def test_web_fetch_follows_the_sessions_environment(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    from aiohttp import web

    async def page(_: web.Request) -> web.Response:
        return web.Response(text="hello from the page")

    app = web.Application()
    app.router.add_get("/page", page)
    runner = web.AppRunner(app)
    await runner.setup()
    # 127.0.0.2 is the one loopback address the test worker's operator opted in
    # (REVERIE_EGRESS_ALLOW_NETWORKS in conftest); the stack itself listens on 127.0.0.1.
    site = web.TCPSite(runner, "127.0.0.2", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.2:{port}/page"
    try:
        allowed_env = await reverie.create_environment(
            {
                "name": "local",
                "config": {
                    "type": "cloud",
                    "networking": {"type": "limited", "allowed_hosts": ["127.0.0.2"]},
                },
            }
        )
        agent_id = await tool_agent(reverie, model_name)
        texts = {}
        for env_id in (allowed_env.id, "env_default"):
            fake_model.script(
                model_name, [Reply.tool_use("web_fetch", {"url": url}), Reply.text("ok")]
            )
            session = await reverie.create_session({"agent": agent_id, "environment_id": env_id})
            await reverie.send_message(session.id, "fetch it")
            await reverie.wait_until_settled(session.id, timeout=30)
            result = of_type(await all_events(reverie, session.id), "agent.tool_result")[0]
            texts[env_id] = (result.payload["is_error"], result_text(result))
    finally:
        await runner.cleanup()
    assert texts[allowed_env.id][0] is False and "hello from the page" in texts[allowed_env.id][1]
    assert texts["env_default"][0] is True and "no network access" in texts["env_default"][1]
