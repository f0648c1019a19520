"""Small helpers shared by the session tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator

from reverie.models.events import Event
from reverie.settings import Settings
from reverie.starter.client import ReverieClient


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


@contextlib.asynccontextmanager
async def worker_process(settings: Settings) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m reverie.worker` as its own process, so a test can SIGKILL it mid-step."""
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": settings.temporal_address or "",
        "DATABASE_URL": settings.database_url or "",
        "ANTHROPIC_API_KEY": "test-key",
        "ANTHROPIC_BASE_URL": settings.anthropic_base_url or "",
        "REVERIE_TASK_QUEUE": settings.task_queue,
        "REVERIE_HOME": str(settings.reverie_home),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "reverie.worker", env=env, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        yield process
    finally:
        if process.returncode is None:
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
