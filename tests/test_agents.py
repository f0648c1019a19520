"""Agents: versions, conflicts, partial updates, validation, archiving."""

from __future__ import annotations

import pytest

from reverie.models.errors import (
    InvalidRequestError,
    NotFoundError,
    VersionConflictError,
)
from reverie.starter.client import ReverieClient


async def test_versions_grow_only_on_change(reverie: ReverieClient) -> None:
    agent = await reverie.create_agent(
        {"name": "writer", "model": "m-1", "system": "v1", "metadata": {"team": "a", "tier": "x"}}
    )
    assert agent.version == 1 and agent.model.id == "m-1"

    same = await reverie.update_agent(agent.id, {"system": "v1", "version": 1})
    assert same.version == 1

    changed = await reverie.update_agent(
        agent.id, {"system": "v2", "metadata": {"tier": None, "owner": "bo"}, "version": 1}
    )
    assert changed.version == 2
    assert changed.system == "v2"
    assert changed.metadata == {"team": "a", "owner": "bo"}
    assert changed.name == "writer"

    cleared = await reverie.update_agent(agent.id, {"system": ""})
    assert cleared.version == 3 and cleared.system is None

    assert (await reverie.get_agent(agent.id, version=1)).system == "v1"
    assert [a.version for a in await reverie.agent_versions(agent.id)] == [3, 2, 1]
    with pytest.raises(NotFoundError, match="no version 9"):
        await reverie.get_agent(agent.id, version=9)


async def test_stale_version_is_a_conflict_and_changes_nothing(reverie: ReverieClient) -> None:
    agent = await reverie.create_agent({"name": "a", "model": "m"})
    await reverie.update_agent(agent.id, {"name": "b", "version": 1})
    with pytest.raises(VersionConflictError, match="at version 2, not 1"):
        await reverie.update_agent(agent.id, {"name": "c", "version": 1})
    current = await reverie.get_agent(agent.id)
    assert (current.name, current.version) == ("b", 2)


async def test_sessions_pin_the_version_they_started_with(reverie: ReverieClient) -> None:
    agent = await reverie.create_agent({"name": "pin", "model": "m", "system": "old"})
    await reverie.update_agent(agent.id, {"system": "new"})
    latest = await reverie.create_session({"agent": agent.id})
    pinned = await reverie.create_session(
        {"agent": {"type": "agent", "id": agent.id, "version": 1}}
    )
    assert (latest.agent.version, latest.agent.system) == (2, "new")
    assert (pinned.agent.version, pinned.agent.system) == (1, "old")


async def test_invalid_agents_are_refused(reverie: ReverieClient) -> None:
    before = await reverie.pool.fetchval("SELECT count(*) FROM agents")
    with pytest.raises(InvalidRequestError, match="name"):
        await reverie.create_agent({"model": "m"})
    with pytest.raises(InvalidRequestError, match="metadata"):
        await reverie.create_agent(
            {"name": "x", "model": "m", "metadata": {f"k{i}": "v" for i in range(17)}}
        )
    with pytest.raises(InvalidRequestError, match="Extra inputs"):
        await reverie.create_agent({"name": "x", "model": "m", "sytem": "typo"})
    with pytest.raises(InvalidRequestError, match="multiagent"):
        await reverie.create_agent(
            {"name": "x", "model": "m", "multiagent": {"type": "coordinator", "agents": []}}
        )
    assert await reverie.pool.fetchval("SELECT count(*) FROM agents") == before


async def test_archived_agent_is_read_only(reverie: ReverieClient) -> None:
    agent = await reverie.create_agent({"name": "old", "model": "m"})
    archived = await reverie.archive_agent(agent.id)
    assert archived.archived_at is not None
    with pytest.raises(InvalidRequestError, match="archived"):
        await reverie.update_agent(agent.id, {"name": "new"})
    with pytest.raises(InvalidRequestError, match="archived"):
        await reverie.create_session({"agent": agent.id})
    listed = await reverie.list_agents(limit=100)
    assert agent.id not in [a.id for a in listed.data]


async def test_list_pages(reverie: ReverieClient) -> None:
    made = [(await reverie.create_agent({"name": f"p{i}", "model": "m"})).id for i in range(5)]
    first = await reverie.list_agents(limit=3)
    second = await reverie.list_agents(limit=3, page=first.next_page)
    seen = [a.id for a in first.data + second.data]
    assert seen[:5] == list(reversed(made))
    assert len(seen) == len(set(seen))
    with pytest.raises(InvalidRequestError, match="cursor"):
        await reverie.list_agents(page="garbage!")
