"""Bounded, clean input: request limits, atomic creation, NUL characters, deep JSON.

Every refusal here must be a `ReverieError` with a message for a person, and must leave nothing
behind; text that the model or a tool produces is never refused, only made storable.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from reverie.models.common import MAX_JSON_DEPTH, NUL_MARKER
from reverie.models.errors import InvalidRequestError, ReverieError
from reverie.models.events import MAX_EVENTS_PER_REQUEST
from reverie.settings import Settings
from reverie.starter.client import ReverieClient
from reverie.store import events
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import all_events, new_agent, types_of


def nested(depth: int) -> dict[str, Any]:
    """`{"a": {"a": ... {}}}` with `depth` objects, built without recursion."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def staged_count(reverie: ReverieClient, session_id: str) -> int:
    return await reverie.pool.fetchval(
        "SELECT count(*) FROM staged_events WHERE session_id = $1", session_id
    )


async def sessions_of(reverie: ReverieClient, agent_id: str) -> int:
    return await reverie.pool.fetchval(
        "SELECT count(*) FROM sessions WHERE agent_id = $1", agent_id
    )


# ---- item 9: bounded requests ------------------------------------------------------------------


async def test_at_most_50_events_per_request(
    reverie: ReverieClient, model_name: str, fake_model: FakeModelServer
) -> None:
    agent_id = await new_agent(reverie, model_name)
    session = await reverie.create_session({"agent": agent_id})
    for count in (MAX_EVENTS_PER_REQUEST + 1, 10_000):
        with pytest.raises(InvalidRequestError, match="at most 50 events"):
            await reverie.send_events(
                session.id, [{"type": "user.message", "content": "x"}] * count
            )
    assert await staged_count(reverie, session.id) == 0
    assert await all_events(reverie, session.id) == []

    fake_model.script(model_name, [Reply.text("fifty read")])
    echoes = await reverie.send_events(
        session.id, [{"type": "user.message", "content": f"m{i}"} for i in range(50)]
    )
    assert len(echoes) == 50
    await reverie.wait_until_settled(session.id, timeout=30)


async def test_a_request_too_big_for_temporal_is_refused_up_front(
    reverie: ReverieClient, model_name: str
) -> None:
    """Each event is under the 256 KiB limit, but together their ids would make a Temporal
    update of about 4 MB: refused before anything is staged, not with a raw gRPC error."""
    agent_id = await new_agent(reverie, model_name)
    session = await reverie.create_session({"agent": agent_id})
    big = [
        {"type": "user.tool_confirmation", "tool_use_id": f"{i}" + "x" * 200_000, "result": "allow"}
        for i in range(20)
    ]
    with pytest.raises(InvalidRequestError, match="tool_use_id"):
        await reverie.send_events(session.id, big)
    assert await staged_count(reverie, session.id) == 0
    assert await all_events(reverie, session.id) == []


# ---- item 10: creation is atomic ---------------------------------------------------------------


async def test_a_session_with_a_bad_initial_event_is_not_created(
    reverie: ReverieClient, model_name: str
) -> None:
    agent_id = await new_agent(reverie, model_name)
    bad_initial = [
        [{"type": "user.message", "content": "fine"}, {"type": "user.message", "content": "a\0b"}],
        [{"type": "user.message", "content": "x"}] * 51,
        [{"type": "user.interrupt"}],
        [{"type": "user.message", "content": [{"type": "image", "source": nested(500)}]}],
    ]
    for initial in bad_initial:
        with pytest.raises(InvalidRequestError):
            await reverie.create_session({"agent": agent_id, "initial_events": initial})
    assert await sessions_of(reverie, agent_id) == 0


async def test_a_session_whose_workflow_cannot_start_leaves_nothing(
    reverie: ReverieClient, settings: Settings, model_name: str
) -> None:
    """Temporal refuses the start (here: a namespace that does not exist): no row, no events."""
    elsewhere = await Client.connect(
        settings.temporal_address or "",
        namespace="no-such-namespace",
        data_converter=pydantic_data_converter,
    )
    client = ReverieClient(elsewhere, reverie.pool, settings)
    agent_id = await new_agent(reverie, model_name)
    with pytest.raises(Exception) as raised:
        await client.create_session(
            {"agent": agent_id, "initial_events": [{"type": "user.message", "content": "hi"}]}
        )
    assert "no-such-namespace" in str(raised.value)
    assert await sessions_of(reverie, agent_id) == 0
    orphans = await reverie.pool.fetchval(
        "SELECT count(*) FROM events e LEFT JOIN sessions s ON s.id = e.session_id"
        " WHERE s.id IS NULL"
    )
    assert orphans == 0


