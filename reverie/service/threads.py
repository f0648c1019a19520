"""Multi-agent parts of the service layer: a coordinator's roster, checked and pinned when the
agent is written and resolved to names when a session starts; a session's threads and their
events (`ThreadMethods`, mixed into `ReverieClient`)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from reverie.models.agents import Agent, AgentConfig
from reverie.models.common import Page, PageRequest
from reverie.models.errors import InvalidRequestError, NotFoundError
from reverie.models.events import Event
from reverie.models.threads import (
    MAX_ROSTER,
    RosterAgent,
    RosterMember,
    RosterSelf,
    SessionThread,
    name_key,
    parse_multiagent,
    primary_thread_id,
)
from reverie.service.validation import check_id, parse
from reverie.store import agents, events, sessions
from reverie.store import threads as thread_store
from reverie.store.event_feed import EventFeed
from reverie.store.pool import Pool


async def resolve_roster(
    pool: Pool, config: AgentConfig, own_id: str, own_version: int
) -> dict[str, Any] | None:
    """The coordinator's roster with every entry pinned (`{type: "agent", id, version}`), as
    the agent stores and shows it; `self` is this agent at the version being written. Refused:
    unknown or archived agents, agents that coordinate themselves (one level of delegation),
    repeated agents or names (the model names the agent it delegates to)."""
    if not config.multiagent:
        return None
    coordinator = parse_multiagent(config.multiagent)
    pinned: list[tuple[str, int]] = []
    names: list[str] = []
    for entry in coordinator.agents:
        if isinstance(entry, RosterSelf):
            pinned.append((own_id, own_version))
            names.append(config.name)
            continue
        ref = RosterAgent(id=entry) if isinstance(entry, str) else entry
        if ref.id == own_id:
            raise InvalidRequestError(
                'multiagent.agents: name the coordinator itself as {"type": "self"}'
            )
        try:
            agent = await agents.get(pool, check_id("agent", ref.id), ref.version)
        except NotFoundError as error:
            raise InvalidRequestError(f"multiagent.agents: {error}") from None
        if agent.archived_at is not None:
            raise InvalidRequestError(f"multiagent.agents: agent {agent.id} is archived")
        if agent.multiagent:
            raise InvalidRequestError(
                f"multiagent.agents: agent {agent.id} has a multiagent roster of its own; "
                "roster agents may not delegate further (one level only)"
            )
        pinned.append((agent.id, agent.version))
        names.append(agent.name)
    ids = [agent_id for agent_id, _ in pinned]
    if len(set(ids)) != len(ids):
        raise InvalidRequestError("multiagent.agents must name distinct agents")
    if len({name_key(name) for name in names}) != len(names):
        raise InvalidRequestError(
            "multiagent.agents must have distinct names, ignoring case (the coordinator picks "
            f"by name): {names}"
        )
    assert len(pinned) <= MAX_ROSTER
    return {
        "type": "coordinator",
        "agents": [{"type": "agent", "id": i, "version": v} for i, v in pinned],
    }


async def session_roster(pool: Pool, agent: Agent) -> list[RosterMember]:
    """The exact versions a coordinator's session runs, with the names its model uses."""
    if not agent.multiagent:
        return []
    members: list[RosterMember] = []
    for entry in agent.multiagent.get("agents") or []:
        member = await agents.get(pool, entry["id"], entry["version"])
        members.append(
            RosterMember(name=member.name, agent_id=member.id, agent_version=member.version)
        )
    return members


# Threads one page lists at most (the SDK's default page size).
MAX_THREADS_LISTED = 1000


