"""Migration 0004: rows stored in the older shapes are rewritten into the SDK's, and rows an
older worker writes after it (during an upgrade) still read back in the SDK's shapes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest_asyncio
from anthropic.types.beta import BetaEnvironment, BetaManagedAgentsAgent
from anthropic.types.beta.sessions import BetaManagedAgentsSessionEvent

from reverie.models.agents import AgentConfig
from reverie.store import agents, environments, events
from reverie.store.pool import _init_connection, migrate, migration_files
from tests.sdk_conformance import assert_fits

# An agent as Reverie stored it before 0004: configs without `type` (and a policy left to the
# default), `effort` a bare level, no `execution_identity`, a custom schema without `type`.
OLD_AGENT = {
    "name": "old",
    "description": None,
    "system": "Be old.",
    "model": {"id": "claude-sonnet-4-5", "effort": "high", "speed": None},
    "tools": [
        {
            "type": "agent_toolset_20260401",
            "default_config": {"enabled": True, "permission_policy": {"type": "always_ask"}},
            "configs": [
                {"name": "bash", "enabled": True, "permission_policy": None},
                {"name": "web_search", "enabled": False, "permission_policy": None},
                {"name": "read", "enabled": True, "permission_policy": {"type": "always_allow"}},
            ],
        },
        {"type": "custom", "name": "lookup", "description": "", "input_schema": {"properties": {}}},
    ],
    "mcp_servers": [],
    "skills": [],
    "multiagent": None,
    "metadata": {"era": "before"},
}
RESOLVED_TOOLSET = {
    "type": "agent_toolset_20260401",
    "default_config": {"enabled": True, "permission_policy": {"type": "always_ask"}},
    "configs": [
        {
            "type": "bash",
            "name": "bash",
            "enabled": True,
            "permission_policy": {"type": "always_ask"},
        },
        {
            "type": "web_search",
            "name": "web_search",
            "enabled": False,
            "permission_policy": {"type": "always_ask"},
        },
        {
            "type": "read",
            "name": "read",
            "enabled": True,
            "permission_policy": {"type": "always_allow"},
        },
    ],
}


def _with_database(url: str, name: str) -> str:
    head, _, query = url.partition("?")
    head = head.rsplit("/", 1)[0] + "/" + name
    return f"{head}?{query}" if query else head


@pytest_asyncio.fixture(loop_scope="session")
async def old_pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A database of its own at migration 0003, as a deployment of the previous version has."""
    name = f"reverie_migration_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    pool = await asyncpg.create_pool(_with_database(database_url, name), init=_init_connection)
    async with pool.acquire() as conn:
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for number, file_name, sql in migration_files():
            if number < 4:
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    number,
                    file_name,
                )
    yield pool
    await pool.close()
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'DROP DATABASE "{name}"')
    await admin.close()


