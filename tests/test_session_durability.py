"""Crashes and long lives: a worker SIGKILLed mid-turn, continue-as-new with the conversation intact."""

from __future__ import annotations

from temporalio.client import Client

from reverie.models.workflow_io import SessionOptions
from reverie.starter.client import ReverieClient
from tests.conftest import CONTINUE_AS_NEW_EVENTS
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import (
    all_events,
    assert_each_once,
    kill,
    new_agent,
    types_of,
    worker_process,
)


async def test_worker_killed_during_model_call(
    own_queue: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(
        model_name, [Reply.text("lost with the worker", delay=30), Reply.text("survived")]
    )
    async with worker_process(own_queue.settings) as first:
        agent_id = await new_agent(own_queue, model_name)
        session = await own_queue.create_session(
            {"agent": agent_id}, options=SessionOptions(heartbeat_timeout_seconds=3)
        )
        await own_queue.send_message(session.id, "do the thing")
        await fake_model.wait_for_requests(model_name, 1, timeout=20)
        await kill(first)
    async with worker_process(own_queue.settings):
        done = await own_queue.wait_until_settled(session.id, timeout=60)

    events = await all_events(own_queue, session.id)
    assert_each_once(events)
    kinds = types_of(events)
    assert kinds.count("user.message") == 1
    assert kinds.count("span.model_request_start") == 1
    assert kinds.count("span.model_request_end") == 1
    assert kinds.count("agent.message") == 1
    assert [e.payload["content"][0]["text"] for e in events if e.type == "agent.message"] == [
        "survived"
    ]
    assert kinds[-1] == "session.status_idle"
    assert done.status == "idle"
    assert done.stats.model_requests == 1
    # Positions are gapless: every recorded event is in the log exactly once, in order.
    positions = await own_queue.pool.fetch(
        "SELECT position FROM events WHERE session_id = $1 ORDER BY position", session.id
    )
    assert [row["position"] for row in positions] == list(range(1, len(events) + 1))


async def test_continue_as_new_keeps_the_conversation(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    turns = 14
    fake_model.script(model_name, [Reply.text(f"answer {n}") for n in range(turns)])
    agent_id = await new_agent(reverie, model_name)
    session = await reverie.create_session({"agent": agent_id})
    handle = temporal_client.get_workflow_handle(session.id)
    first_run = (await handle.describe()).run_id
    for n in range(turns):
        await reverie.send_message(session.id, f"question {n}")
        await reverie.wait_until_settled(session.id)

    description = await handle.describe()
    assert description.run_id != first_run, "the session never continued as new"
    history = await handle.fetch_history()
    assert len(history.events) < CONTINUE_AS_NEW_EVENTS * 1.5

    last = fake_model.requests(model_name)[-1]["messages"]
    assert len(last) == 2 * turns - 1
    assert last[0]["content"][0]["text"] == "question 0"
    assert last[-2]["content"][0]["text"] == f"answer {turns - 2}"
    done = await reverie.get_session(session.id)
    assert done.stats.turns == turns
    assert done.stats.model_requests == turns
    events = await all_events(reverie, session.id)
    assert_each_once(events)
    assert types_of(events).count("agent.message") == turns


async def test_a_long_turn_continues_as_new_between_model_steps(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    steps = 25
    fake_model.script(
        model_name,
        [Reply.tool_use("bash", {"command": f"echo step {n} >> log.txt"}) for n in range(steps)]
        + [Reply.text("all steps done")],
    )
    agent = await reverie.create_agent(
        {
            "name": "long-turn",
            "model": model_name,
            "tools": [
                {
                    "type": "agent_toolset_20260401",
                    "configs": [{"name": "web_search", "enabled": False}],
                }
            ],
        }
    )
    session = await reverie.create_session({"agent": agent.id})
    handle = temporal_client.get_workflow_handle(session.id)
    first_run = (await handle.describe()).run_id
    await reverie.send_message(session.id, "do many steps")
    done = await reverie.wait_until_settled(session.id, timeout=120)

    first = await temporal_client.get_workflow_handle(session.id, run_id=first_run).fetch_history()
    model_steps_in_first_run = [
        e
        for e in first.events
        if e.HasField("activity_task_scheduled_event_attributes")
        and e.activity_task_scheduled_event_attributes.activity_type.name == "model_step"
    ]
    # The first run handed the turn over part-way: it did not make all the model steps itself.
    assert first.events[-1].HasField("workflow_execution_continued_as_new_event_attributes")
    assert 0 < len(model_steps_in_first_run) < steps + 1
    events = await all_events(reverie, session.id)
    assert_each_once(events)
    kinds = types_of(events)
    assert kinds.count("session.status_running") == 1
    assert kinds.count("session.status_idle") == 1
    assert kinds.count("agent.tool_result") == steps
    assert done.stats.turns == 1 and done.stats.model_requests == steps + 1
    log = (reverie.settings.workspaces / session.id / "work" / "log.txt").read_text()
    assert log.splitlines() == [f"step {n}" for n in range(steps)]
    last = fake_model.requests(model_name)[-1]["messages"]
    assert len(last) == 1 + 2 * steps  # the message, then each tool use and its result
