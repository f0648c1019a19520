"""The append-only event log, and the staging area that input events wait in."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reverie.models.common import scrub_json
from reverie.models.errors import InvalidRequestError, NotFoundError
from reverie.models.events import Event, upgrade_payload
from reverie.store import outcomes
from reverie.store.pool import Connection, Pool

EventRow = tuple[str, str, dict[str, Any], datetime]  # id, type, payload, processed_at
log = logging.getLogger(__name__)
# Every commit that adds events to a session sends one NOTIFY on this channel, with the payload
# "<session id> <position of its last event>" (see `append`; read by store/event_feed.py).
NOTIFY_CHANNEL = "reverie_events"


def storable(session_id: str, rows: Sequence[EventRow]) -> list[EventRow]:
    """Rows PostgreSQL can hold. Input events were refused at the edge if they held NUL, so
    what is left to fix is what a model or a tool produced (text, tool input, tool output):
    each NUL is recorded as U+2400 "␀" and each unpaired surrogate as U+FFFD, the rest of the
    answer is kept, and the replacement is logged, so that no answer is lost to one byte."""
    out = []
    for event_id, kind, payload, processed_at in rows:
        fixed, replaced = scrub_json(payload)
        if replaced:
            log.warning(
                "session %s: event %s (%s) held %d character(s) PostgreSQL cannot store "
                "(NUL or unpaired surrogate); recorded with U+2400 / U+FFFD in their place",
                session_id,
                event_id,
                kind,
                replaced,
            )
        out.append((event_id, kind, fixed, processed_at))
    return out


async def append(
    db: Pool | Connection, session_id: str, rows: Sequence[EventRow], *, new_session: bool = False
) -> int:
    """Append events in order; ids already present are skipped, so a retried write is a no-op.

    Positions are allocated under the session row's lock: gapless and in commit order. Given a
    connection, this joins its transaction (call it inside one); given the pool, it runs in a
    transaction of its own. Every path that makes events visible comes through here (promoted
    inputs too), so this is where followers are told: a NOTIFY in the same transaction, which
    PostgreSQL delivers only if and when it commits, so no one hears of rows they cannot read.
    The webhook deliveries an event owes are written by a trigger on `events` (migration 0009),
    so they too exist exactly when the event does, at no extra round trip.

    `new_session`: the session's row was inserted in this very transaction, so no one else
    can see it, let alone append to it: its count is 0, without the lock's round trip.
    """
    if not rows:
        return 0
    rows = storable(session_id, rows)
    if isinstance(db, Pool) and any(row[1] == "user.define_outcome" for row in rows):
        # The outcome is written with its event: two statements, one transaction.
        async with db.acquire() as conn, conn.transaction():
            return await append(conn, session_id, rows, new_session=new_session)
    # One call (migration 0013): the row's lock and count, then the rows not recorded yet,
    # numbered on from the count, the new count and the NOTIFY, in one statement under the lock;
    # given the pool, that statement is a transaction of its own.
    inserted = await db.fetchval(
        "SELECT reverie_append_events($1, $2, $3, $4, $5, $6, $7)",
        session_id,
        [row[0] for row in rows],
        [row[1] for row in rows],
        [json.dumps(row[2]) for row in rows],
        [row[3] for row in rows],
        0 if new_session else None,
        NOTIFY_CHANNEL,
    )
    if inserted is None:
        raise NotFoundError(f"no session with id {session_id!r}")
    if not inserted:
        return 0
    fresh_ids = set(inserted)
    fresh = [row for row in rows if row[0] in fresh_ids]
    for event_id, kind, payload, _ in fresh:
        if kind == "user.define_outcome":
            # The outcome exists exactly when its event does (same transaction).
            assert not isinstance(db, Pool)  # a pool took the transaction above
            await outcomes.define(db, session_id, event_id, payload)
    return len(fresh)


def _event(row: Any) -> Event:
    return Event.model_validate(
        {
            **upgrade_payload(row["type"], row["payload"]),
            "id": row["id"],
            "type": row["type"],
            "processed_at": row["processed_at"],
            "session_id": row["session_id"],
        }
    )


@dataclass(frozen=True)
class TimeRange:
    """The API's `created_at_gt|gte|lt|lte` filters, compared with each event's `processed_at`."""

    gt: datetime | None = None
    gte: datetime | None = None
    lt: datetime | None = None
    lte: datetime | None = None


async def list_events(
    pool: Pool | Connection,
    session_id: str,
    *,
    after_position: int = 0,
    limit: int = 100,
    types: Sequence[str] | None = None,
    descending: bool = False,
    created: TimeRange = TimeRange(),
    before_position: int | None = None,
    return_positions: list[int] | None = None,
) -> tuple[list[Event], int]:
    """Events between two positions (exclusive), and the position of the last one returned:
    the largest when ascending (for following), the smallest when descending (for paging).
    `return_positions`, when given, receives each returned event's position."""
    rows = await pool.fetch(
        f"""SELECT * FROM events
            WHERE session_id = $1 AND position > $2
              AND ($9::integer IS NULL OR position < $9)
              AND ($3::text[] IS NULL OR type = ANY($3::text[]))
              AND ($5::timestamptz IS NULL OR processed_at > $5)
              AND ($6::timestamptz IS NULL OR processed_at >= $6)
              AND ($7::timestamptz IS NULL OR processed_at < $7)
              AND ($8::timestamptz IS NULL OR processed_at <= $8)
            ORDER BY position {"DESC" if descending else "ASC"} LIMIT $4""",
        session_id,
        after_position,
        list(types) if types else None,
        limit,
        created.gt,
        created.gte,
        created.lt,
        created.lte,
        before_position,
    )
    positions = [row["position"] for row in rows]
    if return_positions is not None:
        return_positions.extend(positions)
    if descending:
        last = min(positions, default=before_position or 0)
    else:
        last = max(positions, default=after_position)
    return [_event(row) for row in rows], last


