"""Multi-agent orchestration (issue 18): a coordinator's roster, delegation to subagent threads
that run in parallel on the session's workspace, their events and results (real Temporal,
PostgreSQL and worker; only the model is faked, each agent on a model name of its own)."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import anthropic
import pytest
import standardwebhooks
from temporalio.client import WorkflowExecutionStatus

from reverie.activities.tools import Workspace
from reverie.models.errors import InvalidRequestError, NotFoundError, NotSupportedError
from reverie.models.threads import primary_thread_id
from reverie.models.workflow_io import SessionOptions
from reverie.starter.client import ReverieClient
from reverie.store import events as event_store
from reverie.store import sessions as session_store
from reverie.store import threads as thread_store
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import (
    all_events,
    assert_each_once,
    kill,
    types_of,
    wait_for_event,
    worker_process,
)
from tests.test_cli import cli_env, run_cli
from tests.webhook_support import hook_stack, receiver


async def agent(reverie: ReverieClient, name: str, model: str, **extra: Any) -> Any:
    return await reverie.create_agent({"name": name, "model": model, **extra})


async def test_roster_is_validated_and_pinned(reverie: ReverieClient, model_name: str) -> None:
    a = await agent(reverie, "alpha", f"{model_name}-a")
    b = await agent(reverie, "beta", f"{model_name}-b")
    await reverie.update_agent(b.id, {"system": "v2"})
    lead = await agent(
        reverie,
        "lead",
        model_name,
        multiagent={
            "type": "coordinator",
            "agents": [a.id, {"type": "agent", "id": b.id, "version": 1}, {"type": "self"}],
        },
    )
    assert lead.multiagent == {
        "type": "coordinator",
        "agents": [
            {"type": "agent", "id": a.id, "version": 1},
            {"type": "agent", "id": b.id, "version": 1},
            {"type": "agent", "id": lead.id, "version": 1},
        ],
    }
    before = await reverie.pool.fetchval("SELECT count(*) FROM agents")
    bad: list[tuple[Any, type[Exception], str]] = [
        ({"type": "coordinator", "agents": []}, InvalidRequestError, "at least 1"),
        ({"type": "coordinator", "agents": [a.id] * 21}, InvalidRequestError, "at most 20"),
        ({"type": "coordinator", "agents": [a.id, a.id]}, InvalidRequestError, "distinct"),
        (
            {"type": "coordinator", "agents": [{"type": "self"}, {"type": "self"}]},
            InvalidRequestError,
            "at most once",
        ),
        ({"type": "coordinator", "agents": ["agent_nope"]}, InvalidRequestError, "agent_nope"),
        ({"type": "coordinator", "agents": [lead.id]}, InvalidRequestError, "one level"),
        (
            {"type": "coordinator", "agents": [{"type": "agent", "id": a.id, "version": 9}]},
            InvalidRequestError,
            "no version 9",
        ),
        ({"type": "multiagent_20261001"}, NotSupportedError, "not supported yet"),
        ({"type": "coordinator", "agents": [{"type": "advisor"}]}, NotSupportedError, "advisor"),
        ({"type": "swarm", "agents": [a.id]}, InvalidRequestError, "coordinator"),
    ]
    for multiagent, error, match in bad:
        with pytest.raises(error, match=match):
            await agent(reverie, "x", model_name, multiagent=multiagent)
    # Subagents may ask for confirmations: they are cross-posted to the primary thread.
    asker = await agent(
        reverie,
        "asker",
        f"{model_name}-c",
        tools=[
            {
                "type": "agent_toolset_20260401",
                "default_config": {"permission_policy": {"type": "always_ask"}},
            }
        ],
    )
    asking = {"type": "coordinator", "agents": [asker.id]}
    assert (await agent(reverie, "asks", model_name, multiagent=asking)).multiagent is not None
    twin = await agent(reverie, "alpha", f"{model_name}-t")
    with pytest.raises(InvalidRequestError, match="distinct names"):
        await agent(
            reverie, "x", model_name, multiagent={"type": "coordinator", "agents": [a.id, twin.id]}
        )
    assert await reverie.pool.fetchval("SELECT count(*) FROM agents") == before + 3
    # An update pins too: `self` is the version it makes.
    updated = await reverie.update_agent(
        lead.id, {"multiagent": {"type": "coordinator", "agents": [b.id, {"type": "self"}]}}
    )
    assert updated.version == 2
    assert updated.multiagent["agents"] == [
        {"type": "agent", "id": b.id, "version": 2},
        {"type": "agent", "id": lead.id, "version": 2},
    ]


async def coordinator(
    reverie: ReverieClient, model: str, names: list[str], **extra: Any
) -> tuple[Any, list[Any]]:
    members = [
        await agent(reverie, name, f"{model}-{name}", system=f"You are {name}.") for name in names
    ]
    lead = await agent(
        reverie,
        "lead",
        model,
        multiagent={"type": "coordinator", "agents": [m.id for m in members]},
        **extra,
    )
    return lead, members


def start(name: str, task: str) -> tuple[str, dict[str, Any]]:
    return ("start_thread", {"agent": name, "task": task})


def texts(event: Any) -> str:
    return "".join(b.get("text", "") for b in event.payload.get("content", []))


async def thread_events(reverie: ReverieClient, session_id: str, thread_id: str) -> list[Any]:
    found, page = [], None
    while True:
        got = await reverie.thread_events_page(session_id, thread_id, limit=100, page=page)
        found += got.data
        if (page := got.next_page) is None:
            return found


async def test_fan_out_runs_threads_in_parallel_and_each_reply_arrives_once(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    names = ["alpha", "beta", "gamma"]
    lead, _ = await coordinator(reverie, model_name, names)
    fake_model.script(
        model_name,
        [
            Reply.tool_uses([start(n, f"inspect build {n}") for n in names]),
            Reply.tool_use("wait_for_threads", {}),
            Reply.text("all three reported"),
        ],
    )
    for name in names:
        fake_model.script(f"{model_name}-{name}", [Reply.text(f"finding of {name}", delay=1.5)])
    # gamma's answer is huge: the coordinator gets it cut, the thread's log keeps it whole.
    fake_model.clear(f"{model_name}-gamma")
    huge = "finding of gamma " + "x" * 60_000
    fake_model.script(f"{model_name}-gamma", [Reply.text(huge, delay=1.5)])
    session = await reverie.create_session(
        {"agent": lead.id, "initial_events": [{"type": "user.message", "content": "go"}]}
    )
    # Each subagent's request arrives while the others are still being answered: they overlap.
    for name in names:
        await fake_model.wait_for_requests(f"{model_name}-{name}", 1, timeout=30)
    threads = (await reverie.list_threads(session.id)).data
    assert [t.status for t in threads[1:]] == ["running"] * 3
    for thread in threads[1:]:
        assert "agent.message" not in types_of(await thread_events(reverie, session.id, thread.id))
    settled = await reverie.wait_until_settled(session.id, timeout=60)
    assert settled.status == "idle"
    events = await all_events(reverie, session.id)
    assert_each_once(events)
    kinds = types_of(events)
    assert kinds.count("session.thread_created") == 3
    assert kinds.count("agent.thread_message_sent") == 3
    received = [e for e in events if e.type == "agent.thread_message_received"]
    got = sorted(texts(e) for e in received)
    assert got[:2] == ["finding of alpha", "finding of beta"]
    assert got[2].startswith("finding of gamma x") and "cut at 50,000 characters" in got[2]
    assert len(got[2]) < 50_500
    assert sorted(e.payload["from_agent_name"] for e in received) == names
    created = {e.payload["session_thread_id"] for e in events if e.type == "session.thread_created"}
    assert {e.payload["from_session_thread_id"] for e in received} == created
    assert events[-1].type == "session.status_idle"
    # The coordinator's last request holds each reply once, after the wait's result.
    shown = json.dumps(fake_model.requests(model_name)[-1]["messages"])
    for name in names:
        assert shown.count(f"finding of {name}") == 1
    # Each subagent ran with its own model and prompt, on its task, without delegation tools.
    for name in names:
        (request,) = fake_model.requests(f"{model_name}-{name}")
        assert f"You are {name}." in json.dumps(request["system"])
        assert f"inspect build {name}" in json.dumps(request["messages"])
        assert "start_thread" not in json.dumps(request.get("tools", []))
    threads = (await reverie.list_threads(session.id)).data
    assert {t.status for t in threads} == {"idle"}
    # Usage sums the threads' (the primary thread shows the coordinator's own part).
    total = sum(t.usage["output_tokens"] for t in threads[1:])
    own = threads[0].usage["output_tokens"]
    assert (await reverie.get_session(session.id)).usage.output_tokens == total + own
    assert total > 0 and own > 0
    gamma = next(t for t in threads if t.agent["name"] == "gamma")
    whole = [
        e for e in await thread_events(reverie, session.id, gamma.id) if e.type == "agent.message"
    ]
    assert texts(whole[0]) == huge
    # Each thread's own log: its task, its status changes, its answer.
    own = await thread_events(reverie, session.id, threads[1].id)
    assert types_of(own)[:2] == ["agent.thread_message_received", "session.thread_status_running"]
    assert types_of(own)[-1] == "session.thread_status_idle"


async def test_threads_through_the_sdk(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str, sdk: Any
) -> None:
    lead, _ = await coordinator(reverie, model_name, ["scout"])
    fake_model.script(
        model_name,
        [
            Reply.tool_use("start_thread", {"agent": "scout", "task": "look around"}),
            Reply.tool_use("wait_for_threads", {}),
            Reply.text("done"),
        ],
    )
    fake_model.script(f"{model_name}-scout", [Reply.text("seen it")])
    session = await sdk.beta.sessions.create(agent=lead.id, environment_id="env_default")
    # The session shows its roster's exact versions, each with its full definition.
    (member,) = session.agent.multiagent.agents
    assert (member.id, member.version) == (lead.multiagent["agents"][0]["id"], 1)
    assert member.name == "scout" and member.system == "You are scout."
    await sdk.beta.sessions.events.send(
        session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "go"}]}]
    )
    await reverie.wait_until_settled(session.id, timeout=60)
    threads = [t async for t in sdk.beta.sessions.threads.list(session.id)]
    assert [t.parent_thread_id for t in threads] == [None, threads[0].id]
    primary, scout = threads
    # One a page: the primary thread, then the subagent's after it.
    first = await reverie.list_threads(session.id, limit=1)
    assert [t.id for t in first.data] == [primary.id] and first.next_page == primary.id
    second = await reverie.list_threads(session.id, limit=1, page=first.next_page)
    assert [t.id for t in second.data] == [scout.id] and second.next_page is None
    assert scout.agent.name == "scout" and scout.status == "idle" and scout.usage.output_tokens
    got = await sdk.beta.sessions.threads.retrieve(scout.id, session_id=session.id)
    assert got.id == scout.id and got.session_id == session.id
    listed = [
        e async for e in sdk.beta.sessions.threads.events.list(scout.id, session_id=session.id)
    ]
    assert listed[0].type == "agent.thread_message_received"
    assert "agent.message" in [e.type for e in listed]
    for page in ("p\u00b2", "p99999999999", "p2147483648"):
        with pytest.raises(anthropic.BadRequestError, match="invalid page cursor"):
            await sdk.beta.sessions.threads.events.list(scout.id, session_id=session.id, page=page)
    on_primary = [
        e async for e in sdk.beta.sessions.threads.events.list(primary.id, session_id=session.id)
    ]
    received = [e for e in on_primary if e.type == "agent.thread_message_received"]
    assert [(e.from_session_thread_id, e.from_agent_name) for e in received] == [
        (scout.id, "scout")
    ]
    assert received[0].content[0].text == "seen it"
    created = next(e for e in on_primary if e.type == "session.thread_created")
    assert created.session_thread_id == scout.id and created.agent_name == "scout"
    # A thread is no session: the session routes refuse its id as not found (HTTP, client, CLI).
    message = {"type": "user.message", "content": [{"type": "text", "text": "hi"}]}
    for call in (
        sdk.beta.sessions.retrieve(scout.id),
        sdk.beta.sessions.events.list(scout.id),
        sdk.beta.sessions.events.send(scout.id, events=[message]),
        sdk.beta.sessions.events.stream(scout.id),
        sdk.beta.sessions.archive(scout.id),
        sdk.beta.sessions.delete(scout.id),
    ):
        with pytest.raises(anthropic.NotFoundError, match="no session with id"):
            await call
    for method in (reverie.list_events, reverie.interrupt, reverie.get_session):
        with pytest.raises(NotFoundError, match="no session with id"):
            await method(scout.id)
    refused = await run_cli(cli_env(reverie.settings), "session", "events", scout.id)
    assert refused.code != 0 and "no session with id" in refused.err
    assert (await reverie.get_thread(session.id, scout.id)).status == "idle"
    # A thread of another session, or none at all, is not found.
    other = await reverie.create_session({"agent": lead.id})
    for session_id, thread_id in ((other.id, scout.id), (session.id, "sth_nope")):
        with pytest.raises(anthropic.NotFoundError):
            await sdk.beta.sessions.threads.retrieve(thread_id, session_id=session_id)
    # The thread's stream: a follow-up's events arrive on it.
    fake_model.script(
        model_name,
        [
            Reply.tool_use("message_thread", {"thread_id": scout.id, "message": "again"}),
            Reply.tool_use("wait_for_threads", {"thread_ids": [scout.id]}),
            Reply.text("done again"),
        ],
    )
    fake_model.script(f"{model_name}-scout", [Reply.text("seen it twice")])
    stream = await sdk.beta.sessions.threads.events.stream(scout.id, session_id=session.id)
    await reverie.send_message(session.id, "once more")
    seen = []
    async for event in stream:
        seen.append(event.type)
        if event.type == "session.thread_status_idle":
            break
    await stream.close()
    assert seen[0] == "agent.thread_message_received" and "agent.message" in seen
    # An ended thread's stream ends: followed while it ends, and opened after (what it holds
    # sent, then the end), as a session's does; the primary thread's with the session's end.
    await reverie.wait_until_settled(session.id, timeout=60)
    following = await sdk.beta.sessions.threads.events.stream(scout.id, session_id=session.id)
    assert (await reverie.archive_session(session.id)).status == "terminated"

    async def types_until_end(stream: Any) -> list[str]:
        return [event.type async for event in stream]

    ended = await asyncio.wait_for(types_until_end(following), 60)
    assert ended[-1] == "session.thread_status_terminated"
    for thread in (scout, primary):
        late = await sdk.beta.sessions.threads.events.stream(thread.id, session_id=session.id)
        assert await asyncio.wait_for(types_until_end(late), 60) == []


def results_of(events: list[Any]) -> list[tuple[bool, str]]:
    return [(e.payload["is_error"], texts(e)) for e in events if e.type == "agent.tool_result"]


async def test_follow_ups_keep_history_and_the_model_cannot_reach_beyond_its_roster(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    alpha = await agent(reverie, "alpha", f"{model_name}-alpha")
    lead = await agent(
        reverie,
        "lead",
        model_name,
        multiagent={"type": "coordinator", "agents": [alpha.id, {"type": "self"}]},
    )
    fake_model.script(
        model_name,
        [
            Reply.tool_use("start_thread", {"agent": "alpha", "task": "remember the number 42"}),
            Reply.tool_use("wait_for_threads", {}),
            Reply.text("ok"),
        ],
    )
    fake_model.script(f"{model_name}-alpha", [Reply.text("noted 42")])
    first = await reverie.create_session(
        {"agent": lead.id, "initial_events": [{"type": "user.message", "content": "go"}]}
    )
    await reverie.wait_until_settled(first.id, timeout=60)
    thread = (await reverie.list_threads(first.id)).data[1]
    # A follow-up resumes the thread with its earlier turns.
    fake_model.script(
        model_name,
        [
            Reply.tool_use("message_thread", {"thread_id": thread.id, "message": "which number?"}),
            Reply.tool_use("wait_for_threads", {"thread_ids": [thread.id]}),
            Reply.text("fine"),
        ],
    )
    fake_model.script(f"{model_name}-alpha", [Reply.text("it was 42")])
    await reverie.send_message(first.id, "ask again")
    await reverie.wait_until_settled(first.id, timeout=60)
    second = json.dumps(fake_model.requests(f"{model_name}-alpha")[1]["messages"])
    assert "remember the number 42" in second and "noted 42" in second
    assert "which number?" in second
    received = [
        texts(e)
        for e in await all_events(reverie, first.id)
        if e.type == "agent.thread_message_received"
    ]
    assert received == ["noted 42", "it was 42"]
    assert len((await reverie.list_threads(first.id)).data) == 2
    # The command line: the threads, one thread's own events, an interrupt naming a thread.
    env = cli_env(reverie.settings)
    listed, own, refused = await asyncio.gather(
        run_cli(env, "session", "threads", first.id, "--json"),
        run_cli(env, "session", "events", first.id, "--thread", thread.id, "--json"),
        run_cli(env, "session", "interrupt", first.id, "--thread", "sth_nope"),
    )
    assert [t["id"] for t in listed.json()["data"]][1:] == [thread.id]
    lines = [json.loads(line) for line in own.out.splitlines()]
    assert [e["type"] for e in lines].count("agent.thread_message_received") == 2
    assert refused.code != 0 and "no thread 'sth_nope'" in refused.err
    # A thread's workflow terminated outside Reverie (the Web UI, the CLI): the session goes
    # on, its coordinator told the thread no longer runs (a failed signal failed the session).
    await reverie.temporal.get_workflow_handle(thread.id).terminate(reason="by hand")
    fake_model.script(
        model_name,
        [
            Reply.tool_uses(
                [
                    ("message_thread", {"thread_id": thread.id, "message": "there?"}),
                    ("wait_for_threads", {"thread_ids": [thread.id]}),
                ]
            ),
            Reply.text("carried on"),
        ],
    )
    await reverie.send_message(first.id, "ask the gone one")
    assert (await reverie.wait_until_settled(first.id, timeout=60)).status == "idle"
    events = await all_events(reverie, first.id)
    assert "not running" in results_of(events)[-1][1]
    (ended,) = [e for e in events if e.type == "session.thread_status_terminated"]
    assert ended.payload["session_thread_id"] == thread.id
    assert (await reverie.get_thread(first.id, thread.id)).status == "terminated"
    assert texts([e for e in events if e.type == "agent.message"][-1]) == "carried on"
    await reverie.send_events(
        first.id, [{"type": "user.interrupt", "session_thread_id": thread.id}]
    )
    # Deleting the session removes its threads, rows and workflows.
    await reverie.delete_session(first.id)
    assert not await reverie.pool.fetchval(
        "SELECT count(*) FROM sessions WHERE parent_session_id = $1", first.id
    )
    described = await reverie.temporal.get_workflow_handle(thread.id).describe()
    assert described.status != WorkflowExecutionStatus.RUNNING

    # Another session of the coordinator: what its model asks for is checked, never trusted.
    fake_model.script(
        model_name,
        [
            Reply.tool_uses(
                [
                    ("start_thread", {"agent": "../alpha", "task": "x"}),
                    ("start_thread", {"agent": "alpha", "task": "x" * 100_001}),
                    ("start_thread", {"agent": "alpha"}),
                    ("message_thread", {"thread_id": thread.id, "message": "hi"}),
                    ("message_thread", {"thread_id": "sth_nope", "message": "hi"}),
                    ("wait_for_threads", {"thread_ids": [thread.id]}),
                    # The coordinator itself as a subagent: its thread may not delegate further.
                    ("start_thread", {"agent": "lead", "task": "delegate again"}),
                    ("wait_for_threads", {}),
                ]
            ),
            Reply.tool_use("start_thread", {"agent": "alpha", "task": "recursion"}),
            Reply.text("cannot delegate"),
            Reply.text("done"),
        ],
    )
    attacked = await reverie.create_session(
        {"agent": lead.id, "initial_events": [{"type": "user.message", "content": "go"}]}
    )
    await reverie.wait_until_settled(attacked.id, timeout=60)
    events = await all_events(reverie, attacked.id)
    results = results_of(events)
    assert [error for error, _ in results] == [True] * 6 + [False, False]
    messages = [text for _, text in results]
    assert "no agent '../alpha' on the roster" in messages[0]
    assert "100,000" in messages[1]
    assert "task must be a non-empty string" in messages[2]
    assert f"no thread '{thread.id}'" in messages[3]
    assert "no thread 'sth_nope'" in messages[4]
    assert thread.id in messages[5]
    (created,) = [e for e in events if e.type == "session.thread_created"]
    assert created.payload["agent_name"] == "lead"
    own = await thread_events(reverie, attacked.id, created.payload["session_thread_id"])
    (refused,) = [r for r in results_of(own)]
    assert refused[0] and "not enabled" in refused[1]
    (request,) = fake_model.requests(model_name)[-3:-2]
    assert "start_thread" not in json.dumps(request.get("tools", []))
    # Nothing reached the first session's thread.
    assert len(fake_model.requests(f"{model_name}-alpha")) == 2
    assert [t.id for t in (await reverie.list_threads(attacked.id)).data][1:] == [
        created.payload["session_thread_id"]
    ]


async def test_interrupting_one_thread_then_all(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    lead, _ = await coordinator(reverie, model_name, ["slow", "quick"])
    fake_model.script(
        model_name,
        [
            Reply.tool_uses([start("slow", "take ages"), start("quick", "be quick")]),
            Reply.tool_use("wait_for_threads", {}),
            Reply.text("carried on without slow"),
        ],
    )
    fake_model.script(f"{model_name}-slow", [Reply.text("never sent", delay=30)])
    fake_model.script(f"{model_name}-quick", [Reply.text("quick result", delay=1)])
    session = await reverie.create_session(
        {"agent": lead.id, "initial_events": [{"type": "user.message", "content": "go"}]}
    )
    await fake_model.wait_for_requests(f"{model_name}-slow", 1, timeout=30)
    slow = next(
        t for t in (await reverie.list_threads(session.id)).data if t.agent["name"] == "slow"
    )
    with pytest.raises(InvalidRequestError, match="no thread 'sth_other'"):
        await reverie.send_events(
            session.id, [{"type": "user.interrupt", "session_thread_id": "sth_other"}]
        )
    # Running while a thread runs: neither archived nor deleted meanwhile.
    for method in (reverie.archive_session, reverie.delete_session):
        with pytest.raises(InvalidRequestError, match="running"):
            await method(session.id)
    await reverie.send_events(
        session.id, [{"type": "user.interrupt", "session_thread_id": slow.id}]
    )
    await reverie.wait_until_settled(session.id, timeout=60)
    events = await all_events(reverie, session.id)
    received = sorted(texts(e) for e in events if e.type == "agent.thread_message_received")
    assert received == ["[The thread ended its turn without a message.]", "quick result"]
    # The coordinator itself was not interrupted: it carried on to its answer.
    assert texts([e for e in events if e.type == "agent.message"][-1]) == "carried on without slow"
    own = await thread_events(reverie, session.id, slow.id)
    assert types_of(own)[-1] == "session.thread_status_idle" and "agent.message" not in types_of(
        own
    )

    # Without a thread named, an interrupt stops the coordinator and every thread.
    fake_model.script(
        model_name,
        [Reply.tool_uses([start("slow", "again, slowly"), ("wait_for_threads", {})])],
    )
    fake_model.script(f"{model_name}-slow", [Reply.text("never sent either", delay=30)])
    requests = len(fake_model.requests(model_name))
    await reverie.send_message(session.id, "once more")
    await fake_model.wait_for_requests(f"{model_name}-slow", 2, timeout=30)
    # One of them was terminated by hand meanwhile (the Web UI): the interrupt finds it gone.
    gone = (await reverie.list_threads(session.id)).data[-1]
    await reverie.temporal.get_workflow_handle(gone.id).terminate(reason="by hand")
    await reverie.interrupt(session.id)
    settled = await reverie.wait_until_settled(session.id, timeout=60)
    assert settled.status == "idle"
    statuses = {t.id: t.status for t in (await reverie.list_threads(session.id)).data}
    assert statuses.pop(gone.id) == "terminated" and set(statuses.values()) == {"idle"}
    events = await all_events(reverie, session.id)
    # (Whichever the wait learnt first: the interrupt, or that its thread is gone.)
    assert results_of(events)[-1] in (
        (True, "The wait was interrupted."),
        (False, f"Threads {[gone.id]} were terminated; no reply of theirs follows."),
    )
    # The stopped thread's reply waits for the coordinator's next turn instead of starting one.
    assert len(fake_model.requests(model_name)) == requests + 1
    assert events[-1].type == "session.status_idle"


async def test_at_most_25_threads_run_at_once(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    lead, _ = await coordinator(reverie, model_name, ["worker"])
    fake_model.script(
        model_name,
        [
            Reply.tool_uses(
                [*[start("worker", f"part {n}") for n in range(26)], ("wait_for_threads", {})]
            )
        ],
    )
    # The subagents stay busy until the interrupt below: all 25 run when the 26th is asked for.
    fake_model.script(f"{model_name}-worker", [Reply.text("never", delay=120)] * 25)
    session = await reverie.create_session(
        {"agent": lead.id, "initial_events": [{"type": "user.message", "content": "go"}]}
    )
    await fake_model.wait_for_requests(f"{model_name}-worker", 25, timeout=60)
    while len(results := results_of(await all_events(reverie, session.id))) < 26:
        await asyncio.sleep(0.05)
    assert [error for error, _ in results] == [False] * 25 + [True]
    assert "25 threads are running already and at most 25" in results[-1][1]
    await reverie.interrupt(session.id)
    assert (await reverie.wait_until_settled(session.id, timeout=60)).status == "idle"
    events = await all_events(reverie, session.id)
    assert types_of(events).count("session.thread_created") == 25
    assert results_of(events)[-1] == (True, "The wait was interrupted.")
    assert {t.status for t in (await reverie.list_threads(session.id)).data} == {"idle"}
    # Paged: the primary first, then each thread once, in the order they started.
    listed, page = [], None
    while True:
        got = await reverie.list_threads(session.id, limit=10, page=page)
        listed += [t.id for t in got.data]
        if (page := got.next_page) is None:
            break
    created = [e.payload["session_thread_id"] for e in events if e.type == "session.thread_created"]
    assert listed == [primary_thread_id(session.id), *created]


async def test_worker_killed_while_threads_run(
    own_queue: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    lead, _ = await coordinator(own_queue, model_name, ["alpha", "beta"])
    fake_model.script(
        model_name,
        [
            Reply.tool_uses([start("alpha", "a"), start("beta", "b"), ("wait_for_threads", {})]),
            Reply.text("both in"),
        ],
    )
    for name in ("alpha", "beta"):
        fake_model.script(
            f"{model_name}-{name}",
            [Reply.text("lost with the worker", delay=30), Reply.text(f"{name} survived")],
        )
    async with worker_process(own_queue.settings) as first:
        session = await own_queue.create_session(
            {"agent": lead.id, "initial_events": [{"type": "user.message", "content": "go"}]},
            options=SessionOptions(heartbeat_timeout_seconds=3),
        )
        for name in ("alpha", "beta"):
            await fake_model.wait_for_requests(f"{model_name}-{name}", 1, timeout=30)
        await kill(first)
    async with worker_process(own_queue.settings):
        settled = await own_queue.wait_until_settled(session.id, timeout=90)
    assert settled.status == "idle"
    events = await all_events(own_queue, session.id)
    assert_each_once(events)
    received = sorted(texts(e) for e in events if e.type == "agent.thread_message_received")
    assert received == ["alpha survived", "beta survived"]
    assert types_of(events).count("session.thread_created") == 2
    assert texts([e for e in events if e.type == "agent.message"][-1]) == "both in"
    for thread in (await own_queue.list_threads(session.id)).data[1:]:
        own = await thread_events(own_queue, session.id, thread.id)
        assert_each_once(own)
        assert types_of(own).count("agent.message") == 1
        assert types_of(own).count("session.thread_status_idle") == 1


async def test_a_thread_shares_the_workspace_retries_model_errors_and_continues_as_new(
    reverie: ReverieClient, temporal_client: Any, fake_model: FakeModelServer, model_name: str
) -> None:
    toolset = [
        {"type": "agent_toolset_20260401", "configs": [{"name": "web_search", "enabled": False}]}
    ]
    scribe = await agent(reverie, "scribe", f"{model_name}-scribe", tools=toolset)
    lead = await agent(
        reverie,
        "lead",
        model_name,
        tools=toolset,
        multiagent={"type": "coordinator", "agents": [scribe.id]},
    )
    steps = 22
    fake_model.script(
        f"{model_name}-scribe",
        [
            Reply.error(529),
            Reply.tool_use("write", {"file_path": "shared.txt", "content": "from the scribe"}),
            *[Reply.tool_use("read", {"file_path": "shared.txt"}) for _ in range(steps)],
            Reply.text("wrote it"),
        ],
    )
    # The coordinator works on while its thread runs: it continues as new meanwhile too.
    fake_model.script(
        model_name,
        [
            Reply.tool_use("start_thread", {"agent": "scribe", "task": "write shared.txt"}),
            *[Reply.tool_use("glob", {"pattern": "*.md"}) for _ in range(steps)],
            Reply.tool_use("wait_for_threads", {}),
            Reply.tool_use("read", {"file_path": "shared.txt"}),
            Reply.text("read it"),
        ],
    )
    session = await reverie.create_session(
        {"agent": lead.id, "initial_events": [{"type": "user.message", "content": "go"}]}
    )
    await fake_model.wait_for_requests(f"{model_name}-scribe", 1, timeout=30)
    thread = (await reverie.list_threads(session.id)).data[1]
    handle = temporal_client.get_workflow_handle(thread.id)
    first_run = (await handle.describe()).run_id
    own_handle = temporal_client.get_workflow_handle(session.id)
    own_first_run = (await own_handle.describe()).run_id
    await reverie.wait_until_settled(session.id, timeout=120)
    assert (await handle.describe()).run_id != first_run, "the thread never continued as new"
    assert (await own_handle.describe()).run_id != own_first_run, "the session never did"
    events = await all_events(reverie, session.id)
    assert_each_once(events)
    # The coordinator read what its subagent wrote: one workspace.
    assert "from the scribe" in results_of(events)[-1][1]
    assert [texts(e) for e in events if e.type == "agent.thread_message_received"] == ["wrote it"]
    own = await thread_events(reverie, session.id, thread.id)
    assert_each_once(own)
    kinds = types_of(own)
    assert "session.thread_status_rescheduled" in kinds and "session.error" in kinds
    assert kinds.count("agent.tool_result") == steps + 1
    assert kinds.count("agent.message") == 1 and kinds[-1] == "session.thread_status_idle"


async def test_a_subagents_confirmations_and_custom_tools_are_cross_posted_and_routed_back(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    asker = await agent(
        reverie,
        "asker",
        f"{model_name}-asker",
        tools=[
            {
                "type": "agent_toolset_20260401",
                "default_config": {"permission_policy": {"type": "always_ask"}},
            },
            {"type": "custom", "name": "lookup", "input_schema": {"type": "object"}},
        ],
    )
    lead = await agent(
        reverie, "lead", model_name, multiagent={"type": "coordinator", "agents": [asker.id]}
    )
    fake_model.script(
        model_name,
        [
            Reply.tool_use("start_thread", {"agent": "asker", "task": "write, then look up"}),
            Reply.tool_use("wait_for_threads", {}),
            Reply.text("done"),
        ],
    )
    fake_model.script(
        f"{model_name}-asker",
        [
            Reply.tool_uses(
                [
                    ("write", {"file_path": "asked.txt", "content": "allowed"}),
                    ("lookup", {"key": "k"}),
                ]
            ),
            Reply.text("asker finished"),
        ],
    )
    session = await reverie.create_session(
        {"agent": lead.id, "initial_events": [{"type": "user.message", "content": "go"}]}
    )
    idle = await wait_for_event(reverie, session.id, "session.thread_status_idle")
    assert idle.payload["stop_reason"]["type"] == "requires_action"
    events = await all_events(reverie, session.id)
    (use,) = [e for e in events if e.type == "agent.tool_use" and "session_thread_id" in e.payload]
    (custom,) = [e for e in events if e.type == "agent.custom_tool_use"]
    thread_id = idle.payload["session_thread_id"]
    assert use.payload["session_thread_id"] == custom.payload["session_thread_id"] == thread_id
    assert idle.payload["stop_reason"]["event_ids"] == [use.id, custom.id]
    # Nothing runs but what waits for the client: the session idles with requires_action
    # naming the cross-posted tool uses, as it does for its own (again with the rest as
    # answers come, running again once the thread goes on).
    assert (await reverie.wait_until_settled(session.id, timeout=30)).status == "idle"
    # Answers are checked as a primary thread's are: kind, existence, once.
    with pytest.raises(InvalidRequestError, match="awaiting a custom tool result"):
        await reverie.send_events(
            session.id, [{"type": "user.custom_tool_result", "custom_tool_use_id": use.id}]
        )
    with pytest.raises(InvalidRequestError, match="no tool use 'sevt_nope'"):
        await reverie.send_events(
            session.id,
            [{"type": "user.tool_confirmation", "tool_use_id": "sevt_nope", "result": "allow"}],
        )
    await reverie.send_events(
        session.id, [{"type": "user.tool_confirmation", "tool_use_id": use.id, "result": "allow"}]
    )
    with pytest.raises(InvalidRequestError, match="already been answered"):
        await reverie.send_events(
            session.id,
            [{"type": "user.tool_confirmation", "tool_use_id": use.id, "result": "deny"}],
        )
    await reverie.send_events(
        session.id,
        [{"type": "user.custom_tool_result", "custom_tool_use_id": custom.id, "content": "v7"}],
    )
    await reverie.wait_until_settled(session.id, timeout=60)
    events = await all_events(reverie, session.id)
    statuses = [
        (e.type, e.payload.get("stop_reason"))
        for e in events
        if e.type in ("session.status_running", "session.status_idle")
    ]
    assert statuses == [
        ("session.status_running", None),
        ("session.status_idle", {"type": "requires_action", "event_ids": [use.id, custom.id]}),
        ("session.status_idle", {"type": "requires_action", "event_ids": [custom.id]}),
        ("session.status_running", None),
        ("session.status_idle", {"type": "end_turn"}),
    ]
    assert [texts(e) for e in events if e.type == "agent.thread_message_received"] == [
        "asker finished"
    ]
    assert texts([e for e in events if e.type == "agent.message"][-1]) == "done"
    # The thread's model got the confirmed tool's result and the client's custom result.
    second = json.dumps(fake_model.requests(f"{model_name}-asker")[1]["messages"])
    assert "v7" in second
    own = await thread_events(reverie, session.id, thread_id)
    assert [r for r in results_of(own) if not r[0]]  # the write ran, allowed
    written = Workspace.for_session(reverie.settings.workspaces, session.id).work_dir / "asked.txt"
    assert written.read_text() == "allowed"  # in the session's workspace
    # An interrupt naming the thread while its tool use waits: the tool use gets an error result,
    # the thread ends its turn, and the answer is no longer taken.
    fake_model.script(
        model_name,
        [
            Reply.tool_use("message_thread", {"thread_id": thread_id, "message": "once more"}),
            Reply.tool_use("wait_for_threads", {}),
            Reply.text("stopped"),
        ],
    )
    fake_model.script(
        f"{model_name}-asker",
        [Reply.tool_use("write", {"file_path": "asked.txt", "content": "never"})],
    )
    await reverie.send_message(session.id, "again")
    while True:
        idles = [
            e
            for e in await all_events(reverie, session.id)
            if e.type == "session.thread_status_idle"
        ]
        if len(idles) == 3:  # requires_action, end_turn, requires_action
            break
        await asyncio.sleep(0.05)
    (waiting,) = idles[-1].payload["stop_reason"]["event_ids"]
    await reverie.send_events(
        session.id, [{"type": "user.interrupt", "session_thread_id": thread_id}]
    )
    await reverie.wait_until_settled(session.id, timeout=60)
    with pytest.raises(InvalidRequestError, match="no tool use"):
        await reverie.send_events(
            session.id,
            [{"type": "user.tool_confirmation", "tool_use_id": waiting, "result": "allow"}],
        )
    assert written.read_text() == "allowed"
    assert results_of(await thread_events(reverie, session.id, thread_id))[-1][0] is True
    events = await all_events(reverie, session.id)
    assert texts([e for e in events if e.type == "agent.message"][-1]) == "stopped"

    def asking(events: list[Any]) -> list[Any]:
        return [
            e
            for e in events
            if e.type == "session.status_idle"
            and e.payload["stop_reason"]["type"] == "requires_action"
        ]

    async def ask_once_more(count: int) -> Any:
        """The coordinator waits for the thread, whose tool use waits for the client."""
        fake_model.script(
            model_name,
            [
                Reply.tool_use("message_thread", {"thread_id": thread_id, "message": "more"}),
                Reply.tool_use("wait_for_threads", {}),
                Reply.text("never said"),
            ],
        )
        fake_model.script(
            f"{model_name}-asker",
            [Reply.tool_use("write", {"file_path": "asked.txt", "content": "never either"})],
        )
        await reverie.send_message(session.id, "more")
        for _ in range(600):
            if len(asking(await all_events(reverie, session.id))) == count:
                break
            await asyncio.sleep(0.05)
        assert (await reverie.wait_until_settled(session.id, timeout=5)).status == "idle"
        return asking(await all_events(reverie, session.id))[-1]

    # Idle for a thread's tool use, within the coordinator's wait: an interrupt stops the
    # coordinator's turn too (it does not go on with the stopped thread's reply).
    await ask_once_more(4)
    requests = len(fake_model.requests(model_name))
    await reverie.interrupt(session.id)
    await reverie.wait_until_settled(session.id, timeout=30)
    events = await all_events(reverie, session.id)
    assert results_of(events)[-1] == (True, "The wait was interrupted.")
    assert len(fake_model.requests(model_name)) == requests
    assert events[-1].payload["stop_reason"]["type"] == "end_turn"
    # Idle so again: archiving ends it all.
    fake_model.clear(model_name)
    last = await ask_once_more(5)
    assert (await reverie.archive_session(session.id)).status == "terminated"
    assert written.read_text() == "allowed"
    for _ in range(200):  # the thread ends on its own, a moment later
        if (await reverie.get_thread(session.id, thread_id)).status == "terminated":
            break
        await asyncio.sleep(0.05)
    assert (await reverie.get_thread(session.id, thread_id)).status == "terminated"
    events = await all_events(reverie, session.id)
    after = types_of(events[events.index(last) :])
    assert "session.status_terminated" in after and "session.status_running" not in after


async def test_thread_events_are_announced_once_from_the_primary_thread(settings: Any) -> None:
    """A thread's status events are on its own log and cross-posted: only the primary thread's
    copies announce webhooks (for the session, naming the thread)."""
    async with hook_stack(settings) as stack, receiver() as rx:
        endpoint = await stack.client.create_webhook(
            {"url": rx.url, "enabled_events": ["session.thread_created", "session.thread_idled"]}
        )
        member = await stack.client.create_agent({"name": "m", "model": "m"})
        session_id, thread_id = "sesn_threadhooks", "sth_threadhooks"
        async with stack.pool.acquire() as conn, conn.transaction():
            await session_store.create(
                conn, session_id, member, environment_id="env_default", title=None,
                metadata={}, resources=[],
            )  # fmt: skip
            await thread_store.create(
                conn, thread_id, session_id, agent_id=member.id, agent_version=1, agent_name="m"
            )
        now = datetime.now(UTC)
        body = {"session_thread_id": thread_id, "agent_name": "m"}
        idle = {**body, "stop_reason": {"type": "end_turn"}}
        await event_store.append(
            stack.pool, thread_id, [("sevt_t1", "session.thread_status_idle", idle, now)]
        )
        await event_store.append(
            stack.pool,
            session_id,
            [
                ("sevt_p1", "session.thread_created", body, now),
                ("sevt_p2", "session.thread_status_idle", idle, now),
            ],
        )
        await rx.wait_for(2)
        await asyncio.sleep(1.0)  # nothing more comes
        parsed = [
            standardwebhooks.Webhook(endpoint.signing_secret).verify(got.body, got.headers)
            for got in rx.received
        ]
        assert sorted(p["data"]["type"] for p in parsed) == [
            "session.thread_created",
            "session.thread_idled",
        ]
        assert {(p["data"]["id"], p["data"]["session_thread_id"]) for p in parsed} == {
            (session_id, thread_id)
        }


async def test_what_the_coordinators_model_asks_is_bounded_and_subagents_keep_to_the_session(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    """Names matched as people write them (case, Unicode forms), wrong types and floods
    refused, waits on threads that do not run answered at once; a subagent sees the session's
    memory mounts with their access and nothing outside the workspace; the session keeps the
    roster versions it started with."""
    toolset = [{"type": "agent_toolset_20260401"}]
    cafe = await agent(
        reverie, "Café", f"{model_name}-cafe", system="You are café v1.", tools=toolset
    )
    beta = await agent(reverie, "beta", f"{model_name}-beta")
    twin = await agent(reverie, "CAFÉ", f"{model_name}-twin")
    with pytest.raises(InvalidRequestError, match="distinct names, ignoring case"):
        await agent(
            reverie,
            "x",
            model_name,
            multiagent={"type": "coordinator", "agents": [cafe.id, twin.id]},
        )
    lead = await agent(
        reverie,
        "lead",
        model_name,
        multiagent={"type": "coordinator", "agents": [cafe.id, beta.id]},
    )
    store = await reverie.create_memory_store({"name": "facts", "description": "shared facts"})
    await reverie.create_memory(store.id, {"path": "/fact.md", "content": "the sky is green"})
    fake_model.script(
        model_name,
        [
            Reply.tool_uses(
                [
                    start("CAFÉ", "read the fact"),
                    start("BETA", "be slow"),
                    ("start_thread", {"agent": 5, "task": "x"}),
                    ("wait_for_threads", {"thread_ids": "sth_x"}),
                    ("wait_for_threads", {}),
                ]
            ),
            Reply.text("phase one"),
        ],
    )
    fake_model.script(
        f"{model_name}-cafe",
        [
            Reply.tool_uses(
                [
                    ("read", {"file_path": "/mnt/memory/facts/fact.md"}),
                    ("write", {"file_path": "/mnt/memory/facts/new.md", "content": "mine"}),
                    ("write", {"file_path": "../outside.txt", "content": "escaped"}),
                ]
            ),
            Reply.text("café done"),
        ],
    )
    fake_model.script(f"{model_name}-beta", [Reply.text("beta done")])
    session = await reverie.create_session(
        {
            "agent": lead.id,
            "resources": [
                {"type": "memory_store", "memory_store_id": store.id, "access": "read_only"}
            ],
            "initial_events": [{"type": "user.message", "content": "go"}],
        }
    )
    await reverie.wait_until_settled(session.id, timeout=60)
    events = await all_events(reverie, session.id)
    results = results_of(events)
    assert [error for error, _ in results] == [False, False, True, True, False]
    assert "no agent '?' on the roster" in results[2][1]
    assert "thread_ids must be a list" in results[3][1]
    created = [e.payload for e in events if e.type == "session.thread_created"]
    assert [c["agent_name"] for c in created] == ["Café", "beta"]
    cafe_thread, beta_thread = (c["session_thread_id"] for c in created)
    # The subagent read the read-only mount, could not write it nor leave the workspace, and
    # its model was told of the mount as the coordinator's is.
    log = await thread_events(reverie, session.id, cafe_thread)
    uses = {e.id: e.payload["input"]["file_path"] for e in log if e.type == "agent.tool_use"}
    own = {
        uses[e.payload["tool_use_id"]]: (e.payload["is_error"], texts(e))
        for e in log
        if e.type == "agent.tool_result"
    }
    read = own["/mnt/memory/facts/fact.md"]
    assert not read[0] and "the sky is green" in read[1]
    assert own["/mnt/memory/facts/new.md"][0] and own["../outside.txt"][0]
    (request,) = fake_model.requests(f"{model_name}-cafe")[:1]
    assert "/mnt/memory/facts/ (read-only)" in json.dumps(request["system"])
    workspace = Workspace.for_session(reverie.settings.workspaces, session.id).work_dir
    assert not (workspace.parent / "outside.txt").exists()
    assert [m.path for m in (await reverie.list_memories(store.id)).data] == ["/fact.md"]

    # The roster changes after the session started: the session keeps the versions it pinned.
    await reverie.update_agent(cafe.id, {"system": "You are café v2."})
    await reverie.update_agent(
        lead.id, {"multiagent": {"type": "coordinator", "agents": [beta.id]}}
    )
    floods = [("message_thread", {"thread_id": beta_thread, "message": f"m{n}"}) for n in range(21)]
    fake_model.script(
        model_name,
        [
            Reply.tool_uses([*floods, start("cafe\u0301", "again")]),
            Reply.tool_use("wait_for_threads", {}),
            Reply.tool_use("wait_for_threads", {"thread_ids": [beta_thread, beta_thread]}),
            Reply.text("phase two"),
        ],
    )
    # (beta answers slowly: the flood is over before its reply makes room again)
    fake_model.script(f"{model_name}-beta", [Reply.text("beta again", delay=3.0)])
    # The model refuses the second café thread's request for good: that thread is terminated.
    fake_model.script(f"{model_name}-cafe", [Reply.error(400, message="no such model")])
    await reverie.send_message(session.id, "again")
    await reverie.wait_until_settled(session.id, timeout=60)
    results = results_of(await all_events(reverie, session.id))[5:]
    assert [error for error, _ in results[:22]] == [False] * 20 + [True, False]
    assert "has 20 messages it has not answered yet" in results[20][1]
    assert "not running" in results[-1][1] and beta_thread in results[-1][1]
    second = fake_model.requests(f"{model_name}-cafe")[-1]
    assert "You are café v1." in json.dumps(second["system"], ensure_ascii=False)
    sent = json.dumps([r["messages"] for r in fake_model.requests(f"{model_name}-beta")])
    assert "m19" in sent and "m20" not in sent
    events = await all_events(reverie, session.id)
    ended = [e for e in events if e.type == "session.thread_created"][-1].payload
    replies = [e for e in events if e.type == "agent.thread_message_received"]
    assert any("ended with an error" in texts(r) for r in replies)
    # A terminated thread takes no messages; a wait for it answers at once.
    gone = ended["session_thread_id"]
    assert (await reverie.get_thread(session.id, gone)).status == "terminated"
    fake_model.script(
        model_name,
        [
            Reply.tool_uses(
                [
                    ("message_thread", {"thread_id": gone, "message": "still there?"}),
                    ("wait_for_threads", {"thread_ids": [gone]}),
                    ("wait_for_threads", {}),
                ]
            ),
            Reply.text("phase three"),
        ],
    )
    await reverie.send_message(session.id, "once more")
    await reverie.wait_until_settled(session.id, timeout=60)
    last = results_of(await all_events(reverie, session.id))[-3:]
    assert last[0][0] and f"thread {gone} is terminated" in last[0][1]
    assert not last[1][0] and "not running" in last[1][1]
    assert last[2] == (False, "No thread was running: there is nothing to wait for.")
