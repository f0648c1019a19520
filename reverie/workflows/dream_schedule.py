"""`ScheduledDreamWorkflow`: what a Temporal schedule of dreams starts, once per scheduled time.

It takes the sessions that had the store attached since the schedule's cursor (in PostgreSQL),
makes one dream per 100 of them (none when there are none) and runs them one after the other as
child `DreamWorkflow`s (id = the dream id). The dreams of a scheduled time are made once, with
ids derived from the schedule and that time, so the same time run twice finds them and reads
no session again; a dream already running is not started twice. The schedule itself never
overlaps runs (`ScheduleOverlapPolicy.SKIP`).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import SearchAttributeKey, WorkflowIDReusePolicy
from temporalio.exceptions import CancelledError, ChildWorkflowError, WorkflowAlreadyStartedError
from temporalio.workflow import ActivityHandle, ChildWorkflowCancellationType

with workflow.unsafe.imports_passed_through():
    from reverie.models.dreams import (
        INTERNAL_ERROR,
        SCHEDULED_DREAM_WORKFLOW,
        DreamActivity,
        DreamError,
        DreamWorkflowInput,
        FinishInput,
        ScheduledDreamInput,
        SchedulePicked,
        SchedulePickInput,
    )
    from reverie.workflows.dream import RECORD_RETRY, RECORD_TIMEOUT, DreamWorkflow
    from reverie.workflows.patches import (
        SCHEDULED_PICK_SURVIVES_CANCEL,
        SCHEDULED_RUN_ENDS_ITS_DREAMS,
        patched,
    )

SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")


@workflow.defn(name=SCHEDULED_DREAM_WORKFLOW)
class ScheduledDreamWorkflow:
    @workflow.run
    async def run(self, params: ScheduledDreamInput) -> SchedulePicked:
        when = (
            params.scheduled_time
            or workflow.info().typed_search_attributes.get(SCHEDULED_START)
            or workflow.now()
        )
        pick = SchedulePickInput(
            schedule_id=params.schedule_id, scheduled_time=when, batch=params.batch
        )
        survives_cancel = patched(SCHEDULED_PICK_SURVIVES_CANCEL)
        handle = workflow.start_activity(
            DreamActivity.SCHEDULE_PICK,
            pick,
            start_to_close_timeout=RECORD_TIMEOUT,
            retry_policy=RECORD_RETRY,
            result_type=SchedulePicked,
            summary="pick the new sessions",
        )
        picked = await (self._through_cancel(handle) if survives_cancel else handle)
        if not picked.dream_ids:
            workflow.set_current_details("no new sessions: nothing to dream over")
            return picked
        # (patched: a run canceled in the Web UI stops, its dreams canceled, instead of
        # canceling only its current dream and going on with the next)
        ends_its_dreams = patched(SCHEDULED_RUN_ENDS_ITS_DREAMS)
        cancellation = (
            ChildWorkflowCancellationType.TRY_CANCEL
            if ends_its_dreams
            else ChildWorkflowCancellationType.WAIT_CANCELLATION_COMPLETED
        )
        started = 0
        try:
            for n, dream_id in enumerate(picked.dream_ids, 1):
                started = n
                workflow.set_current_details(
                    f"dream {n} of {len(picked.dream_ids)} ({picked.session_count} sessions)"
                )
                try:
                    await workflow.execute_child_workflow(
                        DreamWorkflow.run,
                        params.template.model_copy(update={"dream_id": dream_id}),
                        id=dream_id,
                        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                        execution_timeout=timedelta(days=1),
                        cancellation_type=cancellation,
                    )
                except WorkflowAlreadyStartedError:
                    continue  # this time's run already started it; it goes on by itself
        except (asyncio.CancelledError, CancelledError, ChildWorkflowError) as error:
            if ends_its_dreams:
                # A canceled child ends itself canceled; a failed one could not end itself.
                if isinstance(error, ChildWorkflowError) and not isinstance(
                    error.cause, CancelledError
                ):
                    await self._end(picked.dream_ids[started - 1 : started], "failed")
                await self._end(picked.dream_ids[started:], "canceled")
            raise
        return picked

    async def _through_cancel(self, pick: ActivityHandle[SchedulePicked]) -> SchedulePicked:
        """The pick, not abandoned when the run is canceled: it may already have made this
        time's dreams and moved the cursor past their sessions, so the run waits for its answer
        and ends those dreams canceled (no later run would pick their sessions again)."""
        try:
            return await asyncio.shield(pick)
        except asyncio.CancelledError:
            picked = await pick
            await self._end(picked.dream_ids, "canceled")
            raise

    async def _end(self, dream_ids: list[str], status: str) -> None:
        """Dreams this run will not run (or whose workflow failed without ending them): their
        final status, so none stays pending or running for ever. A dream already ended keeps
        its own."""
        for dream_id in dream_ids:
            error = None
            if status == "failed":
                error = DreamError(type=INTERNAL_ERROR, message="the dream's workflow failed")
            await workflow.execute_activity(
                DreamActivity.FINISH,
                FinishInput(dream_id=dream_id, status=status, error=error),  # type: ignore[arg-type]
                start_to_close_timeout=RECORD_TIMEOUT,
                retry_policy=RECORD_RETRY,
                result_type=str,
                summary=f"dream {status}: its run ended",
            )


__all__ = ["DreamWorkflowInput", "ScheduledDreamWorkflow"]