async def position_of(pool: Pool | Connection, session_id: str, event_id: str) -> int | None:
    """Where an event sits in its session's log (None when the session has no such event)."""
    return await pool.fetchval(
        "SELECT position FROM events WHERE session_id = $1 AND id = $2", session_id, event_id
    )


async def last_position(pool: Pool | Connection, session_id: str) -> int:
    """The position of the session's newest event (0 for none); the log is gapless."""
    count = await pool.fetchval("SELECT event_count FROM sessions WHERE id = $1", session_id)
    if count is None:
        raise NotFoundError(f"no session with id {session_id!r}")
    return count


async def get_many(conn: Pool | Connection, event_ids: Sequence[str]) -> list[Event]:
    """Events by id, in the order asked for."""
    rows = await conn.fetch("SELECT * FROM events WHERE id = ANY($1::text[])", list(event_ids))
    by_id = {row["id"]: _event(row) for row in rows}
    return [by_id[event_id] for event_id in event_ids if event_id in by_id]


async def stage(
    pool: Pool, session_id: str, staged: Sequence[tuple[str, str, dict[str, Any]]]
) -> None:
    await pool.executemany(
        "INSERT INTO staged_events (id, session_id, type, payload) VALUES ($1, $2, $3, $4)",
        [(event_id, session_id, kind, payload) for event_id, kind, payload in staged],
    )


async def stage_if_live(
    pool: Pool, session_id: str, staged: Sequence[tuple[str, str, dict[str, Any]]]
) -> bool:
    """`stage`, in one round trip with the check that the session still takes events (it
    exists, is not archived, not terminated); False, staging nothing, when it does not."""
    inserted = await pool.fetchval(
        """WITH live AS (
             SELECT 1 FROM sessions
             WHERE id = $1 AND archived_at IS NULL AND status <> 'terminated'
           ), ins AS (
             INSERT INTO staged_events (id, session_id, type, payload)
             SELECT t.id, $1, t.type, t.payload::jsonb
             FROM unnest($2::text[], $3::text[], $4::text[]) AS t(id, type, payload), live
             RETURNING 1
           )
           SELECT count(*) FROM ins""",
        session_id,
        [event_id for event_id, _, _ in staged],
        [kind for _, kind, _ in staged],
        [json.dumps(payload) for _, _, payload in staged],
    )
    return bool(inserted)


def recorded_event(
    session_id: str, event_id: str, kind: str, payload: dict[str, Any], processed_at: datetime
) -> Event:
    """An event as `get_many` reads it back, from what was written (no read needed)."""
    return _event(
        {
            "id": event_id,
            "type": kind,
            "payload": payload,
            "processed_at": processed_at,
            "session_id": session_id,
        }
    )


async def unstage(pool: Pool, event_ids: Sequence[str]) -> None:
    await pool.execute("DELETE FROM staged_events WHERE id = ANY($1::text[])", list(event_ids))


async def promote(
    conn: Connection,
    session_id: str,
    event_ids: Sequence[str],
    processed_at: datetime,
    then: Sequence[EventRow] = (),
) -> None:
    """Move staged input events into the log; already promoted ones are left as they are.
    `then`: events appended right after them, in the same write (and the same NOTIFY)."""
    found = await conn.fetch(
        "SELECT id, type, payload, true AS staged FROM staged_events"
        " WHERE session_id = $1 AND id = ANY($2::text[])"
        " UNION ALL SELECT id, NULL, NULL, false FROM events"
        " WHERE session_id = $1 AND id = ANY($2::text[])",
        session_id,
        list(event_ids),
    )
    staged = {row["id"]: row for row in found if row["staged"]}
    recorded = {row["id"] for row in found if not row["staged"]}
    missing = [i for i in event_ids if i not in staged and i not in recorded]
    if missing:
        raise InvalidRequestError(f"no staged input events with ids {missing}")
    await append(
        conn,
        session_id,
        [
            *(
                (i, staged[i]["type"], staged[i]["payload"], processed_at)
                for i in event_ids
                if i in staged
            ),
            *then,
        ],
    )
    if staged:
        await conn.execute("DELETE FROM staged_events WHERE id = ANY($1::text[])", list(staged))


async def echoes(
    conn: Pool | Connection, event_ids: Sequence[str]
) -> list[tuple[str, str, datetime]]:
    """(id, type, processed_at) of events, in the order asked for, without their payloads."""
    rows = await conn.fetch(
        "SELECT id, type, processed_at FROM events WHERE id = ANY($1::text[])", list(event_ids)
    )
    by_id = {row["id"]: (row["id"], row["type"], row["processed_at"]) for row in rows}
    return [by_id[event_id] for event_id in event_ids if event_id in by_id]