async def _old_rows(pool: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    await pool.execute("INSERT INTO agents (id, version) VALUES ('agent_old', 1)")
    await pool.execute(
        "INSERT INTO agent_versions (agent_id, version, config) VALUES ('agent_old', 1, $1)",
        OLD_AGENT,
    )
    await pool.execute(
        """INSERT INTO environments (id, name, description, networking) VALUES
           ('env_old', 'old', NULL, '{"type": "limited", "allowed_hosts": ["example.com"]}'),
           ('env_open', 'open', 'anything', '{"type": "unrestricted"}')"""
    )
    await pool.execute(
        """INSERT INTO sessions (id, agent_id, agent_version, environment_id)
           VALUES ('sesn_old', 'agent_old', 1, 'env_old')"""
    )
    await pool.executemany(
        "INSERT INTO events (id, session_id, position, type, payload, processed_at)"
        " VALUES ($1, 'sesn_old', $2, 'agent.tool_use', $3, $4)",
        [
            (
                "sevt_ask",
                1,
                {
                    "name": "bash",
                    "input": {"command": "ls"},
                    "evaluated_permission": {"type": "ask"},
                },
                now,
            ),
            (
                "sevt_allow",
                2,
                {
                    "name": "read",
                    "input": {"file_path": "a"},
                    "evaluated_permission": {"type": "allow"},
                },
                now,
            ),
        ],
    )
    await pool.execute("UPDATE sessions SET event_count = 2 WHERE id = 'sesn_old'")


async def test_old_rows_are_rewritten_and_read_in_the_sdk_shapes(old_pool: asyncpg.Pool) -> None:
    await _old_rows(old_pool)
    applied = await migrate(old_pool)
    assert "0004_sdk_shapes.sql" in applied

    config = await old_pool.fetchval(
        "SELECT config FROM agent_versions WHERE agent_id = 'agent_old'"
    )
    assert config["execution_identity"] == {"type": "service_account"}
    assert config["model"]["effort"] == {"type": "high"}
    assert config["tools"][0] == RESOLVED_TOOLSET
    assert config["tools"][1]["input_schema"] == {"type": "object", "properties": {}}
    # What the migration wrote is what today's model resolves it to (which adds only the
    # optional `inference_geo`, null).
    resolved = AgentConfig.model_validate(config).model_dump(mode="json")
    assert resolved["model"].pop("inference_geo") is None
    assert resolved == config

    agent = await agents.get(old_pool, "agent_old")
    assert_fits(agent.model_dump(mode="json"), BetaManagedAgentsAgent)
    for environment_id in ("env_default", "env_old", "env_open"):
        environment = await environments.get(old_pool, environment_id)
        assert_fits(environment.model_dump(mode="json"), BetaEnvironment)
    old_env = await environments.get(old_pool, "env_old")
    assert old_env.config.model_dump(mode="json")["networking"] == {
        "type": "limited",
        "allowed_hosts": ["example.com"],
        "allow_mcp_servers": False,
        "allow_package_managers": False,
    }

    payloads = {
        row["id"]: row["payload"]
        for row in await old_pool.fetch("SELECT id, payload FROM events ORDER BY position")
    }
    assert payloads["sevt_ask"]["evaluated_permission"] == "ask"
    assert payloads["sevt_ask"]["evaluation"] == {"type": "always_ask"}
    assert payloads["sevt_allow"]["evaluated_permission"] == "allow"
    assert payloads["sevt_allow"]["evaluation"] == {"type": "always_allow"}
    listed, _ = await events.list_events(old_pool, "sesn_old")
    for event in listed:
        assert_fits(event.model_dump(mode="json"), BetaManagedAgentsSessionEvent)

    # An environment a session names cannot be deleted now.
    await environments.delete(old_pool, "env_open")
    try:
        await environments.delete(old_pool, "env_old")
    except Exception as error:
        assert "used by 1 session" in str(error)
    else:
        raise AssertionError("an environment in use was deleted")

    # A worker of the previous version, still running, writes the old shapes after 0004.
    await old_pool.execute("UPDATE agents SET version = 2 WHERE id = 'agent_old'")
    await old_pool.execute(
        "INSERT INTO agent_versions (agent_id, version, config) VALUES ('agent_old', 2, $1)",
        OLD_AGENT,
    )
    await old_pool.execute(
        """INSERT INTO events (id, session_id, position, type, payload, processed_at)
           VALUES ('sevt_late', 'sesn_old', 3, 'agent.tool_use', $1, now())""",
        {"name": "bash", "input": {}, "evaluated_permission": {"type": "ask"}},
    )
    late_agent = await agents.get(old_pool, "agent_old")
    assert late_agent.version == 2
    assert_fits(late_agent.model_dump(mode="json"), BetaManagedAgentsAgent)
    assert late_agent.model_dump(mode="json")["tools"][0] == RESOLVED_TOOLSET
    (late,) = await events.get_many(old_pool, ["sevt_late"])
    assert late.payload["evaluated_permission"] == "ask"
    assert late.payload["evaluation"] == {"type": "always_ask"}
    assert_fits(late.model_dump(mode="json"), BetaManagedAgentsSessionEvent)