async def test_initial_events_start_the_first_turn(
    reverie: ReverieClient, model_name: str, fake_model: FakeModelServer
) -> None:
    fake_model.script(model_name, [Reply.text("hello both")])
    agent_id = await new_agent(reverie, model_name)
    session = await reverie.create_session(
        {
            "agent": agent_id,
            "initial_events": [
                {"type": "user.message", "content": "one"},
                {"type": "user.message", "content": "two"},
            ],
        }
    )
    settled = await reverie.wait_until_settled(session.id, timeout=30)
    assert settled.status == "idle"
    recorded = await all_events(reverie, session.id)
    assert types_of(recorded)[:3] == ["user.message", "user.message", "session.status_running"]
    assert types_of(recorded)[-1] == "session.status_idle"
    request = fake_model.requests(model_name)[0]
    sent = [block["text"] for block in request["messages"][0]["content"]]
    assert sent == ["one", "two"]


# ---- item 11: NUL characters and deep JSON -----------------------------------------------------


async def test_nul_in_user_input_is_refused_and_changes_nothing(
    reverie: ReverieClient, model_name: str
) -> None:
    agent_id = await new_agent(reverie, model_name)
    session = await reverie.create_session({"agent": agent_id})
    tool = {"type": "custom", "name": "t", "description": "d", "input_schema": {"type": "object"}}
    bad_agents: list[dict[str, Any]] = [
        {"name": "a\0", "model": model_name},
        {"name": "a", "model": model_name, "system": "be\0brief"},
        {"name": "a", "model": model_name, "description": "\0"},
        {"name": "a", "model": model_name, "metadata": {"k\0": "v"}},
        {"name": "a", "model": model_name, "metadata": {"k": "v\0"}},
        {"name": "a", "model": model_name, "tools": [{**tool, "description": "x\0"}]},
        {"name": "a", "model": model_name, "tools": [{**tool, "input_schema": {"t\0": 1}}]},
    ]
    for body in bad_agents:
        with pytest.raises(InvalidRequestError, match="NUL"):
            await reverie.create_agent(body)
    with pytest.raises(InvalidRequestError, match="NUL"):
        await reverie.update_agent(agent_id, {"metadata": {"k": "\0"}})
    with pytest.raises(InvalidRequestError, match="NUL"):
        await reverie.create_environment({"name": "e\0"})
    for body in ({"title": "t\0"}, {"metadata": {"k": "\0"}}):
        with pytest.raises(InvalidRequestError, match="NUL"):
            await reverie.create_session({"agent": agent_id, **body})
    bad_events: list[dict[str, Any]] = [
        {"type": "user.message", "content": "hello\0world"},
        {"type": "user.message", "content": [{"type": "image", "source": {"data": "\0"}}]},
        {
            "type": "user.tool_confirmation",
            "tool_use_id": "x",
            "result": "deny",
            "deny_message": "\0",
        },
        {"type": "user.custom_tool_result", "custom_tool_use_id": "x", "content": "r\0"},
    ]
    for event in bad_events:
        with pytest.raises(InvalidRequestError, match="NUL"):
            await reverie.send_events(session.id, [event])
    with pytest.raises(InvalidRequestError, match="NUL"):
        await reverie.send_message(session.id, "a\0b")
    for lookup in (
        reverie.get_session("sesn_\0"),
        reverie.get_agent("agent_\0"),
        reverie.list_events("sesn_\0"),
    ):
        with pytest.raises(ReverieError):
            await lookup
    assert (await reverie.get_agent(agent_id)).version == 1
    assert await sessions_of(reverie, agent_id) == 1
    assert await staged_count(reverie, session.id) == 0
    assert await all_events(reverie, session.id) == []


async def test_json_deeper_than_the_limit_is_refused(
    reverie: ReverieClient, model_name: str
) -> None:
    agent_id = await new_agent(reverie, model_name)
    session = await reverie.create_session({"agent": agent_id})
    tool = {"type": "custom", "name": "t", "description": "d"}
    # Just within the limit: the schema sits at depth 4 of the request (body, tools, tool, schema).
    await reverie.create_agent(
        {"name": "ok", "model": model_name, "tools": [{**tool, "input_schema": nested(60)}]}
    )
    for depth in (MAX_JSON_DEPTH, 5_000):
        body = {
            "name": "deep",
            "model": model_name,
            "tools": [{**tool, "input_schema": nested(depth)}],
        }
        with pytest.raises(InvalidRequestError, match=f"deeper than {MAX_JSON_DEPTH}"):
            await reverie.create_agent(body)
    deep_message = {"type": "user.message", "content": [{"type": "image", "source": nested(5_000)}]}
    with pytest.raises(InvalidRequestError, match=f"deeper than {MAX_JSON_DEPTH}"):
        await reverie.send_events(session.id, [deep_message])
    with pytest.raises(InvalidRequestError, match=f"deeper than {MAX_JSON_DEPTH}"):
        await reverie.create_session({"agent": agent_id, "initial_events": [deep_message]})
    assert await sessions_of(reverie, agent_id) == 1
    assert await staged_count(reverie, session.id) == 0


