"""What a session does when the model answers 429, 529, 500 or 400, or is slow."""

from __future__ import annotations

import asyncio
import time

import pytest

from reverie.models.errors import InvalidRequestError
from reverie.starter.client import ReverieClient
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import (
    all_events,
    assert_each_once,
    assert_spans_closed,
    new_agent,
    types_of,
    wait_for_event,
    worker_process,
)


async def test_rate_limited_then_overloaded_then_success(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(
        model_name,
        [Reply.error(429, retry_after=1.5), Reply.error(529), Reply.text("made it")],
    )
    agent_id = await new_agent(reverie, model_name)
    session = await reverie.create_session({"agent": agent_id})
    await reverie.send_message(session.id, "hello")

    await fake_model.wait_for_requests(model_name, 1)
    first = time.monotonic()
    await fake_model.wait_for_requests(model_name, 2)
    # `retry-after: 1.5` is honoured rather than the 1 s default backoff.
    assert time.monotonic() - first >= 1.3
    done = await reverie.wait_until_settled(session.id, timeout=30)

    events = await all_events(reverie, session.id)
    assert_each_once(events)
    errors = [e.payload["error"] for e in events if e.type == "session.error"]
    assert [(e["type"], e["retry_status"]["type"]) for e in errors] == [
        ("model_rate_limited_error", "retrying"),
        ("model_overloaded_error", "retrying"),
    ]
    assert types_of(events).count("session.status_rescheduled") == 2
    assert [e.payload["content"][0]["text"] for e in events if e.type == "agent.message"] == [
        "made it"
    ]
    assert types_of(events)[-1] == "session.status_idle"
    assert events[-1].payload["stop_reason"] == {"type": "end_turn"}
    assert done.status == "idle"
    assert len(fake_model.requests(model_name)) == 3


async def test_retries_exhausted_idles_the_session(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    attempts = reverie.settings.model_max_attempts
    fake_model.script(model_name, [Reply.error(500)] * attempts)
    agent_id = await new_agent(reverie, model_name)
    session = await reverie.create_session({"agent": agent_id})
    await reverie.send_message(session.id, "hello")
    done = await reverie.wait_until_settled(session.id, timeout=60)

    events = await all_events(reverie, session.id)
    assert_each_once(events)
    statuses = [
        e.payload["error"]["retry_status"]["type"] for e in events if e.type == "session.error"
    ]
    assert statuses == ["retrying"] * (attempts - 1) + ["exhausted"]
    # The call's span closes, as an error, before the session idles.
    assert_spans_closed(events)
    end = next(e for e in events if e.type == "span.model_request_end")
    assert end.payload["is_error"] is True
    assert types_of(events).index("span.model_request_end") < types_of(events).index(
        "session.status_idle"
    )
    assert events[-1].type == "session.status_idle"
    assert events[-1].payload["stop_reason"] == {"type": "retries_exhausted"}
    assert done.status == "idle"
    assert len(fake_model.requests(model_name)) == attempts

    # The session is still usable: the next message gets an answer.
    fake_model.script(model_name, [Reply.text("back again")])
    await reverie.send_message(session.id, "try again")
    await reverie.wait_until_settled(session.id)
    texts = [
        e.payload["content"][0]["text"]
        for e in await all_events(reverie, session.id)
        if e.type == "agent.message"
    ]
    assert texts == ["back again"]


async def test_bad_request_is_terminal(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    # (A 400 "prompt is too long" is no longer terminal: the transcript is compacted, see
    # test_session_compaction.py.)
    fake_model.script(model_name, [Reply.error(400, message="messages: roles must alternate")])
    agent_id = await new_agent(reverie, model_name)
    session = await reverie.create_session({"agent": agent_id})
    await reverie.send_message(session.id, "hello")
    done = await reverie.wait_until_settled(session.id)

    events = await all_events(reverie, session.id)
    errors = [e.payload["error"] for e in events if e.type == "session.error"]
    assert len(errors) == 1
    assert errors[0]["retry_status"] == {"type": "terminal"}
    assert errors[0]["type"] == "model_request_failed_error"
    assert "roles must alternate" in errors[0]["message"]
    assert events[-1].type == "session.status_terminated"
    assert_spans_closed(events)
    end = next(e for e in events if e.type == "span.model_request_end")
    assert end.payload["is_error"] is True
    assert done.status == "terminated"
    assert len(fake_model.requests(model_name)) == 1
    with pytest.raises(InvalidRequestError, match="terminated"):
        await reverie.send_message(session.id, "again?")


async def test_interrupt_during_a_slow_model_call(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(model_name, [Reply.text("too late", delay=30), Reply.text("fresh answer")])
    agent_id = await new_agent(reverie, model_name)
    session = await reverie.create_session({"agent": agent_id})
    await reverie.send_message(session.id, "write a long essay")
    await fake_model.wait_for_requests(model_name, 1)

    started = time.monotonic()
    interrupt = await reverie.interrupt(session.id)
    assert interrupt.type == "user.interrupt"
    await reverie.wait_until_settled(session.id, timeout=15)
    assert time.monotonic() - started < 10

    events = await all_events(reverie, session.id)
    assert "agent.message" not in types_of(events)
    assert events[-1].type == "session.status_idle"
    ends = [e for e in events if e.type == "span.model_request_end"]
    assert len(ends) == 1 and ends[0].payload["is_error"] is True

    # The next turn sees both user messages (the interrupted one was never answered).
    await reverie.send_message(session.id, "never mind, say hi")
    await reverie.wait_until_settled(session.id)
    last = fake_model.requests(model_name)[-1]["messages"]
    assert [m["role"] for m in last] == ["user"]
    texts = [b["text"] for b in last[0]["content"]]
    assert texts == ["write a long essay", "never mind, say hi"]
    answers = [e for e in await all_events(reverie, session.id) if e.type == "agent.message"]
    assert [a.payload["content"][0]["text"] for a in answers] == ["fresh answer"]


async def test_message_sent_mid_turn_is_taken_up_in_that_turn(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(model_name, [Reply.text("first", delay=1.5), Reply.text("second")])
    agent_id = await new_agent(reverie, model_name)
    session = await reverie.create_session({"agent": agent_id})
    await reverie.send_message(session.id, "one")
    await fake_model.wait_for_requests(model_name, 1)
    await reverie.send_message(session.id, "two")
    await reverie.wait_until_settled(session.id, timeout=20)
    await asyncio.sleep(0.2)

    events = await all_events(reverie, session.id)
    assert types_of(events).count("session.status_running") == 1
    assert types_of(events).count("session.status_idle") == 1
    assert types_of(events).count("agent.message") == 2
    second = fake_model.requests(model_name)[1]["messages"]
    assert [m["role"] for m in second] == ["user", "assistant", "user"]


async def test_interrupt_during_the_retry_backoff(
    own_queue: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    """The session waits (rescheduling) before retrying a 429; an interrupt ends the wait, the
    span closes, and the unanswered message is part of the next turn. (A worker process of the
    test's own keeps the default backoff cap, so the wait is long enough to interrupt.)"""
    fake_model.script(model_name, [Reply.error(429, retry_after=60), Reply.text("fresh answer")])
    agent_id = await new_agent(own_queue, model_name)
    async with worker_process(own_queue.settings):
        session = await own_queue.create_session({"agent": agent_id})
        await own_queue.send_message(session.id, "first")
        await wait_for_event(own_queue, session.id, "session.status_rescheduled")
        await own_queue.interrupt(session.id)
        await own_queue.wait_until_settled(session.id, timeout=15)

        events = await all_events(own_queue, session.id)
        assert_spans_closed(events)
        assert events[-1].type == "session.status_idle"
        assert events[-1].payload["stop_reason"] == {"type": "end_turn"}
        assert len(fake_model.requests(model_name)) == 1

        await own_queue.send_message(session.id, "second")
        await own_queue.wait_until_settled(session.id)
    last = fake_model.requests(model_name)[-1]["messages"]
    assert [b["text"] for b in last[0]["content"]] == ["first", "second"]
    events = await all_events(own_queue, session.id)
    assert_each_once(events)
    assert_spans_closed(events)
