"""Subagent threads (issue 18): rows of `sessions` with a parent session (migration 0012), so
that a thread's log, transcript and model steps are kept exactly as a session's are."""

from __future__ import annotations

from typing import Any

from reverie.models.agents import Agent, SessionAgent
from reverie.models.errors import NotFoundError
from reverie.models.threads import SessionThread, primary_thread_id
from reverie.store import agents
from reverie.store.pool import Connection, Pool

_SELECT = """SELECT *,
    extract(epoch FROM now() - running_since)::float8 AS running_for,
    extract(epoch FROM coalesce(archived_at, now()) - created_at)::float8 AS duration_seconds
FROM sessions """


async def create(
    conn: Connection,
    thread_id: str,
    session_id: str,
    *,
    agent_id: str,
    agent_version: int,
    agent_name: str,
) -> bool:
    """The thread's row, in its parent's environment; False if it exists. The thread's tools
    run in the parent's workspace, on its memory mounts (with their access, writes attributed
    to the session); the row copies the parent's resources only so that the thread's model is
    told of the mounts as the coordinator's is."""
    created = await conn.fetchval(
        """INSERT INTO sessions (id, agent_id, agent_version, environment_id,
                                 parent_session_id, agent_name, status, running_since,
                                 resources)
           SELECT $1, $3, $4, environment_id, $2, $5, 'running', now(), resources
           FROM sessions WHERE id = $2
           ON CONFLICT (id) DO NOTHING RETURNING true""",
        thread_id,
        session_id,
        agent_id,
        agent_version,
        agent_name,
    )
    return bool(created)


async def owner(conn: Pool | Connection, thread_id: str) -> str | None:
    """The session a thread belongs to (None: no such thread)."""
    value: str | None = await conn.fetchval(
        "SELECT parent_session_id FROM sessions WHERE id = $1", thread_id
    )
    return value


async def _thread(
    conn: Pool | Connection, row: Any, known: dict[tuple[str, int], Agent] | None = None
) -> SessionThread:
    """`known`: agent versions read already (a listing's threads share a roster of at most
    20, so it reads each once, not once per thread)."""
    key = (row["agent_id"], row["agent_version"])
    agent = (known or {}).get(key) or await agents.get(conn, *key)
    if known is not None:
        known[key] = agent
    active = row["active_seconds"] + (row["running_for"] or 0.0)
    return SessionThread(
        id=row["id"],
        session_id=row["parent_session_id"],
        agent=SessionAgent.of(agent).model_dump(mode="json", exclude={"multiagent"}),
        parent_thread_id=primary_thread_id(row["parent_session_id"]),
        status=row["status"],
        stats={
            "active_seconds": active,
            "duration_seconds": row["duration_seconds"],
            "startup_seconds": 0.0,
        },
        usage={
            "input_tokens": row["input_tokens"],
            "output_tokens": row["output_tokens"],
            "cache_read_input_tokens": row["cache_read_input_tokens"],
            "cache_creation": {
                "ephemeral_5m_input_tokens": row["cache_creation_input_tokens"],
                "ephemeral_1h_input_tokens": 0,
            },
            "active_seconds": active,
        },
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        archived_at=row["archived_at"],
    )


async def get(conn: Pool | Connection, session_id: str, thread_id: str) -> SessionThread:
    row = await conn.fetchrow(
        _SELECT + "WHERE id = $1 AND parent_session_id = $2", thread_id, session_id
    )
    if row is None:
        raise NotFoundError(f"session {session_id} has no thread {thread_id!r}")
    return await _thread(conn, row)


async def list_threads(
    conn: Pool | Connection, session_id: str, *, limit: int, page: str | None
) -> tuple[list[SessionThread], bool]:
    """A session's subagent threads in the order they started, after thread `page`."""
    rows = await conn.fetch(
        _SELECT
        + """WHERE parent_session_id = $1
               AND ($2::text IS NULL OR (created_at, id) >
                    (SELECT created_at, id FROM sessions WHERE id = $2))
             ORDER BY created_at, id LIMIT $3""",
        session_id,
        page,
        limit + 1,
    )
    known: dict[tuple[str, int], Agent] = {}
    return [await _thread(conn, row, known) for row in rows[:limit]], len(rows) > limit


async def primary_usage(conn: Pool | Connection, session_id: str) -> dict[str, Any]:
    """The primary thread's own usage: the session's (which sums its threads') less theirs."""
    row = await conn.fetchrow(
        """SELECT s.input_tokens - coalesce(sum(t.input_tokens), 0) AS input_tokens,
                  s.output_tokens - coalesce(sum(t.output_tokens), 0) AS output_tokens,
                  s.cache_read_input_tokens - coalesce(sum(t.cache_read_input_tokens), 0)
                      AS cache_read_input_tokens,
                  s.cache_creation_input_tokens - coalesce(sum(t.cache_creation_input_tokens), 0)
                      AS cache_creation_input_tokens
           FROM sessions s LEFT JOIN sessions t ON t.parent_session_id = s.id
           WHERE s.id = $1 GROUP BY s.id""",
        session_id,
    )
    if row is None:
        raise NotFoundError(f"no session with id {session_id!r}")
    return {
        "input_tokens": int(row["input_tokens"]),
        "output_tokens": int(row["output_tokens"]),
        "cache_read_input_tokens": int(row["cache_read_input_tokens"]),
        "cache_creation": {
            "ephemeral_5m_input_tokens": int(row["cache_creation_input_tokens"]),
            "ephemeral_1h_input_tokens": 0,
        },
    }


async def session_agent(conn: Pool | Connection, agent: Agent) -> SessionAgent:
    """The agent as its sessions show it; a coordinator's roster with each member's full
    definition at its pinned version (`BetaManagedAgentsSessionMultiagentCoordinator`)."""
    shown = SessionAgent.of(agent)
    if agent.multiagent and agent.multiagent.get("type") == "coordinator":
        members = []
        for entry in agent.multiagent.get("agents") or []:
            member = await agents.get(conn, entry["id"], entry["version"])
            members.append(SessionAgent.of(member).model_dump(mode="json", exclude={"multiagent"}))
        shown.multiagent = {"type": "coordinator", "agents": members}
    return shown
