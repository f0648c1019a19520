"""Sessions: the row users list and read, kept in step with the workflow by its activities."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reverie.models.agents import Agent
from reverie.models.common import Page, new_id
from reverie.models.errors import InvalidRequestError, NotFoundError
from reverie.models.outcomes import OutcomeEvaluation
from reverie.models.sessions import Session, SessionStats, SessionStatus, SessionUsage, Usage
from reverie.models.webhooks import EVENT_PREFIX, event_data
from reverie.store import agents, outcomes, threads, webhooks
from reverie.store.events import NOTIFY_CHANNEL as EVENTS_CHANNEL
from reverie.store.events import EventRow, storable
from reverie.store.paging import cursor_args, encode_cursor
from reverie.store.pool import Connection, Pool

# Tables holding rows of one session, deleted with it (children before the session row).
SESSION_TABLES = (
    "events",
    "staged_events",
    "transcript",
    "model_steps",
    "compactions",
    "outcome_samples",
    "outcome_evaluations",
    "outcomes",
    "memory_mount_files",
    "memory_mounts",
    "thread_delegations",
)


async def create(
    db: Pool | Connection,
    session_id: str,
    agent: Agent,
    *,
    environment_id: str,
    title: str | None,
    metadata: dict[str, str],
    resources: list[dict[str, Any]],
    running: bool = False,
    rows: Sequence[EventRow] = (),
) -> Any:
    """The new row, as `get` reads it, its event count included: written with its
    `session.created` announcement and its initial events (`rows`) in one call (migration 0015).
    `running`: its first turn starts with it, so it starts as `set_status(..., "running",
    turns=0)` would leave it. As `events.append` does, an outcome an initial event defines is
    written in the same transaction; given the pool, that is the only case that takes one."""
    rows = storable(session_id, rows)
    defined = [row for row in rows if row[1] == "user.define_outcome"]
    if defined and isinstance(db, Pool):
        async with db.acquire() as conn, conn.transaction():
            return await create(
                conn,
                session_id,
                agent,
                environment_id=environment_id,
                title=title,
                metadata=metadata,
                resources=resources,
                running=running,
                rows=rows,
            )
    row = await db.fetchrow(
        "SELECT *, "
        + _COMPUTED
        + " FROM reverie_create_session($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
        " $11, $12, $13, $14, $15)",
        session_id,
        agent.id,
        agent.version,
        environment_id,
        title,
        metadata,
        resources,
        running,
        new_id(EVENT_PREFIX),
        json.dumps(event_data("session.created", session_id)),
        [r[0] for r in rows],
        [r[1] for r in rows],
        [json.dumps(r[2]) for r in rows],
        [r[3] for r in rows],
        EVENTS_CHANNEL,
    )
    for event_id, _, payload, _ in defined:
        # The outcome exists exactly when its event does (same transaction).
        assert not isinstance(db, Pool)  # a pool took the transaction above
        await outcomes.define(db, session_id, event_id, payload)
    return dict(row)


async def created(
    conn: Pool | Connection, row: Any, agent: Agent, *, outcomes_defined: bool
) -> Session:
    """The session `create` wrote, without reading it again; its outcomes are read only if its
    initial events defined any."""
    return await _session(conn, row, agent, None if outcomes_defined else [])


async def discard(pool: Pool, session_id: str) -> None:
    """Undo a creation whose workflow never started: the row and all it holds, so a failed
    create leaves nothing behind. Never call it for a session whose workflow exists."""
    async with pool.acquire() as conn, conn.transaction():
        for table in SESSION_TABLES:
            await conn.execute(f"DELETE FROM {table} WHERE session_id = $1", session_id)
        await conn.execute("DELETE FROM sessions WHERE id = $1", session_id)


async def _session(
    conn: Pool | Connection,
    row: Any,
    agent: Agent | None = None,
    evaluations: list[OutcomeEvaluation] | None = None,
) -> Session:
    agent = agent or await agents.get(conn, row["agent_id"], row["agent_version"])
    if evaluations is None:
        evaluations = (await outcomes.for_sessions(conn, [row["id"]]))[row["id"]]
    active = row["active_seconds"] + (row["running_for"] or 0.0)
    return Session(
        id=row["id"],
        agent=await threads.session_agent(conn, agent),
        environment_id=row["environment_id"],
        title=row["title"],
        metadata=row["metadata"],
        resources=row["resources"],
        status=row["status"],
        usage=SessionUsage.of(
            Usage(
                input_tokens=row["input_tokens"],
                output_tokens=row["output_tokens"],
                cache_creation_input_tokens=row["cache_creation_input_tokens"],
                cache_read_input_tokens=row["cache_read_input_tokens"],
                active_seconds=active,
            )
        ),
        stats=SessionStats(
            active_seconds=active,
            duration_seconds=row["duration_seconds"],
            turns=row["turns"],
            model_requests=row["model_requests"],
            events=row["event_count"],
        ),
        outcome_evaluations=evaluations,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        archived_at=row["archived_at"],
    )


_COMPUTED = """
    extract(epoch FROM now() - running_since)::float8 AS running_for,
    extract(epoch FROM coalesce(archived_at, now()) - created_at)::float8 AS duration_seconds
"""
_SELECT = "SELECT *," + _COMPUTED + "FROM sessions "


async def get(conn: Pool | Connection, session_id: str, agent: Agent | None = None) -> Session:
    """`agent`: the session's agent version when the caller has it (not read again)."""
    row = await conn.fetchrow(_SELECT + "WHERE id = $1 AND parent_session_id IS NULL", session_id)
    if row is None:
        raise NotFoundError(f"no session with id {session_id!r}")
    if agent is not None and (agent.id, agent.version) != (row["agent_id"], row["agent_version"]):
        agent = None
    return await _session(conn, row, agent)


