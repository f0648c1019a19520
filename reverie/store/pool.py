"""The connection pool and the migrations that run before anything touches the database."""

from __future__ import annotations

import json
from importlib import resources

import asyncpg

# Any constant works; it only has to be the same in every Reverie process.
MIGRATION_LOCK_KEY = 0x5245564552
Pool = asyncpg.Pool
Connection = asyncpg.Connection


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """Nothing to send: asyncpg's default reset is a round trip on every release (advisory
    unlock all, CLOSE ALL, UNLISTEN *, RESET ALL), a few per cent of a session's CPU, for state
    Reverie never leaves on a pooled connection. Before this runs the pool has already rolled
    back any open transaction (closing its cursors, releasing transaction-level locks) and
    dropped the connection's listeners. The rest holds by construction: LISTEN only happens
    on dedicated connections (the event feed, the webhook dispatcher), nothing runs SET, and
    the one session-level advisory lock (memory sync's `_locked`) is unlocked in a `finally`
    that closes the connection instead, should the unlock fail."""


async def connect(database_url: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """A pool whose jsonb columns read and write Python objects; migrations applied."""
    pool = await asyncpg.create_pool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_reset_connection,
    )
    await migrate(pool)
    return pool


def migration_files() -> list[tuple[int, str, str]]:
    folder = resources.files("reverie.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number = int(entry.name.split("_", 1)[0])
            found.append((number, entry.name, entry.read_text()))
    return sorted(found)


async def migrate(pool: asyncpg.Pool) -> list[str]:
    """Apply pending migrations once, even when several processes start together."""
    applied: list[str] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for number, name, sql in migration_files():
            if number in done:
                continue
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", number, name
            )
            applied.append(name)
    return applied
