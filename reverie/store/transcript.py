"""What the model sees: ordered user and assistant turns, and finished model steps."""

from __future__ import annotations

from typing import Any

from reverie.models.common import scrub_json
from reverie.store.pool import Connection, Pool


async def load(conn: Pool | Connection, session_id: str) -> list[tuple[str, list[Any]]]:
    rows = await conn.fetch(
        "SELECT role, content FROM transcript WHERE session_id = $1 ORDER BY seq", session_id
    )
    return [(row["role"], row["content"]) for row in rows]


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