async def test_nul_in_model_text_is_recorded_with_a_marker(
    reverie: ReverieClient, model_name: str, fake_model: FakeModelServer
) -> None:
    fake_model.script(
        model_name,
        [
            Reply.text("before\0after"),
            Reply.tool_use("no_such_tool", {"key\0": "value\0"}, text="tool\0text"),
            Reply.text("done"),
        ],
    )
    agent_id = await new_agent(reverie, model_name)
    session = await reverie.create_session({"agent": agent_id})
    await reverie.send_message(session.id, "say something odd")
    await reverie.wait_until_settled(session.id, timeout=30)
    recorded = await all_events(reverie, session.id)
    assert "session.error" not in types_of(recorded)
    messages = [e for e in recorded if e.type == "agent.message"]
    assert messages[0].payload["content"] == [{"type": "text", "text": f"before{NUL_MARKER}after"}]
    assert recorded[-1].payload["stop_reason"] == {"type": "end_turn"}

    # The transcript holds the same marker: the next turn sends it back to the model.
    await reverie.send_message(session.id, "again")
    await reverie.wait_until_settled(session.id, timeout=30)
    recorded = await all_events(reverie, session.id)
    assert "session.error" not in types_of(recorded)
    custom = next(e for e in recorded if e.type in ("agent.custom_tool_use", "agent.tool_use"))
    assert custom.payload["input"] == {f"key{NUL_MARKER}": f"value{NUL_MARKER}"}
    texts = [b["text"] for e in recorded if e.type == "agent.message" for b in e.payload["content"]]
    assert f"tool{NUL_MARKER}text" in texts
    history = fake_model.requests(model_name)[1]["messages"]
    assert history[1]["role"] == "assistant"
    assert history[1]["content"][0]["text"] == f"before{NUL_MARKER}after"
    assert recorded[-1].type == "session.status_idle"


async def test_nul_in_bash_output_is_recorded_with_a_marker(
    reverie: ReverieClient, model_name: str, fake_model: FakeModelServer
) -> None:
    fake_model.script(
        model_name,
        [Reply.tool_use("bash", {"command": "printf 'one\\0two'"}), Reply.text("read it")],
    )
    agent_id = await new_agent(
        reverie,
        model_name,
        tools=[
            {
                "type": "agent_toolset_20260401",
                "configs": [{"name": "web_search", "enabled": False}],
            }
        ],
    )
    session = await reverie.create_session({"agent": agent_id})
    await reverie.send_message(session.id, "run it")
    await reverie.wait_until_settled(session.id, timeout=60)
    recorded = await all_events(reverie, session.id)
    result = next(e for e in recorded if e.type == "agent.tool_result")
    assert result.payload["is_error"] is False
    text = " ".join(b.get("text", "") for b in result.payload["content"])
    assert f"one{NUL_MARKER}two" in text and "interrupted" not in text
    assert recorded[-1].payload["stop_reason"] == {"type": "end_turn"}


async def test_the_event_log_stores_what_postgres_cannot(
    reverie: ReverieClient, model_name: str
) -> None:
    """`events.append` is the one place every recorder goes through: NUL and unpaired
    surrogates, in keys and values at any depth, are replaced instead of failing the write."""
    agent_id = await new_agent(reverie, model_name)
    session = await reverie.create_session({"agent": agent_id})
    payload = {"content": [{"type": "text", "text": "a\0b\ud800c"}], "input": {"k\0": ["\0"]}}
    now = datetime.now(UTC)
    await events.append(reverie.pool, session.id, [("sevt_nul_1", "agent.message", payload, now)])
    (event,) = await reverie.list_events(session.id)
    assert event.payload["content"] == [{"type": "text", "text": f"a{NUL_MARKER}b\ufffdc"}]
    assert event.payload["input"] == {f"k{NUL_MARKER}": [NUL_MARKER]}
    assert payload["input"] == {"k\0": ["\0"]}, "the caller's payload is left as it was"
