"""A write PostgreSQL refuses for good ends in `session.error`, never in an endless retry.

The refusal is real: a trigger in the test database refuses chosen events of one session with a
check violation (see `tests.helpers.refusing_events`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from temporalio.client import Client, WorkflowExecutionStatus

from reverie.models.errors import InvalidRequestError
from reverie.starter.client import ReverieClient
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import (
    all_events,
    assert_spans_closed,
    new_agent,
    refusing_events,
    types_of,
)

Refuse = Callable[[str, str], Awaitable[None]]


@pytest.fixture
async def refuse(reverie: ReverieClient) -> AsyncIterator[Refuse]:
    async with refusing_events(reverie.pool) as refuse:
        yield refuse


async def _assert_ended_with_error(
    reverie: ReverieClient, temporal: Client, session_id: str, refused: str
) -> list[Any]:
    done = await reverie.wait_until_settled(session_id, timeout=30)
    assert done.status == "terminated"
    events = await all_events(reverie, session_id)
    errors = [e.payload["error"] for e in events if e.type == "session.error"]
    assert len(errors) == 1
    assert errors[0]["retry_status"] == {"type": "terminal"}
    assert "PostgreSQL refused" in errors[0]["message"]
    assert f"test refuses {refused} events" in errors[0]["message"]
    assert events[-1].type == "session.status_terminated"
    assert refused not in types_of(events)
    description = await temporal.get_workflow_handle(session_id).describe()
    assert description.status == WorkflowExecutionStatus.COMPLETED
    with pytest.raises(InvalidRequestError, match="terminated"):
        await reverie.send_message(session_id, "still there?")
    return events


async def test_a_refused_status_event_ends_the_session_with_an_error(
    reverie: ReverieClient,
    temporal_client: Client,
    fake_model: FakeModelServer,
    model_name: str,
    refuse: Refuse,
) -> None:
    agent_id = await new_agent(reverie, model_name)
    session = await reverie.create_session({"agent": agent_id})
    await refuse(session.id, "session.status_running")
    await reverie.send_message(session.id, "hello")
    events = await _assert_ended_with_error(
        reverie, temporal_client, session.id, "session.status_running"
    )
    assert fake_model.requests(model_name) == []
    assert "user.message" in types_of(events)


async def test_a_refused_model_answer_ends_the_session_after_one_call(
    reverie: ReverieClient,
    temporal_client: Client,
    fake_model: FakeModelServer,
    model_name: str,
    refuse: Refuse,
) -> None:
    fake_model.script(model_name, [Reply.text("an answer the database refuses")])
    agent_id = await new_agent(reverie, model_name)
    session = await reverie.create_session({"agent": agent_id})
    await refuse(session.id, "agent.message")
    await reverie.send_message(session.id, "hello")
    events = await _assert_ended_with_error(reverie, temporal_client, session.id, "agent.message")
    # Not retried: the same answer would be refused again.
    assert len(fake_model.requests(model_name)) == 1
    assert_spans_closed(events)
    ends = [e for e in events if e.type == "span.model_request_end"]
    assert ends[0].payload["is_error"] is True


async def test_a_refused_tool_result_ends_the_session_with_an_error(
    reverie: ReverieClient,
    temporal_client: Client,
    fake_model: FakeModelServer,
    model_name: str,
    refuse: Refuse,
) -> None:
    toolset = {
        "type": "agent_toolset_20260401",
        "configs": [{"name": "web_search", "enabled": False}],
    }
    fake_model.script(
        model_name,
        [Reply.tool_use("write", {"file_path": "a.txt", "content": "x"}), Reply.text("done")],
    )
    agent = await reverie.create_agent({"name": "t", "model": model_name, "tools": [toolset]})
    session = await reverie.create_session({"agent": agent.id})
    await refuse(session.id, "agent.tool_result")
    await reverie.send_message(session.id, "write it")
    await _assert_ended_with_error(reverie, temporal_client, session.id, "agent.tool_result")
    assert len(fake_model.requests(model_name)) == 1
