"""One truth for status: the workflow's state, the `ReverieSessionStatus` search attribute, the
session row and the status events agree, `rescheduling` included."""

from __future__ import annotations

import asyncio

from temporalio.client import Client

from reverie.models.workflow_io import SessionOptions
from reverie.starter.client import ReverieClient
from reverie.workflows.session import SESSION_STATUS, SessionWorkflow
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import (
    all_events,
    assert_spans_closed,
    new_agent,
    types_of,
    wait_for_event,
    worker_process,
)


async def _statuses(client: ReverieClient, temporal: Client, session_id: str) -> dict[str, str]:
    handle = temporal.get_workflow_handle(session_id)
    state = await handle.query(SessionWorkflow.state)
    attribute = (await handle.describe()).typed_search_attributes.get(SESSION_STATUS)
    row = await client.get_session(session_id)
    return {"workflow": state.status, "search attribute": attribute or "", "row": row.status}


async def _until_agreed(
    client: ReverieClient, temporal: Client, session_id: str, status: str
) -> dict[str, str]:
    """The search attribute is written when the workflow task completes, just after the row:
    give it a moment, then report what each says."""
    seen: dict[str, str] = {}
    for _ in range(100):
        seen = await _statuses(client, temporal, session_id)
        if set(seen.values()) == {status}:
            break
        await asyncio.sleep(0.05)
    return seen


async def test_rescheduling_is_the_status_everywhere(
    own_queue: ReverieClient,
    temporal_client: Client,
    fake_model: FakeModelServer,
    model_name: str,
) -> None:
    # The worker process keeps the default backoff cap (60 s): the retry waits 30 s, long
    # enough to look at every status, and the interrupt then ends the wait.
    fake_model.script(model_name, [Reply.error(429, retry_after=30), Reply.text("later")])
    agent_id = await new_agent(own_queue, model_name)
    async with worker_process(own_queue.settings):
        session = await own_queue.create_session(
            {"agent": agent_id}, options=SessionOptions(heartbeat_timeout_seconds=3)
        )
        await own_queue.send_message(session.id, "hello")
        await wait_for_event(own_queue, session.id, "session.status_rescheduled")
        assert await _until_agreed(own_queue, temporal_client, session.id, "rescheduling") == {
            "workflow": "rescheduling",
            "search attribute": "rescheduling",
            "row": "rescheduling",
        }

        await own_queue.interrupt(session.id)
        await own_queue.wait_until_settled(session.id, timeout=30)
        assert await _until_agreed(own_queue, temporal_client, session.id, "idle") == {
            "workflow": "idle",
            "search attribute": "idle",
            "row": "idle",
        }

        await own_queue.send_message(session.id, "again")
        await own_queue.wait_until_settled(session.id, timeout=30)

    events = await all_events(own_queue, session.id)
    assert_spans_closed(events)
    status_events = [
        e.type.removeprefix("session.status_")
        for e in events
        if e.type.startswith("session.status_")
    ]
    assert status_events == ["running", "rescheduled", "idle", "running", "idle"]
    assert [e.payload["content"][0]["text"] for e in events if e.type == "agent.message"] == [
        "later"
    ]
    assert types_of(events).count("session.error") == 1
