"""The store on its own: migrations under concurrency, the event log's order and idempotency."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg

from reverie.starter.client import ReverieClient
from reverie.store import events
from reverie.store.pool import connect, migration_files


async def test_migrations_apply_once_when_processes_start_together(database_url: str) -> None:
    name = f"reverie_migrate_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(database_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = database_url.replace(database_url.split("?")[0].rsplit("/", 1)[1], name, 1)

    pools = await asyncio.gather(*(connect(url, max_size=2) for _ in range(4)))
    try:
        applied = await pools[0].fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [row["version"] for row in applied] == [number for number, _, _ in migration_files()]
        assert (
            await pools[0].fetchval("SELECT count(*) FROM environments WHERE id = 'env_default'")
            == 1
        )
    finally:
        for pool in pools:
            await pool.close()


async def test_event_positions_are_gapless_and_writes_idempotent(
    reverie: ReverieClient, model_name: str
) -> None:
    agent = await reverie.create_agent({"name": "log", "model": model_name})
    session = await reverie.create_session({"agent": agent.id})
    now = datetime.now(UTC)

    async def write(batch: int) -> None:
        async with reverie.pool.acquire() as conn, conn.transaction():
            rows = [(f"sevt_t{batch}_{i}", "agent.message", {"n": i}, now) for i in range(5)]
            await events.append(conn, session.id, rows)

    await asyncio.gather(*(write(batch) for batch in range(8)))
    await asyncio.gather(*(write(batch) for batch in range(8)))  # every id again: nothing new
    recorded, last = await events.list_events(reverie.pool, session.id, limit=1000)
    assert len(recorded) == 40 and last == 40
    positions = await reverie.pool.fetch(
        "SELECT position FROM events WHERE session_id = $1 ORDER BY position", session.id
    )
    assert [row["position"] for row in positions] == list(range(1, 41))
    after, _ = await events.list_events(reverie.pool, session.id, after_position=35)
    assert [e.id for e in after] == [e.id for e in recorded[35:]]


async def test_events_filter_by_type_time_and_order(
    reverie: ReverieClient, model_name: str
) -> None:
    agent = await reverie.create_agent({"name": "filter", "model": model_name})
    session = await reverie.create_session({"agent": agent.id})
    base = datetime(2026, 1, 1, tzinfo=UTC)
    async with reverie.pool.acquire() as conn, conn.transaction():
        await events.append(
            conn,
            session.id,
            [
                (
                    f"sevt_f{i}",
                    "agent.message" if i % 2 else "user.message",
                    {},
                    base.replace(hour=i),
                )
                for i in range(6)
            ],
        )
    listed = await reverie.list_events(session.id, types=["agent.message"])
    assert [e.id for e in listed] == ["sevt_f1", "sevt_f3", "sevt_f5"]
    window = await reverie.list_events(
        session.id, created_at_gte=base.replace(hour=2), created_at_lt=base.replace(hour=4)
    )
    assert [e.id for e in window] == ["sevt_f2", "sevt_f3"]
    newest = await reverie.list_events(session.id, order="desc", limit=2)
    assert [e.id for e in newest] == ["sevt_f5", "sevt_f4"]
