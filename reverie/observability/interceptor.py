"""A worker interceptor that measures every activity, reads the metrics its results carry
(turns ended, webhook deliveries), and names the activity's session and thread in its logs, so
that activity code does not have to."""

from __future__ import annotations

import time
from typing import Any

from temporalio import activity, workflow
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from reverie.observability.logs import log_context
from reverie.observability.metrics import METRICS


def _ids(input: ExecuteActivityInput) -> tuple[str | None, str | None]:
    """The session and thread an activity works for: from its input (a thread's activities
    name their session), else from its workflow's id (a session's is its session id)."""
    workflow_id = activity.info().workflow_id or ""
    session_id = next(
        (s for s in (getattr(a, "session_id", None) for a in input.args) if isinstance(s, str)),
        None,
    )
    if session_id is None and workflow_id.startswith("sesn_"):
        session_id = workflow_id
    thread_id = workflow_id if workflow_id.startswith("sthr_") else None
    return session_id, thread_id


class _MeasuredActivity(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        name = activity.info().activity_type
        started = time.monotonic()
        ok = False
        session_id, thread_id = _ids(input)
        try:
            # Every log line of the activity (its HTTP client's too) names them.
            with log_context(session_id, thread_id):
                result = await super().execute_activity(input)
            ok = True
        finally:
            METRICS.activity(name, time.monotonic() - started, ok=ok)
        _read_result(result)
        return result


def _read_result(result: Any) -> None:
    """Turns end with a model step that asks for no tool; deliveries report their outcomes."""
    stop_reason = getattr(result, "stop_reason", None)
    if isinstance(stop_reason, str) and hasattr(result, "tool_uses"):
        if stop_reason != "tool_use":
            METRICS.turn(stop_reason)
    elif hasattr(result, "delivered") and hasattr(result, "failed"):
        METRICS.webhook(delivered=result.delivered, failed=result.failed, retrying=result.retrying)


# Workflows whose whole run is measured (in workflow time, so replays agree), by type name.
MEASURED_WORKFLOWS = {"DreamWorkflow": "reverie_dream_duration"}


class _MeasuredWorkflow(WorkflowInboundInterceptor):
    """A dream's duration, from its start to its end in workflow time. Recorded through the
    workflow's own meter, which records nothing while a history is replayed; it adds no
    command, so histories replay as before."""

    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        metric = MEASURED_WORKFLOWS.get(workflow.info().workflow_type)
        if metric is None:
            return await super().execute_workflow(input)
        started = workflow.now()
        outcome = "error"
        try:
            result = await super().execute_workflow(input)
            outcome = "ok"
            return result
        finally:
            seconds = (workflow.now() - started).total_seconds()
            workflow.metric_meter().create_histogram_float(metric, "Dream runs", "s").record(
                seconds, {"outcome": outcome}
            )


class MetricsInterceptor(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _MeasuredActivity(next)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor] | None:
        return _MeasuredWorkflow
