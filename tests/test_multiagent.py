"""Multi-agent orchestration (issue 18): a coordinator's roster, delegation to subagent threads
that run in parallel on the session's workspace, their events and results (real Temporal,
PostgreSQL and worker; only the model is faked, each agent on a model name of its own)."""

from __future__ import annotations

from typing import Any

import pytest

from reverie.models.errors import InvalidRequestError, NotSupportedError
from reverie.starter.client import ReverieClient


async def agent(reverie: ReverieClient, name: str, model: str, **extra: Any) -> Any:
    return await reverie.create_agent({"name": name, "model": model, **extra})


async def test_roster_is_validated_and_pinned(reverie: ReverieClient, model_name: str) -> None:
    a = await agent(reverie, "alpha", f"{model_name}-a")
    b = await agent(reverie, "beta", f"{model_name}-b")
    await reverie.update_agent(b.id, {"system": "v2"})
    lead = await agent(
        reverie,
        "lead",
        model_name,
        multiagent={
            "type": "coordinator",
            "agents": [a.id, {"type": "agent", "id": b.id, "version": 1}, {"type": "self"}],
        },
    )
    assert lead.multiagent == {
        "type": "coordinator",
        "agents": [
            {"type": "agent", "id": a.id, "version": 1},
            {"type": "agent", "id": b.id, "version": 1},
            {"type": "agent", "id": lead.id, "version": 1},
        ],
    }
    before = await reverie.pool.fetchval("SELECT count(*) FROM agents")
    bad: list[tuple[Any, type[Exception], str]] = [
        ({"type": "coordinator", "agents": []}, InvalidRequestError, "at least 1"),
        ({"type": "coordinator", "agents": [a.id] * 21}, InvalidRequestError, "at most 20"),
        ({"type": "coordinator", "agents": [a.id, a.id]}, InvalidRequestError, "distinct"),
        (
            {"type": "coordinator", "agents": [{"type": "self"}, {"type": "self"}]},
            InvalidRequestError,
            "at most once",
        ),
        ({"type": "coordinator", "agents": ["agent_nope"]}, InvalidRequestError, "agent_nope"),
        ({"type": "coordinator", "agents": [lead.id]}, InvalidRequestError, "one level"),
        (
            {"type": "coordinator", "agents": [{"type": "agent", "id": a.id, "version": 9}]},
            InvalidRequestError,
            "no version 9",
        ),
        ({"type": "multiagent_20261001"}, NotSupportedError, "not supported yet"),
        ({"type": "coordinator", "agents": [{"type": "advisor"}]}, NotSupportedError, "advisor"),
        ({"type": "swarm", "agents": [a.id]}, InvalidRequestError, "coordinator"),
    ]
    for multiagent, error, match in bad:
        with pytest.raises(error, match=match):
            await agent(reverie, "x", model_name, multiagent=multiagent)
    asker = await agent(
        reverie,
        "asker",
        f"{model_name}-c",
        tools=[
            {
                "type": "agent_toolset_20260401",
                "default_config": {"permission_policy": {"type": "always_ask"}},
            }
        ],
    )
    with pytest.raises(NotSupportedError, match="always_ask"):
        await agent(
            reverie, "x", model_name, multiagent={"type": "coordinator", "agents": [asker.id]}
        )
    twin = await agent(reverie, "alpha", f"{model_name}-t")
    with pytest.raises(InvalidRequestError, match="distinct names"):
        await agent(
            reverie, "x", model_name, multiagent={"type": "coordinator", "agents": [a.id, twin.id]}
        )
    assert await reverie.pool.fetchval("SELECT count(*) FROM agents") == before + 2
    # An update pins too: `self` is the version it makes.
    updated = await reverie.update_agent(
        lead.id, {"multiagent": {"type": "coordinator", "agents": [b.id, {"type": "self"}]}}
    )
    assert updated.version == 2
    assert updated.multiagent["agents"] == [
        {"type": "agent", "id": b.id, "version": 2},
        {"type": "agent", "id": lead.id, "version": 2},
    ]
