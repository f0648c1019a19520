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
    assert archived["archived_at"] is not None and archived["status"] == "terminated"


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


async def test_agent_routes_version_update_conflict_and_archive(
    sdk: anthropic.AsyncAnthropic, model_name: str
) -> None:
    raw = sdk.beta.agents.with_raw_response
    created = await raw_json(raw.create(name="versioned", model=model_name))
    agent_id = created["id"]
    updated = await raw_json(raw.update(agent_id, version=1, system="Be kind."))
    assert_fits(updated, BetaManagedAgentsAgent)
    assert updated["version"] == 2 and updated["system"] == "Be kind."
    with pytest.raises(anthropic.ConflictError) as conflict:
        await sdk.beta.agents.update(agent_id, version=1, system="stale")
    assert "version" in str(conflict.value)
    first = await raw_json(raw.retrieve(agent_id, version=1))
    assert_fits(first, BetaManagedAgentsAgent)
    assert first["version"] == 1 and first["system"] is None
    versions = [a.version async for a in sdk.beta.agents.versions.list(agent_id, limit=1)]
    assert versions == [2, 1]  # paged one at a time, newest first
    page = await raw_json(sdk.beta.agents.versions.with_raw_response.list(agent_id))
    for item in page["data"]:
        assert_fits(item, BetaManagedAgentsAgent)
    listed = [a.id async for a in sdk.beta.agents.list(limit=2)]
    assert agent_id in listed and len(listed) == len(set(listed))
    archived = await raw_json(raw.archive(agent_id))
    assert_fits(archived, BetaManagedAgentsAgent)
    assert agent_id not in [a.id async for a in sdk.beta.agents.list()]
    assert agent_id in [a.id async for a in sdk.beta.agents.list(include_archived=True)]
    with pytest.raises(anthropic.BadRequestError):
        await sdk.beta.agents.update(agent_id, version=2, system="after archive")
    with pytest.raises(anthropic.BadRequestError):
        await sdk.beta.sessions.create(agent=agent_id, environment_id="env_default")