@dataclass(frozen=True)
class SessionFilter:
    """The API's session list filters; None leaves a filter off."""

    agent_id: str | None = None
    agent_version: int | None = None
    statuses: tuple[str, ...] | None = None
    created_at_gt: datetime | None = None
    created_at_gte: datetime | None = None
    created_at_lt: datetime | None = None
    created_at_lte: datetime | None = None
    include_archived: bool = False


async def list_sessions(
    pool: Pool,
    *,
    limit: int = 20,
    page: str | None = None,
    agent_id: str | None = None,
    include_archived: bool = False,
    where: SessionFilter | None = None,
    ascending: bool = False,
) -> Page[Session]:
    """Newest first (or oldest first), keyset-paged over (created_at, id)."""
    where = where or SessionFilter(agent_id=agent_id, include_archived=include_archived)
    after, after_id = cursor_args(page)
    direction, beyond = ("ASC", ">") if ascending else ("DESC", "<")
    rows = await pool.fetch(
        _SELECT
        + f"""WHERE ($1::boolean OR archived_at IS NULL) AND parent_session_id IS NULL
          AND ($2::text IS NULL OR agent_id = $2)
          AND ($3::timestamptz IS NULL OR (created_at, id) {beyond} ($3, $4))
          AND ($6::integer IS NULL OR agent_version = $6)
          AND ($7::text[] IS NULL OR status = ANY($7::text[]))
          AND ($8::timestamptz IS NULL OR created_at > $8)
          AND ($9::timestamptz IS NULL OR created_at >= $9)
          AND ($10::timestamptz IS NULL OR created_at < $10)
          AND ($11::timestamptz IS NULL OR created_at <= $11)
        ORDER BY created_at {direction}, id {direction} LIMIT $5""",
        where.include_archived,
        where.agent_id,
        after,
        after_id,
        limit + 1,
        where.agent_version,
        list(where.statuses) if where.statuses is not None else None,
        where.created_at_gt,
        where.created_at_gte,
        where.created_at_lt,
        where.created_at_lte,
    )
    # A page often holds many sessions of one agent version: read each version once.
    snapshots: dict[tuple[str, int], Agent] = {}
    for row in rows[:limit]:
        key = (row["agent_id"], row["agent_version"])
        if key not in snapshots:
            snapshots[key] = await agents.get(pool, *key)
    evaluations = await outcomes.for_sessions(pool, [row["id"] for row in rows[:limit]])
    items = [
        await _session(
            pool, row, snapshots[(row["agent_id"], row["agent_version"])], evaluations[row["id"]]
        )
        for row in rows[:limit]
    ]
    more = len(rows) > limit
    return Page[Session](
        data=items,
        next_page=encode_cursor(items[-1].created_at, items[-1].id) if more else None,
    )


async def update(
    pool: Pool, session_id: str, *, title: str | None, set_title: bool, metadata: dict[str, str]
) -> Session:
    """A session's title and metadata (the caller has merged the metadata patch)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT archived_at FROM sessions WHERE id = $1 FOR UPDATE", session_id
        )
        if row is None:
            raise NotFoundError(f"no session with id {session_id!r}")
        if row["archived_at"] is not None:
            raise InvalidRequestError(f"session {session_id} is archived and read-only")
        await conn.execute(
            """UPDATE sessions SET title = CASE WHEN $2 THEN $3 ELSE title END, metadata = $4,
                   updated_at = now() WHERE id = $1""",
            session_id,
            set_title,
            title,
            metadata,
        )
        await webhooks.record(conn, "session.updated", session_id)
        return await get(conn, session_id)


async def delete(pool: Pool, session_id: str) -> None:
    """Remove a session and everything recorded for it, for good."""
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchval("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", session_id):
            # Its subagent threads (issue 18) first: rows of their own, then the rows.
            children = "SELECT id FROM sessions WHERE parent_session_id = $1"
            for table in SESSION_TABLES:
                await conn.execute(
                    f"DELETE FROM {table} WHERE session_id IN ({children})", session_id
                )
                await conn.execute(f"DELETE FROM {table} WHERE session_id = $1", session_id)
            await conn.execute("DELETE FROM sessions WHERE parent_session_id = $1", session_id)
            await conn.execute("DELETE FROM sessions WHERE id = $1", session_id)
            await webhooks.record(conn, "session.deleted", session_id)
        else:
            raise NotFoundError(f"no session with id {session_id!r}")


async def set_status(
    conn: Connection,
    session_id: str,
    status: SessionStatus,
    *,
    archive: bool = False,
    turns: int | None = None,
) -> None:
    """Change status and count active time: running time accrues until the session leaves it."""
    newly_archived = archive and await conn.fetchval(
        "SELECT archived_at IS NULL FROM sessions WHERE id = $1", session_id
    )
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
    if newly_archived:
        await webhooks.record(conn, "session.archived", session_id)


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


async def lock(conn: Connection, session_id: str) -> bool:
    """The session row's lock, held until the transaction ends (every append takes it);
    False when there is no such session (what the caller writes next then fails as it would)."""
    found = await conn.fetchval("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", session_id)
    return found is not None


async def status_of(conn: Pool | Connection, session_id: str) -> tuple[str, bool]:
    """(status, archived) without building the whole object."""
    row = await conn.fetchrow("SELECT status, archived_at FROM sessions WHERE id = $1", session_id)
    if row is None:
        raise NotFoundError(f"no session with id {session_id!r}")
    return row["status"], row["archived_at"] is not None
