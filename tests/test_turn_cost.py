"""The shorter turn of issue 15, as behaviour: the message that starts a turn is recorded with
the turn's running status; a model step whose answer ends the turn records the idle status with
it, unless an input arrived while it ran; a session created with messages records its first
running status with them. Whatever writes them, the log, the row, the workflow and the search
attribute tell one story."""

from __future__ import annotations

import asyncio

from temporalio.client import Client

from reverie.starter.client import ReverieClient
from reverie.workflows.session import SESSION_STATUS, SessionWorkflow
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import all_events, assert_spans_closed, new_agent, types_of


async def _agreed_idle(reverie: ReverieClient, temporal: Client, session_id: str) -> None:
    """The row, the workflow's state and the search attribute all say idle (the attribute is
    written when the workflow's task completes: give it a moment)."""
    handle = temporal.get_workflow_handle(session_id)
    seen: dict[str, str] = {}
    for _ in range(100):
        state = await handle.query(SessionWorkflow.state)
        attribute = (await handle.describe()).typed_search_attributes.get(SESSION_STATUS)
        row = await reverie.get_session(session_id)
        seen = {"workflow": state.status, "attribute": attribute or "", "row": row.status}
        if set(seen.values()) == {"idle"}:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"statuses disagree: {seen}")


async def test_an_answer_that_ends_the_turn_records_the_idle_status_with_it(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(model_name, [Reply.text("one"), Reply.text("two")])
    session = await reverie.create_session({"agent": await new_agent(reverie, model_name)})
    for text in ("first", "second"):
        await reverie.send_message(session.id, text)
        await reverie.wait_until_settled(session.id)
    events = await all_events(reverie, session.id)
    turn = [
        "user.message",
        "session.status_running",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        "session.status_idle",
    ]
    assert types_of(events) == turn * 2
    by_type = {e.type: e for e in events[6:]}
    # One write each: the message with the running status, the answer with the idle status.
    assert by_type["user.message"].processed_at == by_type["session.status_running"].processed_at
    assert by_type["agent.message"].processed_at == by_type["session.status_idle"].processed_at
    assert by_type["session.status_idle"].payload["stop_reason"] == {"type": "end_turn"}
    await _agreed_idle(reverie, temporal_client, session.id)
    done = await reverie.get_session(session.id)
    assert done.stats.turns == 2 and done.stats.model_requests == 2


async def test_an_input_that_arrives_during_the_step_keeps_the_turn_going(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(model_name, [Reply.text("slow", delay=1), Reply.text("took it up")])
    session = await reverie.create_session({"agent": await new_agent(reverie, model_name)})
    await reverie.send_message(session.id, "first")
    await fake_model.wait_for_requests(model_name, 1)
    await reverie.send_message(session.id, "while you think")
    await reverie.wait_until_settled(session.id, timeout=30)
    events = await all_events(reverie, session.id)
    kinds = types_of(events)
    assert kinds.count("session.status_idle") == 1 and kinds[-1] == "session.status_idle"
    assert kinds.count("session.status_running") == 1
    assert kinds.count("span.model_request_start") == 2
    second = fake_model.requests(model_name)[1]
    assert "while you think" in str(second["messages"][-1]["content"])
    assert_spans_closed(events)
    await _agreed_idle(reverie, temporal_client, session.id)
    assert (await reverie.get_session(session.id)).stats.turns == 1


async def test_a_session_created_with_messages_records_its_first_running_status_with_them(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(model_name, [Reply.text("hello")])
    session = await reverie.create_session(
        {
            "agent": await new_agent(reverie, model_name),
            "initial_events": [{"type": "user.message", "content": "hi"}],
        }
    )
    assert session.status == "running"
    await reverie.wait_until_settled(session.id)
    events = await all_events(reverie, session.id)
    assert types_of(events)[:3] == [
        "user.message",
        "session.status_running",
        "span.model_request_start",
    ]
    assert types_of(events).count("session.status_running") == 1
    assert events[0].processed_at == events[1].processed_at
    await _agreed_idle(reverie, temporal_client, session.id)


async def test_an_interrupt_right_after_the_message_that_started_a_turn(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(model_name, [Reply.text("maybe", delay=0.5), Reply.text("after")])
    session = await reverie.create_session({"agent": await new_agent(reverie, model_name)})
    await reverie.send_message(session.id, "stop me")
    await reverie.interrupt(session.id)
    await reverie.wait_until_settled(session.id, timeout=30)
    await reverie.send_message(session.id, "again")
    await reverie.wait_until_settled(session.id, timeout=30)
    events = await all_events(reverie, session.id)
    kinds = types_of(events)
    assert kinds.count("session.status_running") == 2
    assert kinds.count("session.status_idle") == 2 and kinds[-1] == "session.status_idle"
    assert_spans_closed(events)
    await _agreed_idle(reverie, temporal_client, session.id)
