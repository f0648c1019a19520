"""The official Python SDK drives Reverie's HTTP API: every answer fits the SDK's own types."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import pytest
from anthropic.types.beta import (
    BetaEnvironment,
    BetaManagedAgentsAgent,
    BetaManagedAgentsSession,
)
from anthropic.types.beta.sessions import (
    BetaManagedAgentsSendSessionEvents,
    BetaManagedAgentsSessionEvent,
)

from tests.fake_model import FakeModelServer, Reply
from tests.sdk_conformance import assert_fits

BETA = {"anthropic-beta": "managed-agents-2026-04-01"}


async def raw_json(call: Any) -> Any:
    """The answer's JSON as sent (not the SDK's parse of it), and the request-id header."""
    response = await call
    assert response.headers.get("request-id", "").startswith("req_"), response.headers
    return response.http_response.json()


async def stream_until(
    sdk: anthropic.AsyncAnthropic, session_id: str, stop: str, seen: list[Any]
) -> None:
    async with await sdk.beta.sessions.events.stream(session_id) as stream:
        async for event in stream:
            seen.append(event)
            if event.type == stop:
                return


async def test_sdk_creates_an_agent_and_a_session_and_streams_a_turn_until_idle(
    sdk: anthropic.AsyncAnthropic, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(model_name, [Reply.text("Hello from the fake model.")])
    raw = sdk.beta.agents.with_raw_response
    agent = await raw_json(
        raw.create(
            name="helper",
            model=model_name,
            system="Be brief.",
            tools=[{"type": "agent_toolset_20260401"}],
        )
    )
    assert_fits(agent, BetaManagedAgentsAgent)
    assert agent["version"] == 1 and agent["id"].startswith("agent_")

    session = await raw_json(
        sdk.beta.sessions.with_raw_response.create(agent=agent["id"], environment_id="env_default")
    )
    assert_fits(session, BetaManagedAgentsSession)
    assert session["status"] == "idle" and session["agent"]["id"] == agent["id"]

    seen: list[Any] = []
    streaming = asyncio.create_task(stream_until(sdk, session["id"], "session.status_idle", seen))
    await asyncio.sleep(0.3)  # the stream is open before the message goes (it has no replay)
    sent = await raw_json(
        sdk.beta.sessions.events.with_raw_response.send(
            session["id"],
            events=[{"type": "user.message", "content": [{"type": "text", "text": "Hi"}]}],
        )
    )
    assert_fits(sent, BetaManagedAgentsSendSessionEvents)
    await asyncio.wait_for(streaming, 30)

    types = [event.type for event in seen]
    assert "agent.message" in types and types[-1] == "session.status_idle"
    message = next(e for e in seen if e.type == "agent.message")
    assert message.content[0].text == "Hello from the fake model."

    listed = [event async for event in sdk.beta.sessions.events.list(session["id"])]
    assert [e.id for e in listed][-len(seen) :] == [e.id for e in seen]
    page = await raw_json(sdk.beta.sessions.events.with_raw_response.list(session["id"], limit=100))
    for item in page["data"]:
        assert_fits(item, BetaManagedAgentsSessionEvent)

    retrieved = await sdk.beta.sessions.retrieve(session["id"])
    assert retrieved.status == "idle" and retrieved.usage.output_tokens > 0

    archived = await raw_json(sdk.beta.sessions.with_raw_response.archive(session["id"]))
    assert_fits(archived, BetaManagedAgentsSession)
    assert archived["archived_at"] is not None


async def test_environment_routes_answer_in_the_sdk_shape(sdk: anthropic.AsyncAnthropic) -> None:
    raw = sdk.beta.environments.with_raw_response
    created = await raw_json(
        raw.create(
            name="limited",
            config={
                "type": "cloud",
                "networking": {"type": "limited", "allowed_hosts": ["example.com"]},
            },
            metadata={"team": "docs"},
        )
    )
    assert_fits(created, BetaEnvironment)
    assert created["config"]["networking"]["allowed_hosts"] == ["example.com"]
    updated = await raw_json(
        raw.update(created["id"], description="for docs", metadata={"team": None})
    )
    assert_fits(updated, BetaEnvironment)
    assert updated["description"] == "for docs" and updated["metadata"] == {}
    assert updated["config"]["networking"]["type"] == "limited"  # omitted config is kept
    fetched = await sdk.beta.environments.retrieve(created["id"])
    assert fetched.id == created["id"]
    ids = [env.id async for env in sdk.beta.environments.list(limit=2)]
    assert created["id"] in ids and "env_default" in ids
    archived = await raw_json(raw.archive(created["id"]))
    assert_fits(archived, BetaEnvironment)
    assert archived["archived_at"] is not None
    assert created["id"] not in [env.id async for env in sdk.beta.environments.list()]
    deleted = await sdk.beta.environments.delete(created["id"])
    assert deleted.type == "environment_deleted" and deleted.id == created["id"]
    with pytest.raises(anthropic.NotFoundError):
        await sdk.beta.environments.retrieve(created["id"])
