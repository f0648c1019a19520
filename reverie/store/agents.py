"""Agents and their immutable versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from reverie.models.agents import Agent, AgentConfig, AgentCreate, AgentUpdate
from reverie.models.common import STORED, Page, new_id
from reverie.models.errors import InvalidRequestError, NotFoundError, VersionConflictError
from reverie.store import webhooks
from reverie.store.paging import cursor_args, page_of
from reverie.store.pool import Connection, Pool


def _agent(row: Any) -> Agent:
    return Agent.model_validate(
        {
            **row["config"],
            "id": row["id"],
            "version": row["version"],
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "archived_at": row["archived_at"],
        },
        context=STORED,
    )


_SELECT = """
SELECT a.id, v.version, v.config, a.created_at, a.updated_at, a.archived_at
FROM agents a JOIN agent_versions v ON v.agent_id = a.id
"""


async def create(pool: Pool, params: AgentCreate, agent_id: str | None = None) -> Agent:
    """`agent_id`: made by the caller when the configuration names the agent itself (a
    coordinator's roster entry `self`)."""
    agent_id = agent_id or new_id("agent")
    config = AgentConfig.model_validate(params.model_dump()).model_dump(mode="json")
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("INSERT INTO agents (id, version) VALUES ($1, 1)", agent_id)
        await conn.execute(
            "INSERT INTO agent_versions (agent_id, version, config) VALUES ($1, 1, $2)",
            agent_id,
            config,
        )
        await webhooks.record(conn, "agent.created", agent_id)
        return _agent(await conn.fetchrow(_SELECT + "WHERE a.id = $1 AND v.version = 1", agent_id))


async def get(pool: Pool | Connection, agent_id: str, version: int | None = None) -> Agent:
    if version is None:
        row = await pool.fetchrow(_SELECT + "WHERE a.id = $1 AND v.version = a.version", agent_id)
    else:
        row = await pool.fetchrow(_SELECT + "WHERE a.id = $1 AND v.version = $2", agent_id, version)
    if row is None:
        if version is not None and await pool.fetchval(
            "SELECT 1 FROM agents WHERE id = $1", agent_id
        ):
            raise NotFoundError(f"agent {agent_id} has no version {version}")
        raise NotFoundError(f"no agent with id {agent_id!r}")
    return _agent(row)


async def update(pool: Pool, agent_id: str, params: AgentUpdate) -> Agent:
    """New version only when the configuration changes; a stale `version` is a conflict."""
    async with pool.acquire() as conn, conn.transaction():
        head = await conn.fetchrow("SELECT * FROM agents WHERE id = $1 FOR UPDATE", agent_id)
        if head is None:
            raise NotFoundError(f"no agent with id {agent_id!r}")
        if head["archived_at"] is not None:
            raise InvalidRequestError(f"agent {agent_id} is archived and read-only")
        if params.version is not None and params.version != head["version"]:
            raise VersionConflictError(
                f"agent {agent_id} is at version {head['version']}, not {params.version}: "
                "it changed since you read it; fetch it again and reapply your change"
            )
        current = await get(conn, agent_id)
        proposed = params.apply_to(current)
        unchanged = proposed.model_dump(mode="json") == current.model_dump(
            mode="json", include=set(AgentConfig.model_fields)
        )
        if unchanged:
            return current
        version = head["version"] + 1
        await conn.execute(
            "INSERT INTO agent_versions (agent_id, version, config) VALUES ($1, $2, $3)",
            agent_id,
            version,
            proposed.model_dump(mode="json"),
        )
        await conn.execute(
            "UPDATE agents SET version = $2, updated_at = now() WHERE id = $1", agent_id, version
        )
        await webhooks.record(conn, "agent.updated", agent_id)
        return await get(conn, agent_id)


async def list_agents(
    pool: Pool,
    *,
    limit: int = 20,
    page: str | None = None,
    include_archived: bool = False,
    created_at_gte: datetime | None = None,
    created_at_lte: datetime | None = None,
) -> Page[Agent]:
    after, after_id = cursor_args(page)
    rows = await pool.fetch(
        _SELECT
        + """WHERE v.version = a.version
          AND ($1::boolean OR a.archived_at IS NULL)
          AND ($2::timestamptz IS NULL OR (a.created_at, a.id) < ($2, $3))
          AND ($5::timestamptz IS NULL OR a.created_at >= $5)
          AND ($6::timestamptz IS NULL OR a.created_at <= $6)
        ORDER BY a.created_at DESC, a.id DESC LIMIT $4""",
        include_archived,
        after,
        after_id,
        limit + 1,
        created_at_gte,
        created_at_lte,
    )
    return page_of(rows, limit, _agent)


_VERSIONS = """SELECT a.id, v.version, v.config, a.created_at, v.created_at AS updated_at,
                  a.archived_at
           FROM agents a JOIN agent_versions v ON v.agent_id = a.id
           WHERE a.id = $1"""


async def versions(pool: Pool, agent_id: str) -> list[Agent]:
    rows = await pool.fetch(_VERSIONS + " ORDER BY v.version DESC", agent_id)
    if not rows:
        raise NotFoundError(f"no agent with id {agent_id!r}")
    return [_agent(row) for row in rows]


async def versions_page(
    pool: Pool, agent_id: str, *, limit: int = 20, page: str | None = None
) -> Page[Agent]:
    """An agent's versions, newest first; the cursor is the last version listed."""
    below = _version_cursor(page)
    rows = await pool.fetch(
        _VERSIONS + " AND ($2::integer IS NULL OR v.version < $2) ORDER BY v.version DESC LIMIT $3",
        agent_id,
        below,
        limit + 1,
    )
    if not rows and not await pool.fetchval("SELECT 1 FROM agents WHERE id = $1", agent_id):
        raise NotFoundError(f"no agent with id {agent_id!r}")
    items = [_agent(row) for row in rows[:limit]]
    more = len(rows) > limit
    return Page(data=items, next_page=f"v{items[-1].version}" if more else None)


def _version_cursor(page: str | None) -> int | None:
    if not page:
        return None
    if page.startswith("v") and page[1:].isdigit() and len(page) < 12:
        return int(page[1:])
    raise InvalidRequestError(f"invalid page cursor {page!r}")


async def archive(pool: Pool, agent_id: str) -> Agent:
    async with pool.acquire() as conn, conn.transaction():
        newly = await conn.fetchval(
            "SELECT archived_at IS NULL FROM agents WHERE id = $1 FOR UPDATE", agent_id
        )
        status = await conn.execute(
            "UPDATE agents SET archived_at = coalesce(archived_at, now()), updated_at = now()"
            " WHERE id = $1",
            agent_id,
        )
        if status.endswith(" 0"):
            raise NotFoundError(f"no agent with id {agent_id!r}")
        if newly:
            await webhooks.record(conn, "agent.archived", agent_id)
        return await get(conn, agent_id)
