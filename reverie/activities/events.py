"""Activities that write the event log: workflow-made events and promoted client inputs.

Also the one rule every recording activity follows when PostgreSQL says no: a refusal that
retrying cannot fix (a missing row, a broken constraint, a value it cannot store) fails the
activity at once with a non-retryable `record_refused` error, so the workflow records
`session.error` instead of retrying forever; anything else (a lost connection, a deadlock, a
server restarting) stays retryable.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import asyncpg
from asyncpg.exceptions import _base as asyncpg_base
from temporalio import activity
from temporalio.exceptions import ApplicationError

from reverie.models.errors import InvalidRequestError, NotFoundError, ReverieError
from reverie.models.workflow_io import (
    RECORD_REFUSED,
    Activity,
    EventEcho,
    PromoteInputsInput,
    RecordEventsInput,
)
from reverie.store import events, sessions
from reverie.store.pool import Pool

# Refusals that are the same on every attempt. Class 23 (integrity: unique, foreign key, check,
# not null) and class 22 (data: a character or number PostgreSQL cannot store) come from the
# server; asyncpg's own DataError means an argument could not even be encoded. Syntax and
# permission errors (class 42) are left retryable: they mean a broken deployment, which an
# operator fixes, and sessions should wait for that rather than end.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.DataError,
    asyncpg_base.DataError,
    NotFoundError,
    InvalidRequestError,
)


def refusal(error: BaseException, doing: str) -> ApplicationError | None:
    """The non-retryable error to raise for a permanent refusal; None for anything transient."""
    if not isinstance(error, PERMANENT_ERRORS):
        return None
    reason = (
        error.message if isinstance(error, ReverieError) else f"{type(error).__name__}: {error}"
    )
    message = (
        f"PostgreSQL refused to {doing} ({reason}). Retrying cannot fix this; it is a bug or "
        "damaged data: report it with the session id."
    )
    return ApplicationError(
        message,
        {"error_type": "unknown_error", "message": message},
        type=RECORD_REFUSED,
        non_retryable=True,
    )


@contextlib.contextmanager
def refusals_are_final(doing: str) -> Iterator[None]:
    """Turn a permanent refusal inside the block into a non-retryable `record_refused` error."""
    try:
        yield
    except Exception as error:
        refused = refusal(error, doing)
        if refused is None:
            raise
        raise refused from error


class EventActivities:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    @activity.defn(name=Activity.RECORD_EVENTS)
    async def record_events(self, params: RecordEventsInput) -> None:
        """Events and the status they imply, in one transaction; ids make a retry a no-op."""
        kinds = ", ".join(e.type for e in params.events) or f"status {params.status}"
        with refusals_are_final(f"record {kinds} for session {params.session_id}"):
            async with self._pool.acquire() as conn, conn.transaction():
                await events.append(
                    conn,
                    params.session_id,
                    [(e.id, e.type, e.payload, e.processed_at) for e in params.events],
                )
                if params.status is not None:
                    await sessions.set_status(
                        conn,
                        params.session_id,
                        params.status,
                        archive=params.archive,
                        turns=params.turns,
                    )

    @activity.defn(name=Activity.PROMOTE_INPUTS)
    async def promote_inputs(self, params: PromoteInputsInput) -> list[EventEcho]:
        with refusals_are_final(f"record the input events {params.event_ids}"):
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    await events.promote(
                        conn,
                        params.session_id,
                        params.event_ids,
                        params.processed_at,
                        [(e.id, e.type, e.payload, e.processed_at) for e in params.then],
                    )
                    if params.status is not None:
                        await sessions.set_status(
                            conn, params.session_id, params.status, turns=params.turns
                        )
                    recorded = await events.echoes(conn, params.event_ids)
            except ReverieError as error:
                # Bad input (e.g. events no longer staged): the client reads this message.
                raise ApplicationError(
                    error.message, type=error.error_type, non_retryable=True
                ) from error
        return [EventEcho(id=i, type=t, processed_at=at) for i, t, at in recorded]
