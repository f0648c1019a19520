"""A model step's two writes, one call each (migration 0014): opening it (its new inputs into the
transcript, its span's start event) and committing its answer (result, transcript row, events,
usage, and the idle status when the answer ends the turn).

Each was a transaction of three to six statements; a statement's round trip costs the worker and
PostgreSQL about what its own work does (issue 15). The functions run the same statements in
the same order, so what each write guarantees is unchanged: all or nothing, positions gapless
under the session's lock, the NOTIFY only with the commit, a retried attempt writes nothing twice.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from reverie.models.common import scrub_json
from reverie.models.errors import NotFoundError
from reverie.models.sessions import Usage
from reverie.store.events import NOTIFY_CHANNEL, EventRow, storable
from reverie.store.pool import Connection, Pool

# 'idle': the answer ended the turn and the idle status was recorded with it; 'running': the turn
# goes on; 'recorded': an earlier attempt of the step committed first (nothing was written).
StepCommit = Literal["idle", "running", "recorded"]


def _json(value: Any) -> str:
    return json.dumps(scrub_json(value)[0])


async def open_step(
    db: Pool | Connection,
    session_id: str,
    inputs: list[tuple[str, list[Any]]],
    start: EventRow,
) -> None:
    """`inputs`: (transcript entry id, content) of each new user row, in order; `start`: the
    span's start event."""
    rows = storable(session_id, [start])
    inserted = await db.fetchval(
        "SELECT reverie_open_step($1, $2, $3, $4, $5, $6, $7, $8)",
        session_id,
        [entry_id for entry_id, _ in inputs],
        [_json(content) for _, content in inputs],
        [row[0] for row in rows],
        [row[1] for row in rows],
        [json.dumps(row[2]) for row in rows],
        [row[3] for row in rows],
        NOTIFY_CHANNEL,
    )
    if inserted is None:
        raise NotFoundError(f"no session with id {session_id!r}")


async def commit_step(
    db: Pool | Connection,
    session_id: str,
    step_id: str,
    *,
    result: dict[str, Any],
    result_if_idle: dict[str, Any],
    answer: list[Any],
    rows: list[EventRow],
    idle: tuple[str, dict[str, Any], datetime, int] | None,
    idle_after: str | None,
    usage: Usage,
    parent_session_id: str | None,
) -> StepCommit:
    """Commit a step's answer (see migration 0014). `idle`: the idle event (id, payload, stamp,
    turn count) recorded if the answer ends the turn, which is checked only with `idle_after`
    (the span start's event id) given."""
    rows = storable(session_id, rows)
    idle_id, idle_payload, idle_stamp, idle_turns = idle or (None, {}, None, None)
    outcome = await db.fetchval(
        "SELECT reverie_commit_step($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,"
        " $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)",
        session_id,
        step_id,
        _json(result),
        _json(result_if_idle),
        _json(answer),
        idle_after if idle is not None else None,
        [row[0] for row in rows],
        [row[1] for row in rows],
        [json.dumps(row[2]) for row in rows],
        [row[3] for row in rows],
        idle_id,
        json.dumps(idle_payload),
        idle_stamp,
        idle_turns,
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_creation_input_tokens,
        usage.cache_read_input_tokens,
        parent_session_id,
        NOTIFY_CHANNEL,
    )
    if outcome is None:
        raise NotFoundError(f"no session with id {session_id!r}")
    return outcome
