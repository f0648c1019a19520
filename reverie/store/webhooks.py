"""Webhooks in PostgreSQL: the outbox (deliveries written with the events they announce),
endpoints, and the queries the dispatcher and the delivering activity run.

The outbox: whatever makes an announced event visible writes its deliveries in the same
transaction, one per enabled endpoint subscribed to the type, keyed on (event, endpoint), with
a NOTIFY on `NOTIFY_CHANNEL` only if it wrote any. Session events: a trigger on `events`
(migration 0009), so every path that records them owes their deliveries at no extra round trip;
events of types no webhook announces (most of a session's log) never even call it. Agents,
environments, sessions themselves and memory stores: `record`, called by their store modules
in the transaction that makes the change.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reverie.models.common import new_id
from reverie.models.errors import InvalidRequestError, NotFoundError
from reverie.models.webhooks import (
    DELIVERY_PREFIX,
    ENDPOINT_PREFIX,
    EVENT_PREFIX,
    MAX_ENDPOINTS,
    NewWebhookEndpoint,
    WebhookAttempt,
    WebhookDelivery,
    WebhookDeliveryPage,
    WebhookEndpoint,
    WebhookEndpointPage,
    delivery_id_of,
    event_data,
)
from reverie.store.paging import cursor_args, encode_cursor
from reverie.store.pool import Connection, Pool

# One NOTIFY per commit that owes an endpoint something; the dispatcher listens (payload empty).
NOTIFY_CHANNEL = "reverie_webhooks"

_OUTBOX = f"""
WITH new (event_id, event_type, data, created_at) AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
), inserted AS (
    INSERT INTO webhook_deliveries (id, event_id, endpoint_id, event_type, data, created_at)
    SELECT '{DELIVERY_PREFIX}_' || md5(n.event_id || '/' || e.id), n.event_id, e.id,
           n.event_type, n.data::jsonb, coalesce(n.created_at, now())
    FROM new n JOIN webhook_endpoints e
      ON e.state = 'enabled' AND n.event_type = ANY (e.enabled_events)
    FOR KEY SHARE OF e SKIP LOCKED  -- an endpoint a delete holds is skipped (see 0010)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT pg_notify('{NOTIFY_CHANNEL}', '') FROM (SELECT 1 FROM inserted LIMIT 1) AS any_inserted
"""


async def _write_outbox(
    conn: Pool | Connection, rows: Sequence[tuple[str, str, dict[str, Any], datetime | None]]
) -> None:
    await conn.execute(
        _OUTBOX,
        [r[0] for r in rows],
        [r[1] for r in rows],
        [json.dumps(r[2]) for r in rows],
        [r[3] for r in rows],
    )


async def record(
    conn: Pool | Connection,
    webhook_type: str,
    data: dict[str, Any] | str,
    *,
    created_at: datetime | None = None,
) -> None:
    """Announce that an object changed (`agent.created`, `memory_store.archived`...): call it
    in the transaction that makes the change, so the announcement exists exactly when the change
    does. `data` is the object's id, or a dict with at least `id` (and any other field the
    SDK's event data has, e.g. `session_thread_id`)."""
    fields = {"id": data} if isinstance(data, str) else dict(data)
    object_id = fields.pop("id")
    await _write_outbox(
        conn,
        [
            (
                new_id(EVENT_PREFIX),
                webhook_type,
                event_data(webhook_type, object_id, **fields),
                created_at,
            )
        ],
    )


# ---- endpoints -----------------------------------------------------------------------------------

_ENDPOINT_FIELDS = (
    "id, url, name, description, enabled_events, state, disabled_reason, created_at, updated_at"
)


def _endpoint(row: Any) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=row["id"],
        url=row["url"],
        name=row["name"],
        description=row["description"],
        enabled_events=list(row["enabled_events"]),
        state=row["state"],
        disabled_reason=row["disabled_reason"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def create_endpoint(
    pool: Pool,
    *,
    url: str,
    enabled_events: Sequence[str],
    name: str,
    description: str,
    signing_secret: str,
    created_by: str,
) -> NewWebhookEndpoint:
    async with pool.acquire() as conn, conn.transaction():
        # Serialises creations, so the count below cannot be passed by two at once.
        await conn.execute("LOCK TABLE webhook_endpoints IN SHARE ROW EXCLUSIVE MODE")
        count = await conn.fetchval("SELECT count(*) FROM webhook_endpoints")
        if count >= MAX_ENDPOINTS:
            raise InvalidRequestError(
                f"there are {count} webhook endpoints already, the most Reverie keeps; delete "
                "one first"
            )
        row = await conn.fetchrow(
            f"""INSERT INTO webhook_endpoints
                    (id, url, name, description, enabled_events, signing_secret, created_by)
                VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_ENDPOINT_FIELDS}""",
            new_id(ENDPOINT_PREFIX),
            url,
            name,
            description,
            list(enabled_events),
            signing_secret,
            created_by,
        )
    return NewWebhookEndpoint(**_endpoint(row).model_dump(), signing_secret=signing_secret)


async def get_endpoint(conn: Pool | Connection, endpoint_id: str) -> WebhookEndpoint:
    row = await conn.fetchrow(
        f"SELECT {_ENDPOINT_FIELDS} FROM webhook_endpoints WHERE id = $1", endpoint_id
    )
    if row is None:
        raise NotFoundError(f"no webhook endpoint with id {endpoint_id!r}")
    return _endpoint(row)


async def any_endpoint(conn: Pool | Connection) -> bool:
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM webhook_endpoints)"))


async def list_endpoints(
    pool: Pool,
    *,
    limit: int,
    after_id: str | None = None,
    before_id: str | None = None,
    ascending: bool = False,
) -> WebhookEndpointPage:
    """A page in `created_at` order (newest first unless `ascending`). `after_id`: the page right
    after that endpoint; `before_id`: the first `limit` endpoints that come before it (the
    SDK's meaning)."""
    cursor_id = after_id or before_id
    cursor = None
    if cursor_id is not None:
        cursor = await pool.fetchrow(
            "SELECT created_at, id FROM webhook_endpoints WHERE id = $1", cursor_id
        )
        if cursor is None:
            raise InvalidRequestError(f"no webhook endpoint with id {cursor_id!r} to page from")
    # "after" in list order: older when newest first, newer when oldest first.
    older = (after_id is not None) != ascending
    compare = "<" if older else ">"
    where = f"WHERE (created_at, id) {compare} ($1, $2)" if cursor else ""
    order = "ASC" if ascending else "DESC"
    rows = await pool.fetch(
        f"""SELECT {_ENDPOINT_FIELDS} FROM webhook_endpoints {where}
            ORDER BY created_at {order}, id {order} LIMIT {int(limit) + 1}""",
        *((cursor["created_at"], cursor["id"]) if cursor else ()),
    )
    items = [_endpoint(row) for row in rows[:limit]]
    return WebhookEndpointPage(
        data=items,
        has_more=len(rows) > limit,
        first_id=items[0].id if items else None,
        last_id=items[-1].id if items else None,
    )


@dataclass(frozen=True)
class EndpointChange:
    url: str | None = None
    enabled_events: Sequence[str] | None = None
    name: str | None = None
    description: str | None = None
    state: str | None = None


async def update_endpoint(pool: Pool, endpoint_id: str, change: EndpointChange) -> WebhookEndpoint:
    """Apply a change; enabling clears `disabled_reason` and the failure count, disabling by
    hand leaves `disabled_reason` empty (the SDK's meaning)."""
    row = await pool.fetchrow(
        f"""UPDATE webhook_endpoints SET
                url = coalesce($2, url),
                enabled_events = coalesce($3, enabled_events),
                name = coalesce($4, name),
                description = coalesce($5, description),
                disabled_reason = CASE WHEN $6::text IS NULL THEN disabled_reason ELSE '' END,
                consecutive_failures = CASE WHEN $6 = 'enabled' AND state = 'disabled'
                                            THEN 0 ELSE consecutive_failures END,
                state = coalesce($6, state),
                updated_at = now()
            WHERE id = $1 RETURNING {_ENDPOINT_FIELDS}""",
        endpoint_id,
        change.url,
        list(change.enabled_events) if change.enabled_events else None,
        change.name,
        change.description,
        change.state,
    )
    if row is None:
        raise NotFoundError(f"no webhook endpoint with id {endpoint_id!r}")
    return _endpoint(row)


async def delete_endpoint(pool: Pool, endpoint_id: str) -> None:
    """Gone for good, with its deliveries and their attempts."""
    status = await pool.execute("DELETE FROM webhook_endpoints WHERE id = $1", endpoint_id)
    if status.endswith(" 0"):
        raise NotFoundError(f"no webhook endpoint with id {endpoint_id!r}")


async def rotate_secret(
    pool: Pool, endpoint_id: str, new_secret: str, grace_seconds: float
) -> datetime | None:
    """The new secret signs from now on; the current one keeps signing too for `grace_seconds`
    (none: it stops at once). Answers when the previous secret stops (None: already)."""
    row = await pool.fetchrow(
        """UPDATE webhook_endpoints SET
               previous_secret = CASE WHEN $3 > 0 THEN signing_secret END,
               previous_secret_expires_at = CASE WHEN $3 > 0
                   THEN now() + make_interval(secs => $3) END,
               signing_secret = $2,
               updated_at = now()
           WHERE id = $1 RETURNING previous_secret_expires_at""",
        endpoint_id,
        new_secret,
        float(grace_seconds),
    )
    if row is None:
        raise NotFoundError(f"no webhook endpoint with id {endpoint_id!r}")
    return row["previous_secret_expires_at"]


# ---- deliveries ---------------------------------------------------------------------------------


def _delivery(row: Any, attempts: list[WebhookAttempt] | None = None) -> WebhookDelivery:
    return WebhookDelivery(
        id=row["id"],
        event_id=row["event_id"],
        endpoint_id=row["endpoint_id"],
        event_type=row["event_type"],
        state=row["state"],
        created_at=row["created_at"],
        recorded_at=row["recorded_at"],
        dispatched_at=row["dispatched_at"],
        delivered_at=row["delivered_at"],
        next_attempt_at=row["next_attempt_at"] if row["state"] == "pending" else None,
        attempt_count=row["attempts"],
        last_status=row["last_status"],
        last_error=row["last_error"],
        redeliveries=row["redeliveries"],
        data=row["data"],
        attempts=attempts,
    )


async def add_test_delivery(pool: Pool, endpoint_id: str, webhook_type: str) -> str:
    """A delivery of a test event to one endpoint (whatever its enabled_events); its id."""
    event_id = new_id(EVENT_PREFIX)
    delivery_id = delivery_id_of(event_id, endpoint_id)
    async with pool.acquire() as conn, conn.transaction():
        state = await conn.fetchval(
            "SELECT state FROM webhook_endpoints WHERE id = $1 FOR SHARE", endpoint_id
        )
        if state is None:
            raise NotFoundError(f"no webhook endpoint with id {endpoint_id!r}")
        if state != "enabled":
            raise InvalidRequestError(
                f"webhook endpoint {endpoint_id} is disabled; enable it before testing it"
            )
        await conn.execute(
            """INSERT INTO webhook_deliveries (id, event_id, endpoint_id, event_type, data,
                                               created_at)
               VALUES ($1, $2, $3, $4, $5, now())""",
            delivery_id,
            event_id,
            endpoint_id,
            webhook_type,
            event_data(webhook_type, endpoint_id),
        )
        await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
    return delivery_id


async def get_delivery(conn: Pool | Connection, delivery_id: str) -> WebhookDelivery:
    row = await conn.fetchrow("SELECT * FROM webhook_deliveries WHERE id = $1", delivery_id)
    if row is None:
        raise NotFoundError(f"no webhook delivery with id {delivery_id!r}")
    attempts = await conn.fetch(
        "SELECT * FROM webhook_attempts WHERE delivery_id = $1 ORDER BY number", delivery_id
    )
    return _delivery(row, [_attempt(a) for a in attempts])


def _attempt(row: Any) -> WebhookAttempt:
    return WebhookAttempt(
        number=row["number"],
        webhook_id=row["webhook_id"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        latency_ms=row["latency_ms"],
        status=row["status"],
        error=row["error"],
        address=row["address"],
    )


async def list_deliveries(
    pool: Pool,
    endpoint_id: str,
    *,
    limit: int,
    page: str | None = None,
    state: str | None = None,
    event_id: str | None = None,
) -> WebhookDeliveryPage:
    """An endpoint's deliveries, newest first."""
    await get_endpoint(pool, endpoint_id)
    after, after_id = cursor_args(page)
    rows = await pool.fetch(
        """SELECT * FROM webhook_deliveries
           WHERE endpoint_id = $1
             AND ($2::text IS NULL OR state = $2)
             AND ($3::text IS NULL OR event_id = $3)
             AND ($4::timestamptz IS NULL OR (recorded_at, id) < ($4, $5))
           ORDER BY recorded_at DESC, id DESC LIMIT $6""",
        endpoint_id,
        state,
        event_id,
        after,
        after_id,
        limit + 1,
    )
    items = [_delivery(row) for row in rows[:limit]]
    more = len(rows) > limit
    return WebhookDeliveryPage(
        data=items,
        next_page=encode_cursor(rows[limit - 1]["recorded_at"], items[-1].id) if more else None,
    )


async def redeliver(pool: Pool, delivery_id: str) -> WebhookDelivery:
    """Start a new round of attempts (same event id, so the same `webhook-id`); refused while
    one is under way or the endpoint is disabled. Answers the delivery as this call left it
    (read in its transaction: a dispatcher may deliver it the moment it commits)."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """SELECT d.state, e.state AS endpoint_state, e.id AS endpoint_id
               FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
               WHERE d.id = $1 FOR UPDATE OF d""",
            delivery_id,
        )
        if row is None:
            raise NotFoundError(f"no webhook delivery with id {delivery_id!r}")
        if row["endpoint_state"] != "enabled":
            raise InvalidRequestError(
                f"webhook endpoint {row['endpoint_id']} is disabled; enable it before "
                "redelivering to it"
            )
        if row["state"] == "pending":
            raise InvalidRequestError(
                f"webhook delivery {delivery_id} is still being attempted; it can be "
                "redelivered once it is delivered or has failed"
            )
        await conn.execute(
            """UPDATE webhook_deliveries SET state = 'pending', round_started_at = now(),
                   round_attempts = 0, next_attempt_at = now(), claimed = false,
                   dispatched_at = NULL, redeliveries = redeliveries + 1
               WHERE id = $1""",
            delivery_id,
        )
        await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
        return await get_delivery(conn, delivery_id)


async def requeue_pending(pool: Pool, endpoint_id: str) -> None:
    """An endpoint enabled again: its pending deliveries are due now, and dispatched afresh."""
    async with pool.acquire() as conn, conn.transaction():
        # The endpoint first, as a delete of it locks things (see `settle`).
        await conn.execute(
            "SELECT 1 FROM webhook_endpoints WHERE id = $1 FOR KEY SHARE", endpoint_id
        )
        await conn.execute(
            """UPDATE webhook_deliveries SET dispatched_at = NULL, claimed = false,
                   next_attempt_at = least(next_attempt_at, now())
               WHERE id IN (SELECT id FROM webhook_deliveries
                            WHERE endpoint_id = $1 AND state = 'pending'
                            ORDER BY id FOR UPDATE)""",
            endpoint_id,
        )
        await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)


# ---- the dispatcher ----------------------------------------------------------------------------


async def undispatched(conn: Pool | Connection, limit: int) -> list[tuple[str, str]]:
    """(delivery id, endpoint id) of deliveries whose endpoint was not woken for them yet."""
    rows = await conn.fetch(
        """SELECT id, endpoint_id FROM webhook_deliveries WHERE dispatched_at IS NULL
           ORDER BY recorded_at LIMIT $1""",
        limit,
    )
    return [(row["id"], row["endpoint_id"]) for row in rows]


async def mark_dispatched(conn: Pool | Connection, delivery_ids: Sequence[str]) -> None:
    """Rows an attempt is writing at this moment are skipped, never waited for (so the
    dispatcher and the delivering activity never deadlock): they are dispatched again on the
    next round, which only wakes their endpoint's workflow once more."""
    await conn.execute(
        """UPDATE webhook_deliveries SET dispatched_at = clock_timestamp()
           WHERE id IN (SELECT id FROM webhook_deliveries
                        WHERE id = ANY($1::text[]) AND dispatched_at IS NULL
                        FOR UPDATE SKIP LOCKED)""",
        list(delivery_ids),
    )


async def overdue_endpoints(conn: Pool | Connection, seconds: float) -> list[str]:
    """Enabled endpoints with a pending delivery overdue by more than `seconds`: their
    workflow missed a wake-up (or is not running); the dispatcher wakes them again."""
    rows = await conn.fetch(
        """SELECT DISTINCT d.endpoint_id FROM webhook_deliveries d
           JOIN webhook_endpoints e ON e.id = d.endpoint_id AND e.state = 'enabled'
           WHERE d.state = 'pending' AND d.dispatched_at IS NOT NULL
             AND d.next_attempt_at < now() - make_interval(secs => $1)""",
        float(seconds),
    )
    return [row["endpoint_id"] for row in rows]


# ---- attempts ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What one round of attempts needs of its endpoint."""

    url: str
    enabled: bool
    secrets: tuple[str, ...]  # the current one first, then one in its grace period


async def target(conn: Pool | Connection, endpoint_id: str) -> Target | None:
    row = await conn.fetchrow(
        """SELECT url, state, signing_secret,
                  CASE WHEN previous_secret_expires_at > now() THEN previous_secret END
                      AS previous_secret
           FROM webhook_endpoints WHERE id = $1""",
        endpoint_id,
    )
    if row is None:
        return None
    secrets = (row["signing_secret"],) + (
        (row["previous_secret"],) if row["previous_secret"] else ()
    )
    return Target(url=row["url"], enabled=row["state"] == "enabled", secrets=secrets)


async def release_orphans(pool: Pool, endpoint_id: str) -> int:
    """Attempts a dead worker left in flight: logged as lost, their deliveries due again now.
    Only called by the endpoint's delivering activity when Temporal retries it, that is when
    no other attempt of this endpoint can still be running."""
    async with pool.acquire() as conn, conn.transaction():
        # The endpoint first, as a delete of it locks things (see `settle`).
        await conn.execute(
            "SELECT 1 FROM webhook_endpoints WHERE id = $1 FOR KEY SHARE", endpoint_id
        )
        ids = [
            row["id"]
            for row in await conn.fetch(
                """UPDATE webhook_deliveries SET claimed = false, next_attempt_at = now()
                   WHERE endpoint_id = $1 AND state = 'pending' AND claimed RETURNING id""",
                endpoint_id,
            )
        ]
        if ids:
            await conn.execute(
                """UPDATE webhook_attempts SET finished_at = clock_timestamp(),
                       error = 'no answer recorded: the worker making the attempt was lost'
                   WHERE delivery_id = ANY($1::text[]) AND finished_at IS NULL""",
                ids,
            )
    return len(ids)


@dataclass(frozen=True)
class Claimed:
    id: str
    event_id: str
    event_type: str
    data: dict[str, Any]
    created_at: datetime
    number: int  # this attempt's number
    round_attempts: int  # attempts in this round, this one included
    round_started_at: datetime


async def claim(pool: Pool, endpoint_id: str, limit: int, lease_seconds: float) -> list[Claimed]:
    """Take up to `limit` due deliveries of an endpoint for one attempt each: their attempt is
    logged as started and they are not due again before the lease ends (so an attempt lost with
    its worker is retried then, under the same id)."""
    rows = await pool.fetch(
        """WITH picked AS (
               SELECT id FROM webhook_deliveries
               WHERE endpoint_id = $1 AND state = 'pending' AND next_attempt_at <= now()
               ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED
           ), claimed AS (
               UPDATE webhook_deliveries d SET attempts = d.attempts + 1,
                   round_attempts = d.round_attempts + 1, claimed = true,
                   next_attempt_at = now() + make_interval(secs => $3)
               FROM picked WHERE d.id = picked.id
               RETURNING d.id, d.event_id, d.event_type, d.data, d.created_at, d.attempts,
                         d.round_attempts, d.round_started_at
           ), logged AS (
               INSERT INTO webhook_attempts (delivery_id, number, webhook_id, started_at)
               SELECT id, attempts, event_id, clock_timestamp() FROM claimed
               ON CONFLICT DO NOTHING
           )
           SELECT * FROM claimed""",
        endpoint_id,
        limit,
        float(lease_seconds),
    )
    return [
        Claimed(
            id=row["id"],
            event_id=row["event_id"],
            event_type=row["event_type"],
            data=row["data"],
            created_at=row["created_at"],
            number=row["attempts"],
            round_attempts=row["round_attempts"],
            round_started_at=row["round_started_at"],
        )
        for row in rows
    ]


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended, and what becomes of its delivery."""

    delivery_id: str
    number: int
    started_at: datetime
    latency_ms: float
    status: int | None
    error: str | None
    address: str | None
    # delivered, failed (no more retries), or pending with the time of the next attempt
    state: str
    next_attempt_at: datetime | None


async def settle(
    pool: Pool, endpoint_id: str, outcomes: Sequence[Outcome], *, disable_after: int
) -> str | None:
    """Write attempts' outcomes (in the order they finished) and keep the endpoint's count of
    consecutive failed deliveries; at `disable_after` the endpoint is disabled, with the
    reason. Answers that reason when this call disabled it.

    The endpoint's row is locked first, as a delete of the endpoint locks it before its
    deliveries and their attempts (in that order, as here), so the two never deadlock."""
    if not outcomes:
        return None
    last_success = max((i for i, o in enumerate(outcomes) if o.state == "delivered"), default=None)
    failed_after = sum(
        1
        for o in outcomes[(last_success + 1) if last_success is not None else 0 :]
        if o.state == "failed"
    )
    ordered = sorted(outcomes, key=lambda o: o.delivery_id)
    async with pool.acquire() as conn, conn.transaction():
        current = await conn.fetchrow(
            "SELECT consecutive_failures, state FROM webhook_endpoints WHERE id = $1"
            " FOR NO KEY UPDATE",
            endpoint_id,
        )
        if current is None:
            return None  # deleted meanwhile, and its deliveries with it
        count = current["consecutive_failures"]
        count = failed_after if last_success is not None else count + failed_after
        if count != current["consecutive_failures"]:
            await conn.execute(
                "UPDATE webhook_endpoints SET consecutive_failures = $2 WHERE id = $1",
                endpoint_id,
                count,
            )
        await conn.executemany(
            """UPDATE webhook_deliveries SET claimed = false, state = $2,
                   next_attempt_at = coalesce($3, next_attempt_at),
                   delivered_at = CASE WHEN $2 = 'delivered' THEN clock_timestamp()
                                       ELSE delivered_at END,
                   last_status = $4, last_error = $5
               WHERE id = $1 AND state = 'pending'""",
            [(o.delivery_id, o.state, o.next_attempt_at, o.status, o.error) for o in ordered],
        )
        await conn.executemany(
            """UPDATE webhook_attempts SET started_at = $3, finished_at = clock_timestamp(),
                   latency_ms = $4, status = $5, error = $6, address = $7
               WHERE delivery_id = $1 AND number = $2""",
            [
                (o.delivery_id, o.number, o.started_at, o.latency_ms, o.status, o.error, o.address)
                for o in ordered
            ],
        )
        if current["state"] != "enabled" or not failed_after or count < disable_after:
            return None
        last = next(o for o in reversed(outcomes) if o.state == "failed")
        why = f"HTTP {last.status}" if last.status is not None else (last.error or "no answer")
        reason = (
            f"disabled after {count} consecutive failed deliveries "
            f"(each retried until its retries ran out); the last: {why}"
        )[:1000]
        await conn.execute(
            """UPDATE webhook_endpoints SET state = 'disabled', disabled_reason = $2,
                   updated_at = now() WHERE id = $1""",
            endpoint_id,
            reason,
        )
        return reason


async def next_due(conn: Pool | Connection, endpoint_id: str) -> datetime | None:
    return await conn.fetchval(
        """SELECT min(next_attempt_at) FROM webhook_deliveries
           WHERE endpoint_id = $1 AND state = 'pending'""",
        endpoint_id,
    )