class ThreadMethods:
    """Threads of a session (`ReverieClient` provides `pool`, `feed` and `temporal`)."""

    pool: Pool
    feed: EventFeed
    temporal: Client

    async def end_thread_workflows(self, session_id: str) -> None:
        """Before a session's rows go: its threads' workflows end (an archived session's
        threads are ending already; none may write to rows being deleted)."""
        rows = await self.pool.fetch(
            "SELECT id FROM sessions WHERE parent_session_id = $1", session_id
        )
        for row in rows:
            try:
                await self.temporal.get_workflow_handle(row["id"]).terminate(
                    reason="session deleted"
                )
            except RPCError as error:
                if error.status != RPCStatusCode.NOT_FOUND:
                    raise

    async def list_threads(
        self, session_id: str, *, limit: int = 1000, page: str | None = None
    ) -> Page[SessionThread]:
        """The primary thread first, then the subagent threads in the order they started;
        `page` is the last thread of the previous page. At most 1,000 a page (the SDK's
        default)."""
        if not isinstance(limit, int) or not 1 <= limit <= MAX_THREADS_LISTED:
            raise InvalidRequestError(f"limit must be 1 to {MAX_THREADS_LISTED}, not {limit!r}")
        if page is not None:
            check_id("page", page)
        session = await sessions.get(self.pool, check_id("session", session_id))
        first = page is None
        # The first page ends with the primary thread when it holds only that (limit 1): the
        # next page starts at the first subagent thread (the primary is no row to page after).
        after = None if page == primary_thread_id(session_id) else page
        found, more = await thread_store.list_threads(
            self.pool, session_id, limit=limit - 1 if first else limit, page=after
        )
        if first:
            usage = await thread_store.primary_usage(self.pool, session_id)
            found = [_primary(session, usage), *found]
        return Page(data=found, next_page=found[-1].id if more else None)

    async def get_thread(self, session_id: str, thread_id: str) -> SessionThread:
        session = await sessions.get(self.pool, check_id("session", session_id))
        if thread_id == primary_thread_id(session_id):
            return _primary(session, await thread_store.primary_usage(self.pool, session_id))
        return await thread_store.get(self.pool, session_id, check_id("thread", thread_id))

    async def thread_log(self, session_id: str, thread_id: str) -> str:
        """The id of the log holding a thread's events (the session's own for the primary)."""
        await self.get_thread(session_id, thread_id)
        return session_id if thread_id == primary_thread_id(session_id) else thread_id

    async def event_position_in(self, log: str, event_id: str) -> int:
        """Where `event_id` sits in a thread's log (a stream resumes after it)."""
        position = await events.position_of(self.pool, log, check_id("event", event_id))
        if position is None:
            raise InvalidRequestError(f"thread {log} has no event {event_id!r}")
        return position

    async def last_log_position(self, log: str) -> int:
        return await events.last_position(self.pool, log)

    async def thread_events_page(
        self, session_id: str, thread_id: str, *, limit: int = 20, page: str | None = None
    ) -> Page[Event]:
        paging = parse(PageRequest, {"limit": limit, "page": page})
        log = await self.thread_log(session_id, thread_id)
        after = 0
        if paging.page is not None:
            digits = paging.page[1:]
            # ASCII digits, short enough for a position (`²` is a digit to Python, not to int).
            if not (paging.page.startswith("p") and digits.isascii() and digits.isdigit()):
                raise InvalidRequestError(f"invalid page cursor {paging.page!r}")
            if len(digits) > 10 or int(digits) > 2**31 - 1:
                raise InvalidRequestError(f"invalid page cursor {paging.page!r}")
            after = int(paging.page[1:])
        positions: list[int] = []
        found, _ = await events.list_events(
            self.pool, log, after_position=after, limit=paging.limit + 1, return_positions=positions
        )
        if len(found) <= paging.limit:
            return Page(data=found)
        return Page(data=found[: paging.limit], next_page=f"p{positions[paging.limit - 1]}")

    async def follow_thread_events(
        self, session_id: str, thread_id: str, *, after: int = 0, timeout: float | None = None
    ) -> AsyncIterator[Event]:
        """A thread's events as they are recorded, from `after` on, until its turn ends (idle
        or terminated) once something happened."""
        log = await self.thread_log(session_id, thread_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        position = after
        settled = ("session.thread_status_idle", "session.thread_status_terminated")
        if log == session_id:
            settled = ("session.status_idle", "session.status_terminated")
        async with self.feed.subscribe(log) as news:
            while True:
                batch, position = await events.list_events(
                    self.pool, log, after_position=position, limit=200
                )
                for event in batch:
                    yield event
                if batch and batch[-1].type in settled:
                    return
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"thread {thread_id} did not settle within {timeout}s")
                if len(batch) < 200:
                    await news.wait(1.0)


def _primary(session: Any, usage: dict[str, Any]) -> SessionThread:
    """The session's primary thread: the coordinator's own part of the session."""
    active = session.stats.active_seconds
    return SessionThread(
        id=primary_thread_id(session.id),
        session_id=session.id,
        agent=session.agent.model_dump(mode="json", exclude={"multiagent"}),
        status=session.status,
        stats={
            "active_seconds": active,
            "duration_seconds": session.stats.duration_seconds,
            "startup_seconds": 0.0,
        },
        usage={**usage, "active_seconds": active},
        created_at=session.created_at,
        updated_at=session.updated_at,
        archived_at=session.archived_at,
    )


async def create_agent(pool: Pool, params: Any) -> Agent:
    """Create an agent; a coordinator's roster is checked and pinned first (`self` is the new
    agent's version 1, so its id is made here)."""
    from reverie.models.common import new_id

    agent_id = new_id("agent")
    if params.multiagent:
        params.multiagent = await resolve_roster(pool, params, agent_id, 1)
    return await agents.create(pool, params, agent_id)


async def pin_roster(pool: Pool, params: Any, current: Agent) -> Any:
    """An update that sets `multiagent`, with its roster checked and pinned (`self`: the
    version the update makes)."""
    if params.multiagent:
        proposed = params.apply_to(current)
        params.multiagent = await resolve_roster(pool, proposed, current.id, current.version + 1)
    return params
