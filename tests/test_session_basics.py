"""A session end to end: multi-turn conversation, prompt caching, usage, bad input."""

from __future__ import annotations

import pytest

from reverie.models.errors import InvalidRequestError, NotFoundError, NotSupportedError
from reverie.starter.client import ReverieClient
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import all_events, assert_each_once, new_agent, types_of


async def test_multi_turn_conversation(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(model_name, [Reply.text("Hello, Ada."), Reply.text("You are Ada.")])
    agent_id = await new_agent(reverie, model_name, system="Be brief.")
    session = await reverie.create_session({"agent": agent_id, "title": "greeting"})
    assert session.status == "idle"

    echo = await reverie.send_message(session.id, "Hi, I am Ada.")
    assert echo.id.startswith("sevt_") and echo.processed_at is not None
    await reverie.wait_until_settled(session.id)
    await reverie.send_message(session.id, "Who am I?")
    done = await reverie.wait_until_settled(session.id)

    events = await all_events(reverie, session.id)
    assert_each_once(events)
    messages = [e.payload["content"][0]["text"] for e in events if e.type == "agent.message"]
    assert messages == ["Hello, Ada.", "You are Ada."]
    assert types_of(events).count("session.status_idle") == 2
    idle = [e for e in events if e.type == "session.status_idle"][-1]
    assert idle.payload["stop_reason"] == {"type": "end_turn"}

    # The second request carries the whole conversation, with the system prompt and the
    # transcript prefix marked for caching.
    second = fake_model.requests(model_name)[1]
    assert [m["role"] for m in second["messages"]] == ["user", "assistant", "user"]
    assert second["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert second["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert done.usage.cache_read_input_tokens > 0
    assert done.usage.output_tokens > 0
    assert done.stats.model_requests == 2
    assert done.stats.turns == 2


async def test_event_order_of_one_turn(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    agent_id = await new_agent(reverie, model_name)
    session = await reverie.create_session(
        {"agent": agent_id, "initial_events": [{"type": "user.message", "content": "ping"}]}
    )
    await reverie.wait_until_settled(session.id)
    kinds = types_of(await all_events(reverie, session.id))
    assert kinds == [
        "user.message",
        "session.status_running",
        "span.model_request_start",
        "agent.message",
        "span.model_request_end",
        "session.status_idle",
    ]


async def test_bad_input_is_refused_and_writes_nothing(
    reverie: ReverieClient, model_name: str
) -> None:
    agent_id = await new_agent(reverie, model_name)
    session = await reverie.create_session({"agent": agent_id})
    before = await all_events(reverie, session.id)
    bad = [
        ([{"type": "user.shout", "content": "hi"}], "unknown event type"),
        ([{"type": "user.message", "content": []}], "at least 1"),
        ([{"type": "user.message", "content": "   "}], "blank"),
        ([{"type": "user.message", "content": "x" * 300_000}], "exceeds the limit"),
        (
            [{"type": "user.tool_confirmation", "tool_use_id": "sevt_x", "result": "allow"}],
            "no tool use",
        ),
        ([], "at least one event"),
    ]
    for events, message in bad:
        with pytest.raises(InvalidRequestError, match=message):
            await reverie.send_events(session.id, events)
    assert await all_events(reverie, session.id) == before
    assert await reverie.pool.fetchval("SELECT count(*) FROM staged_events") == 0

    with pytest.raises(NotFoundError, match="no agent"):
        await reverie.create_session({"agent": "agent_doesnotexist"})
    with pytest.raises(NotFoundError, match="no session"):
        await reverie.send_message("sesn_doesnotexist", "hello")
    with pytest.raises(NotSupportedError, match="file rubrics"):
        await reverie.send_events(
            session.id,
            [
                {
                    "type": "user.define_outcome",
                    "description": "d",
                    "rubric": {"type": "file", "file_id": "file_011CNha8iCJcU1wXNR6q4V8w"},
                }
            ],
        )


async def test_archived_session_takes_no_messages(reverie: ReverieClient, model_name: str) -> None:
    agent_id = await new_agent(reverie, model_name)
    session = await reverie.create_session({"agent": agent_id})
    archived = await reverie.archive_session(session.id)
    assert archived.status == "terminated" and archived.archived_at is not None
    before = await all_events(reverie, session.id)
    assert types_of(before) == ["session.status_terminated"]
    with pytest.raises(InvalidRequestError, match="archived"):
        await reverie.send_message(session.id, "anyone there?")
    assert await all_events(reverie, session.id) == before
