"""What a session workflow carries stays bounded: messages waiting for the running turn are
limited (a clear refusal beyond), and an interrupted turn leaves no ids behind."""

from __future__ import annotations

import pytest
from temporalio.client import Client

from reverie.models.errors import InvalidRequestError
from reverie.models.workflow_io import SessionOptions
from reverie.starter.client import ReverieClient
from reverie.workflows.session import SessionWorkflow
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import all_events, assert_each_once, assert_spans_closed, new_agent, types_of


def _messages(*texts: str) -> list[dict[str, str]]:
    return [{"type": "user.message", "content": text} for text in texts]


async def test_waiting_messages_are_bounded_and_interrupted_inputs_not_carried(
    reverie: ReverieClient,
    temporal_client: Client,
    fake_model: FakeModelServer,
    model_name: str,
) -> None:
    fake_model.script(model_name, [Reply.text("too slow", delay=30), Reply.text("all read")])
    agent_id = await new_agent(reverie, model_name)
    session = await reverie.create_session(
        {"agent": agent_id}, options=SessionOptions(max_waiting_inputs=3)
    )
    await reverie.send_message(session.id, "one")
    await fake_model.wait_for_requests(model_name, 1)

    # Three may wait while the turn runs; a fourth is refused, and nothing of it is recorded.
    await reverie.send_events(session.id, _messages("two", "three"))
    await reverie.send_message(session.id, "four")
    with pytest.raises(InvalidRequestError, match=r"3 messages waiting .* at most 3 may wait"):
        await reverie.send_message(session.id, "five")
    with pytest.raises(InvalidRequestError, match="at most 3 may wait"):
        await reverie.send_events(session.id, _messages("six", "seven"))

    # An interrupt: the unanswered inputs go into the transcript, not into carried ids.
    await reverie.interrupt(session.id)
    await reverie.wait_until_settled(session.id, timeout=15)
    state = await temporal_client.get_workflow_handle(session.id).query(SessionWorkflow.state)
    assert state.held_input_ids == [] and state.queued == []

    await reverie.send_message(session.id, "eight")
    await reverie.wait_until_settled(session.id, timeout=15)
    last = fake_model.requests(model_name)[-1]["messages"]
    assert [m["role"] for m in last] == ["user"]
    assert [b["text"] for b in last[0]["content"]] == ["one", "two", "three", "four", "eight"]

    events = await all_events(reverie, session.id)
    assert_each_once(events)
    assert_spans_closed(events)
    texts = [e.payload["content"][0]["text"] for e in events if e.type == "user.message"]
    assert texts == ["one", "two", "three", "four", "eight"]
    assert types_of(events).count("agent.message") == 1
