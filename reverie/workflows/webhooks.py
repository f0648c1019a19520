"""Webhook delivery: one dispatcher per task queue and one workflow per endpoint.

Why per endpoint and not per delivery: a delivery needs at least a start, two workflow tasks and
an activity of its own, and the dev server runs about 110 trivial workflows a second on two
cores, well short of the 200 deliveries a second asked for. An endpoint's workflow instead runs
one activity at a time that attempts every due delivery of the endpoint (many in flight), and
its history grows by a few events per round, whatever the number of deliveries in it; it
continues as new when Temporal suggests it. Deliveries themselves are rows keyed on (event,
endpoint), written with their event (the outbox): each exists once, keeps one `webhook-id`
across its attempts, and carries its own retry schedule (`next_attempt_at`), so the workflow
holds no more than an id and a flag.

`WebhookDispatcherWorkflow` (id `webhook-dispatcher/<task queue>`) runs the long-lived
`dispatch` activity, again and again: it turns outbox rows into wake-ups of endpoint workflows
(signal-with-start). A worker dying anywhere in between leaves rows undispatched, and the
activity's next attempt (after its heartbeat times out) dispatches them.

`WebhookEndpointWorkflow` (id `webhook-endpoint/<endpoint id>`): attempt what is due, then
sleep until the next delivery is due or a wake-up comes; end when the endpoint is disabled or
deleted (re-enabling it wakes it again through the dispatcher).
"""

from __future__ import annotations

import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from temporalio.client import Client
    from temporalio.common import WorkflowIDConflictPolicy

    from reverie.models.webhooks import (
        DISPATCHER_WORKFLOW,
        ENDPOINT_WORKFLOW,
        WAKE_SIGNAL,
        DeliverDueInput,
        DeliverDueResult,
        DispatcherInput,
        EndpointWorkflowInput,
        WebhookActivity,
        dispatcher_workflow_id,
    )

# Lost activities (a dead worker, a database outage) are retried for as long as it takes: the
# outbox keeps what is owed, so nothing is given up on here (deliveries fail by their own
# retry window, in the activity).
ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
)
# `deliver_due` takes new deliveries for at most a minute, then finishes what is in flight.
DELIVER_TIMEOUT = timedelta(minutes=10)


@workflow.defn(name=DISPATCHER_WORKFLOW)
class WebhookDispatcherWorkflow:
    @workflow.run
    async def run(self, params: DispatcherInput) -> None:
        workflow.set_current_details("dispatching webhook deliveries from the outbox")
        while True:
            await workflow.execute_activity(
                WebhookActivity.DISPATCH,
                params,
                start_to_close_timeout=timedelta(seconds=params.lifetime_seconds + 60),
                heartbeat_timeout=timedelta(seconds=params.heartbeat_timeout_seconds),
                retry_policy=ACTIVITY_RETRY,
                summary="dispatch the outbox",
            )
            if workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(params)


@workflow.defn(name=ENDPOINT_WORKFLOW)
class WebhookEndpointWorkflow:
    def __init__(self) -> None:
        self._woken = False
        self._delivered = 0
        self._failed = 0

    @workflow.signal(name=WAKE_SIGNAL)
    def wake(self) -> None:
        """Deliveries are owed (or overdue): attempt them as soon as the current round ends."""
        self._woken = True

    @workflow.run
    async def run(self, params: EndpointWorkflowInput) -> None:
        self._woken = self._woken or params.woken
        while True:
            self._woken = False
            result: DeliverDueResult = await workflow.execute_activity(
                WebhookActivity.DELIVER_DUE,
                DeliverDueInput(endpoint_id=params.endpoint_id),
                result_type=DeliverDueResult,
                start_to_close_timeout=DELIVER_TIMEOUT,
                heartbeat_timeout=timedelta(seconds=params.heartbeat_timeout_seconds),
                retry_policy=ACTIVITY_RETRY,
                summary="attempt due deliveries",
            )
            self._delivered += result.delivered
            self._failed += result.failed
            workflow.set_current_details(
                f"**endpoint:** {params.endpoint_id}\n"
                f"**delivered:** {self._delivered} · **failed for good:** {self._failed}\n"
                f"**next due:** {result.next_due_at or '-'}"
            )
            if not result.active:
                return  # disabled or deleted
            if not self._woken:
                if result.next_due_at is None:
                    await workflow.wait_condition(lambda: self._woken)
                else:
                    delay = (result.next_due_at - workflow.now()).total_seconds()
                    if delay > 0:
                        with contextlib.suppress(TimeoutError):
                            await workflow.wait_condition(
                                lambda: self._woken, timeout=timedelta(seconds=delay)
                            )
            if workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(
                    EndpointWorkflowInput(
                        endpoint_id=params.endpoint_id,
                        heartbeat_timeout_seconds=params.heartbeat_timeout_seconds,
                        woken=self._woken,
                    )
                )


async def ensure_dispatcher(
    client: Client, task_queue: str, params: DispatcherInput | None = None
) -> None:
    """Start the task queue's dispatcher unless it runs already (idempotent, cheap)."""
    await client.start_workflow(
        WebhookDispatcherWorkflow.run,
        params or DispatcherInput(),
        id=dispatcher_workflow_id(task_queue),
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary="webhook dispatcher: outbox -> endpoint workflows",
    )


WORKFLOWS = [WebhookDispatcherWorkflow, WebhookEndpointWorkflow]
