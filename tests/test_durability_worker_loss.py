"""Attempts lost with a dead worker do not spend the model's retry budget."""

from __future__ import annotations

from reverie.models.workflow_io import SessionOptions
from reverie.starter.client import ReverieClient
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import (
    all_events,
    assert_each_once,
    assert_spans_closed,
    kill,
    new_agent,
    types_of,
    worker_process,
)


async def test_dead_workers_do_not_count_against_the_model_error_budget(
    own_queue: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    """Two 429s and two workers killed mid-call, with a budget of three model attempts: the
    model erred only twice, so the third model answer is still allowed and the turn succeeds."""
    fake_model.script(
        model_name,
        [
            Reply.error(429, retry_after=0),
            Reply.error(429, retry_after=0),
            Reply.text("lost with the first worker", delay=30),
            Reply.text("lost with the second worker", delay=30),
            Reply.text("made it"),
        ],
    )
    options = SessionOptions(model_max_attempts=3, heartbeat_timeout_seconds=2)
    agent_id = await new_agent(own_queue, model_name)
    async with worker_process(own_queue.settings) as first:
        session = await own_queue.create_session({"agent": agent_id}, options=options)
        await own_queue.send_message(session.id, "hello")
        await fake_model.wait_for_requests(model_name, 3, timeout=30)
        await kill(first)
    async with worker_process(own_queue.settings) as second:
        await fake_model.wait_for_requests(model_name, 4, timeout=30)
        await kill(second)
    async with worker_process(own_queue.settings):
        done = await own_queue.wait_until_settled(session.id, timeout=60)

    events = await all_events(own_queue, session.id)
    assert_each_once(events)
    assert_spans_closed(events)
    errors = [e.payload["error"] for e in events if e.type == "session.error"]
    assert [(e["type"], e["retry_status"]["type"]) for e in errors] == [
        ("model_rate_limited_error", "retrying"),
        ("model_rate_limited_error", "retrying"),
    ]
    assert [e.payload["content"][0]["text"] for e in events if e.type == "agent.message"] == [
        "made it"
    ]
    assert events[-1].type == "session.status_idle"
    assert events[-1].payload["stop_reason"] == {"type": "end_turn"}
    assert done.status == "idle"
    assert types_of(events).count("span.model_request_start") == 1
    assert len(fake_model.requests(model_name)) == 5
