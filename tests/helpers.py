"""Small helpers shared by the session tests."""

from __future__ import annotations

from collections import Counter

from reverie.models.events import Event
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
