"""Sessions: the row users list and read, kept in step with the workflow by its activities."""

from __future__ import annotations

from typing import Any

from reverie.models.agents import Agent
from reverie.models.common import Page
from reverie.models.errors import NotFoundError
from reverie.models.sessions import Session, SessionStats, SessionStatus, Usage
from reverie.store import agents
from reverie.store.paging import cursor_args, encode_cursor
from reverie.store.pool import Connection, Pool


async def create(
    conn: Pool | Connection,
    session_id: str,
    agent: Agent,
    *,
    environment_id: str,
    title: str | None,
    metadata: dict[str, str],
    resources: list[dict[str, Any]],
) -> None:
    await conn.execute(
        """INSERT INTO sessions (id, agent_id, agent_version, environment_id, title, metadata,
                                 resources)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        session_id,
        agent.id,
        agent.version,
        environment_id,
        title,
        metadata,
        resources,
    )


async def discard(pool: Pool, session_id: str) -> None:
    """Undo a creation whose workflow never started: the row and all it holds, so a failed
    create leaves nothing behind. Never call it for a session whose workflow exists."""
    async with pool.acquire() as conn, conn.transaction():
        for table in ("events", "staged_events", "transcript", "model_steps"):
            await conn.execute(f"DELETE FROM {table} WHERE session_id = $1", session_id)
        await conn.execute("DELETE FROM sessions WHERE id = $1", session_id)


async def _session(conn: Pool | Connection, row: Any, agent: Agent | None = None) -> Session:
    agent = agent or await agents.get(conn, row["agent_id"], row["agent_version"])
    active = row["active_seconds"] + (row["running_for"] or 0.0)
    return Session(
        id=row["id"],
        agent=agent,
        environment_id=row["environment_id"],
        title=row["title"],
        metadata=row["metadata"],
        resources=row["resources"],
        status=row["status"],
        usage=Usage(
            input_tokens=row["input_tokens"],
            output_tokens=row["output_tokens"],
            cache_creation_input_tokens=row["cache_creation_input_tokens"],
            cache_read_input_tokens=row["cache_read_input_tokens"],
            active_seconds=active,
        ),
        stats=SessionStats(
            active_seconds=active,
            duration_seconds=row["duration_seconds"],
            turns=row["turns"],
            model_requests=row["model_requests"],
            events=row["event_count"],
        ),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        archived_at=row["archived_at"],
    )


_SELECT = """SELECT *,
    extract(epoch FROM now() - running_since)::float8 AS running_for,
    extract(epoch FROM coalesce(archived_at, now()) - created_at)::float8 AS duration_seconds
FROM sessions """


async def get(conn: Pool | Connection, session_id: str) -> Session:
    row = await conn.fetchrow(_SELECT + "WHERE id = $1", session_id)
    if row is None:
        raise NotFoundError(f"no session with id {session_id!r}")
    return await _session(conn, row)


async def list_sessions(
    pool: Pool,
    *,
    limit: int = 20,
    page: str | None = None,
    agent_id: str | None = None,
    include_archived: bool = False,
) -> Page[Session]:
    after, after_id = cursor_args(page)
    rows = await pool.fetch(
        _SELECT
        + """WHERE ($1::boolean OR archived_at IS NULL)
          AND ($2::text IS NULL OR agent_id = $2)
          AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
        ORDER BY created_at DESC, id DESC LIMIT $5""",
        include_archived,
        agent_id,
        after,
        after_id,
        limit + 1,
    )
    # A page often holds many sessions of one agent version: read each version once.
    snapshots: dict[tuple[str, int], Agent] = {}
    for row in rows[:limit]:
        key = (row["agent_id"], row["agent_version"])
        if key not in snapshots:
            snapshots[key] = await agents.get(pool, *key)
    items = [
        await _session(pool, row, snapshots[(row["agent_id"], row["agent_version"])])
        for row in rows[:limit]
    ]
    more = len(rows) > limit
    return Page[Session](
        data=items,
        next_page=encode_cursor(items[-1].created_at, items[-1].id) if more else None,
    )


async def set_status(
    conn: Connection,
    session_id: str,
    status: SessionStatus,
    *,
    archive: bool = False,
    turns: int | None = None,
) -> None:
    """Change status and count active time: running time accrues until the session leaves it."""
    await conn.execute(
        """UPDATE sessions SET
             active_seconds = active_seconds + CASE
               WHEN running_since IS NOT NULL AND $2 NOT IN ('running', 'rescheduling')
               THEN extract(epoch FROM now() - running_since) ELSE 0 END,
             running_since = CASE
               WHEN $2 IN ('running', 'rescheduling') THEN coalesce(running_since, now())
               ELSE NULL END,
             status = $2,
             archived_at = CASE WHEN $3 THEN coalesce(archived_at, now()) ELSE archived_at END,
             turns = coalesce($4, turns),
             updated_at = now()
           WHERE id = $1""",
        session_id,
        status,
        archive,
        turns,
    )


async def add_usage(conn: Connection, session_id: str, usage: Usage) -> None:
    await conn.execute(
        """UPDATE sessions SET
             input_tokens = input_tokens + $2,
             output_tokens = output_tokens + $3,
             cache_creation_input_tokens = cache_creation_input_tokens + $4,
             cache_read_input_tokens = cache_read_input_tokens + $5,
             model_requests = model_requests + 1,
             updated_at = now()
           WHERE id = $1""",
        session_id,
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_creation_input_tokens,
        usage.cache_read_input_tokens,
    )


async def status_of(conn: Pool | Connection, session_id: str) -> tuple[str, bool]:
    """(status, archived) without building the whole object."""
    row = await conn.fetchrow("SELECT status, archived_at FROM sessions WHERE id = $1", session_id)
    if row is None:
        raise NotFoundError(f"no session with id {session_id!r}")
    return row["status"], row["archived_at"] is not None
