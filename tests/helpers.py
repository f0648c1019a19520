"""Small helpers shared by the session tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

from reverie.models.events import Event
from reverie.settings import Settings
from reverie.starter.client import ReverieClient
from reverie.store.pool import Pool


async def all_events(client: ReverieClient, session_id: str) -> list[Event]:
    return await client.list_events(session_id, limit=10_000)


def types_of(events: list[Event]) -> list[str]:
    return [event.type for event in events]


def assert_each_once(events: list[Event]) -> None:
    duplicates = [i for i, n in Counter(e.id for e in events).items() if n > 1]
    assert not duplicates, f"events recorded twice: {duplicates}"


async def new_agent(client: ReverieClient, model: str, **extra: object) -> str:
    agent = await client.create_agent({"name": "tester", "model": model, **extra})
    return agent.id


def assert_spans_closed(events: list[Event]) -> None:
    """Every `span.model_request_start` has exactly one `span.model_request_end` naming it."""
    starts = [e.id for e in events if e.type == "span.model_request_start"]
    ends = Counter(
        e.payload["model_request_start_id"] for e in events if e.type == "span.model_request_end"
    )
    assert {start: ends[start] for start in starts} == dict.fromkeys(starts, 1), (
        f"spans not closed exactly once: starts {starts}, ends {dict(ends)}"
    )


async def wait_for_event(
    client: ReverieClient, session_id: str, event_type: str, timeout: float = 30.0
) -> Event:
    """The first event of a type, once it is recorded."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await client.list_events(session_id, types=[event_type], limit=1)
        if found:
            return found[0]
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"no {event_type} in session {session_id} within {timeout}s")
        await asyncio.sleep(0.05)


REFUSE_EVENTS_SQL = """
CREATE TABLE IF NOT EXISTS test_refused_events (session_id text, type text);
CREATE OR REPLACE FUNCTION test_refuse_event() RETURNS trigger AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM test_refused_events r
             WHERE r.session_id = NEW.session_id AND r.type = NEW.type) THEN
    RAISE EXCEPTION 'test refuses % events', NEW.type USING ERRCODE = 'check_violation';
  END IF;
  RETURN NEW;
END $$ LANGUAGE plpgsql;
CREATE OR REPLACE TRIGGER test_refuse_event BEFORE INSERT ON events
  FOR EACH ROW EXECUTE FUNCTION test_refuse_event();
"""


@contextlib.asynccontextmanager
async def refusing_events(pool: Pool) -> AsyncIterator[Callable[[str, str], Awaitable[None]]]:
    """`await refuse(session_id, event_type)`: from then on PostgreSQL refuses, with a check
    violation, to store events of that type in that session (a real refusal, as a constraint
    or an unstorable value would give)."""
    await pool.execute(REFUSE_EVENTS_SQL)
    sessions: list[str] = []

    async def refuse(session_id: str, event_type: str) -> None:
        sessions.append(session_id)
        await pool.execute(
            "INSERT INTO test_refused_events VALUES ($1, $2)", session_id, event_type
        )

    try:
        yield refuse
    finally:
        await pool.execute(
            "DELETE FROM test_refused_events WHERE session_id = ANY($1::text[])", sessions
        )


@contextlib.asynccontextmanager
async def worker_process(
    settings: Settings, env: dict[str, str] | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m reverie.worker` as its own process, so a test can SIGKILL it mid-step; `env`
    adds variables (e.g. a test hook) to its environment."""
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": settings.temporal_address or "",
        "DATABASE_URL": settings.database_url or "",
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": settings.anthropic_base_url or "",
        "REVERIE_TASK_QUEUE": settings.task_queue,
        "REVERIE_HOME": str(settings.reverie_home),
        # Sessions cached by a killed worker move on to the next one within a second.
        "REVERIE_WORKER_STICKY_TIMEOUT_SECONDS": "1",
        # As the in-process test worker: bubblewrap where it works, else unsandboxed bash.
        "REVERIE_SANDBOX": "none",
        **(env or {}),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "reverie.worker", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            await stop(process)


async def stop(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, as an operator stops a worker; SIGKILL if it has not ended within 15 s."""
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), 15)
    except TimeoutError:
        process.kill()
        await process.wait()


async def kill(process: asyncio.subprocess.Process) -> None:
    """SIGKILL: no clean-up, no graceful shutdown, as when a machine dies."""
    process.send_signal(signal.SIGKILL)
    await process.wait()
