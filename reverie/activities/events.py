"""Activities that write the event log: workflow-made events and promoted client inputs."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from reverie.models.errors import ReverieError
from reverie.models.workflow_io import Activity, EventEcho, PromoteInputsInput, RecordEventsInput
from reverie.store import events, sessions
from reverie.store.pool import Pool


class EventActivities:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    @activity.defn(name=Activity.RECORD_EVENTS)
    async def record_events(self, params: RecordEventsInput) -> None:
        """Events and the status they imply, in one transaction; ids make a retry a no-op."""
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
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await events.promote(conn, params.session_id, params.event_ids, params.processed_at)
                recorded = await events.get_many(conn, params.event_ids)
        except ReverieError as error:
            raise ApplicationError(
                error.message, type=error.error_type, non_retryable=True
            ) from error
        return [EventEcho(id=e.id, type=e.type, processed_at=e.processed_at) for e in recorded]
