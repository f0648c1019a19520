"""`ScheduledDreamWorkflow`: what a Temporal schedule of dreams starts, once per scheduled time.

It takes the sessions that had the store attached since the schedule's cursor (in PostgreSQL),
makes one dream per 100 of them (none when there are none) and runs them one after the other as
child `DreamWorkflow`s (id = the dream id). The dreams of a scheduled time are made once, with
ids derived from the schedule and that time, so the same time run twice finds them and reads
no session again; a dream already running is not started twice. The schedule itself never
overlaps runs (`ScheduleOverlapPolicy.SKIP`).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import SearchAttributeKey, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

with workflow.unsafe.imports_passed_through():
    from reverie.models.dreams import (
        SCHEDULED_DREAM_WORKFLOW,
        DreamActivity,
        DreamWorkflowInput,
        ScheduledDreamInput,
        SchedulePicked,
        SchedulePickInput,
    )
    from reverie.workflows.dream import RECORD_RETRY, RECORD_TIMEOUT, DreamWorkflow

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
        picked = await workflow.execute_activity(
            DreamActivity.SCHEDULE_PICK,
            SchedulePickInput(schedule_id=params.schedule_id, scheduled_time=when),
            start_to_close_timeout=RECORD_TIMEOUT,
            retry_policy=RECORD_RETRY,
            result_type=SchedulePicked,
            summary="pick the new sessions",
        )
        if not picked.dream_ids:
            workflow.set_current_details("no new sessions: nothing to dream over")
            return picked
        for n, dream_id in enumerate(picked.dream_ids, 1):
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
                )
            except WorkflowAlreadyStartedError:
                continue  # this time's run already started it; it goes on by itself
        return picked


__all__ = ["DreamWorkflowInput", "ScheduledDreamWorkflow"]