async def test_session_routes_list_filters_update_and_delete(
    sdk: anthropic.AsyncAnthropic, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(model_name, [Reply.text("done")])
    agent = await sdk.beta.agents.create(name="lister", model=model_name)
    pinned = await sdk.beta.sessions.create(
        agent={"type": "agent", "id": agent.id, "version": 1},
        environment_id="env_default",
        title="first",
        metadata={"k": "v"},
        initial_events=[{"type": "user.message", "content": [{"type": "text", "text": "go"}]}],
    )
    second = await sdk.beta.sessions.create(agent=agent.id, environment_id="env_default")
    newest_first = [s.id async for s in sdk.beta.sessions.list(agent_id=agent.id)]
    assert newest_first == [second.id, pinned.id]
    oldest_first = [
        s.id async for s in sdk.beta.sessions.list(agent_id=agent.id, order="asc", limit=1)
    ]
    assert oldest_first == [pinned.id, second.id]
    page = await raw_json(sdk.beta.sessions.with_raw_response.list(agent_id=agent.id))
    for item in page["data"]:
        assert_fits(item, BetaManagedAgentsSession)

    for _ in range(300):
        idled = [
            e async for e in sdk.beta.sessions.events.list(pinned.id, types=["session.status_idle"])
        ]
        if idled and (await sdk.beta.sessions.retrieve(pinned.id)).status == "idle":
            break
        await asyncio.sleep(0.1)
    idle = [s.id async for s in sdk.beta.sessions.list(agent_id=agent.id, statuses=["idle"])]
    assert set(idle) == {pinned.id, second.id}
    assert [s async for s in sdk.beta.sessions.list(agent_id=agent.id, statuses=["running"])] == []
    later = [
        s.id
        async for s in sdk.beta.sessions.list(
            agent_id=agent.id, created_at_gt=pinned.created_at.isoformat()
        )
    ]
    assert later == [second.id]

    updated = await raw_json(
        sdk.beta.sessions.with_raw_response.update(
            pinned.id, title="renamed", metadata={"k": None, "n": "1"}
        )
    )
    assert_fits(updated, BetaManagedAgentsSession)
    assert updated["title"] == "renamed" and updated["metadata"] == {"n": "1"}
    with pytest.raises(anthropic.BadRequestError) as refused:
        await sdk.beta.sessions.update(pinned.id, vault_ids=["vlt_1"])
    assert "not supported yet" in str(refused.value)

    deleted = await sdk.beta.sessions.delete(second.id)
    assert deleted.type == "session_deleted" and deleted.id == second.id
    with pytest.raises(anthropic.NotFoundError):
        await sdk.beta.sessions.retrieve(second.id)
    with pytest.raises(anthropic.NotFoundError):
        await sdk.beta.sessions.events.list(second.id)


async def test_deleting_a_running_session_is_refused(
    sdk: anthropic.AsyncAnthropic, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(model_name, [Reply.text("slow", delay=3.0)])
    agent = await sdk.beta.agents.create(name="busy", model=model_name)
    session = await sdk.beta.sessions.create(agent=agent.id, environment_id="env_default")
    await sdk.beta.sessions.events.send(
        session.id, events=[{"type": "user.message", "content": [{"type": "text", "text": "go"}]}]
    )
    for _ in range(100):
        if (await sdk.beta.sessions.retrieve(session.id)).status == "running":
            break
        await asyncio.sleep(0.05)
    with pytest.raises(anthropic.BadRequestError) as refused:
        await sdk.beta.sessions.delete(session.id)
    assert "running" in str(refused.value)
    assert (await sdk.beta.sessions.retrieve(session.id)).id == session.id


async def test_event_list_filters_order_and_pages(
    sdk: anthropic.AsyncAnthropic, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(model_name, [Reply.text("a"), Reply.text("b")])
    agent = await sdk.beta.agents.create(name="pager", model=model_name)
    session = await sdk.beta.sessions.create(agent=agent.id, environment_id="env_default")
    for text in ("one", "two"):
        seen: list[Any] = []
        waiting = asyncio.create_task(stream_until(sdk, session.id, "session.status_idle", seen))
        await asyncio.sleep(0.2)
        await sdk.beta.sessions.events.send(
            session.id,
            events=[{"type": "user.message", "content": [{"type": "text", "text": text}]}],
        )
        await asyncio.wait_for(waiting, 30)
    everything = [e.id async for e in sdk.beta.sessions.events.list(session.id, limit=100)]
    paged = [e.id async for e in sdk.beta.sessions.events.list(session.id, limit=3)]
    assert paged == everything and len(everything) > 6
    backwards = [
        e.id async for e in sdk.beta.sessions.events.list(session.id, order="desc", limit=4)
    ]
    assert backwards == everything[::-1]
    messages = [
        e.content[0].text
        async for e in sdk.beta.sessions.events.list(session.id, types=["agent.message"])
    ]
    assert messages == ["a", "b"]
    several = [
        e.type
        async for e in sdk.beta.sessions.events.list(
            session.id, types=["user.message", "agent.message"]
        )
    ]
    assert several == ["user.message", "agent.message", "user.message", "agent.message"]


async def test_refusals_reach_the_sdk_as_its_own_errors(
    sdk: anthropic.AsyncAnthropic, model_name: str
) -> None:
    agent = await sdk.beta.agents.create(name="refusals", model=model_name)
    session = await sdk.beta.sessions.create(agent=agent.id, environment_id="env_default")
    cases: list[tuple[Any, type[Exception], str]] = [
        (sdk.beta.agents.retrieve("agent_missing"), anthropic.NotFoundError, "agent_missing"),
        (sdk.beta.sessions.retrieve("sesn_missing"), anthropic.NotFoundError, "sesn_missing"),
        (
            sdk.beta.sessions.create(agent="agent_missing", environment_id="env_default"),
            anthropic.NotFoundError,
            "agent_missing",
        ),
        (
            sdk.beta.sessions.create(agent=agent.id, environment_id="env_missing"),
            anthropic.NotFoundError,
            "env_missing",
        ),
        (
            sdk.beta.sessions.events.send(session.id, events=[{"type": "user.nonsense"}]),
            anthropic.BadRequestError,
            "user.nonsense",
        ),
        (
            sdk.beta.sessions.events.send(
                session.id, events=[{"type": "user.message", "content": []}]
            ),
            anthropic.BadRequestError,
            "content",
        ),
        (
            sdk.beta.sessions.events.send(
                session.id,
                events=[
                    {"type": "user.tool_confirmation", "tool_use_id": "sevt_x", "result": "allow"}
                ],
            ),
            anthropic.BadRequestError,
            "sevt_x",
        ),
        (
            sdk.beta.agents.create(
                name="x", model=model_name, tools=[{"type": "mcp_toolset", "mcp_server_name": "m"}]
            ),
            anthropic.BadRequestError,
            "not supported yet",
        ),
    ]
    for call, error, words in cases:
        with pytest.raises(error) as raised:
            await call
        assert words in str(raised.value), raised.value
    await sdk.beta.sessions.archive(session.id)
    with pytest.raises(anthropic.BadRequestError) as archived:
        await sdk.beta.sessions.events.send(
            session.id,
            events=[{"type": "user.message", "content": [{"type": "text", "text": "hi"}]}],
        )
    assert "archived" in str(archived.value)


async def test_optional_fields_the_sdk_sends_are_accepted_and_unbuilt_ones_named(
    sdk: anthropic.AsyncAnthropic, model_name: str
) -> None:
    agent = await sdk.beta.agents.create(
        name="optional",
        model={"id": model_name, "speed": "standard"},
        description=None,
        system=None,
        mcp_servers=[],
        skills=[],
        tools=[],
        metadata={},
        multiagent=None,
    )
    environment = await sdk.beta.environments.create(
        name="optional", config={"type": "cloud"}, description=None, metadata={}
    )
    assert environment.config.networking.type == "limited"  # no network unless asked
    session = await sdk.beta.sessions.create(
        agent=agent.id,
        environment_id=environment.id,
        vault_ids=[],
        resources=[],
        metadata={},
        title=None,
        initial_events=[],
    )
    assert session.vault_ids == [] and session.resources == []
    titled = await sdk.beta.sessions.update(session.id, title="named")
    cleared = await sdk.beta.sessions.update(session.id, title=None)
    assert (titled.title, cleared.title) == ("named", None)
    refusals = {
        "vaults": sdk.beta.sessions.create(
            agent=agent.id, environment_id="env_default", vault_ids=["vlt_1"]
        ),
        "budgets": sdk.beta.sessions.create(
            agent=agent.id,
            environment_id="env_default",
            budget={"type": "limit", "max_list_cost": {"amount": "100", "currency": "USD"}},
        ),
        "agent_with_overrides": sdk.beta.sessions.create(
            agent={"type": "agent_with_overrides", "id": agent.id, "system": "x"},
            environment_id="env_default",
        ),
    }
    for named, call in refusals.items():
        with pytest.raises(anthropic.BadRequestError) as refused:
            await call
        assert named in str(refused.value) and "not supported yet" in str(refused.value)
