"""What the model sees: ordered user and assistant turns, the compactions that stand for older
turns, and finished model steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from reverie.models.common import scrub_json
from reverie.store.pool import Connection, Pool


async def load(conn: Pool | Connection, session_id: str) -> list[tuple[str, list[Any]]]:
    rows = await conn.fetch(
        "SELECT role, content FROM transcript WHERE session_id = $1 ORDER BY seq", session_id
    )
    return [(row["role"], row["content"]) for row in rows]


@dataclass(frozen=True)
class Row:
    seq: int
    role: str
    content: list[Any]


@dataclass(frozen=True)
class Compaction:
    id: str
    upto_seq: int
    summary: str


@dataclass(frozen=True)
class Compacted:
    """The transcript as the model is sent it: the newest compaction's summary (if any) in place
    of the rows it covers, then the rows after it."""

    summary: str | None
    entries: list[tuple[str, list[Any]]]


async def latest_compaction(conn: Pool | Connection, session_id: str) -> Compaction | None:
    row = await conn.fetchrow(
        "SELECT id, upto_seq, summary FROM compactions WHERE session_id = $1"
        " ORDER BY upto_seq DESC, created_at DESC LIMIT 1",
        session_id,
    )
    return None if row is None else Compaction(row["id"], row["upto_seq"], row["summary"])


async def rows_after(conn: Pool | Connection, session_id: str, seq: int) -> list[Row]:
    rows = await conn.fetch(
        "SELECT seq, role, content FROM transcript WHERE session_id = $1 AND seq > $2 ORDER BY seq",
        session_id,
        seq,
    )
    return [Row(row["seq"], row["role"], row["content"]) for row in rows]


async def load_compacted(conn: Pool | Connection, session_id: str) -> Compacted:
    latest = await latest_compaction(conn, session_id)
    rows = await rows_after(conn, session_id, latest.upto_seq if latest else 0)
    return Compacted(
        summary=latest.summary if latest else None,
        entries=[(row.role, row.content) for row in rows],
    )


async def compaction(conn: Pool | Connection, compaction_id: str) -> Compaction | None:
    row = await conn.fetchrow(
        "SELECT id, upto_seq, summary FROM compactions WHERE id = $1", compaction_id
    )
    return None if row is None else Compaction(row["id"], row["upto_seq"], row["summary"])


async def add_compaction(
    conn: Connection, compaction_id: str, session_id: str, upto_seq: int, summary: str, reason: str
) -> bool:
    """Record a compaction; False when an earlier attempt with this id already did."""
    summary, _ = scrub_json(summary)
    inserted = await conn.fetchval(
        "INSERT INTO compactions (id, session_id, upto_seq, summary, reason)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING RETURNING true",
        compaction_id,
        session_id,
        upto_seq,
        summary,
        reason,
    )
    return bool(inserted)


async def add(
    conn: Pool | Connection, entry_id: str, session_id: str, role: str, content: list[Any]
) -> None:
    """One turn, with NUL and unpaired surrogates replaced as the event log replaces them
    (`events.storable`), so the model is shown what the log shows."""
    content, _ = scrub_json(content)
    await conn.execute(
        "INSERT INTO transcript (id, session_id, role, content) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (id) DO NOTHING",
        entry_id,
        session_id,
        role,
        content,
    )


async def finished_step(conn: Pool | Connection, step_id: str) -> dict[str, Any] | None:
    return await conn.fetchval("SELECT result FROM model_steps WHERE step_id = $1", step_id)


async def finish_step(
    conn: Connection, step_id: str, session_id: str, result: dict[str, Any]
) -> bool:
    """Record a step's result; False when an earlier attempt already did (write nothing more)."""
    result, _ = scrub_json(result)
    inserted = await conn.fetchval(
        "INSERT INTO model_steps (step_id, session_id, result) VALUES ($1, $2, $3)"
        " ON CONFLICT (step_id) DO NOTHING RETURNING true",
        step_id,
        session_id,
        result,
    )
    return bool(inserted)
