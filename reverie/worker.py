"""The worker: runs session workflows and their activities on one task queue."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import anthropic
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import PollerBehaviorSimpleMaximum, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from reverie import event_loop
from reverie.activities.compaction import CompactionActivities
from reverie.activities.delegation import DelegationActivities
from reverie.activities.dream import DreamActivities
from reverie.activities.events import EventActivities
from reverie.activities.grader import GraderActivities
from reverie.activities.model import ModelActivities, model_client
from reverie.activities.model_facts import ModelCatalog
from reverie.activities.tool_run import ToolActivities
from reverie.activities.tools import SandboxMode, SandboxUnavailableError, detect_sandbox
from reverie.activities.webhook import WebhookActivities, start_dispatcher_if_needed
from reverie.connections import connect_database, connect_temporal
from reverie.observability import setup as observability_setup
from reverie.observability.interceptor import MetricsInterceptor
from reverie.observability.logs import without_password
from reverie.settings import Settings, load_settings
from reverie.store.pool import Pool
from reverie.workflows.dream import DreamWorkflow
from reverie.workflows.dream_schedule import ScheduledDreamWorkflow
from reverie.workflows.session import SEARCH_ATTRIBUTES, SessionWorkflow
from reverie.workflows.thread import ThreadWorkflow
from reverie.workflows.webhooks import WORKFLOWS as WEBHOOK_WORKFLOWS

log = logging.getLogger("reverie.worker")


def sandbox_for(settings: Settings) -> SandboxMode | None:
    """bubblewrap where it works; unsandboxed only when asked; otherwise bash is refused."""
    try:
        mode = detect_sandbox(settings.sandbox)
    except SandboxUnavailableError as error:
        log.error("bash is disabled on this worker: %s", error)
        return None
    log.info("bash runs with sandbox: %s", mode)
    return mode


def worker_tuning(settings: Settings) -> dict[str, Any]:
    """How a worker polls, how much it runs at once and how it runs workflow code (shared with
    the benchmarks' yardstick, so that a bare workflow is measured with the same tuning). Each
    call makes a new thread pool: one per worker."""
    return {
        # A burst of new sessions waits on the polls of the (non-sticky) task queue: as many
        # of those as of the sticky one, and more than the SDK's 5 (measured: 30 -> 47
        # sessions/s with 200 sessions created at once, see bench/README.md).
        "workflow_task_poller_behavior": PollerBehaviorSimpleMaximum(
            maximum=settings.worker_workflow_polls
        ),
        "nonsticky_to_sticky_poll_ratio": 1.0,
        "activity_task_poller_behavior": PollerBehaviorSimpleMaximum(
            maximum=settings.worker_activity_polls
        ),
        "max_concurrent_workflow_tasks": settings.worker_workflow_tasks,
        "workflow_runner": workflow_runner(settings),
        # Threads running workflow code: they share one interpreter lock, so a few do as much
        # as the SDK's default of up to 500, with less contention.
        "workflow_task_executor": ThreadPoolExecutor(
            settings.worker_workflow_threads, thread_name_prefix="reverie_workflow_"
        ),
        "max_concurrent_activities": settings.worker_activities,
        # Send heartbeats at least every second: interrupts reach a running model call quickly.
        "max_heartbeat_throttle_interval": timedelta(seconds=1),
        "default_heartbeat_throttle_interval": timedelta(seconds=1),
        "graceful_shutdown_timeout": timedelta(seconds=5),
        # A dead worker's sessions move on to other workers after this pause (Temporal: 10 s).
        "sticky_queue_schedule_to_start_timeout": timedelta(
            seconds=settings.worker_sticky_timeout_seconds
        ),
    }


def workflow_runner(settings: Settings) -> SandboxedWorkflowRunner:
    """The sandbox, loading workflow modules once per worker rather than once per workflow run
    (`REVERIE_WORKFLOW_SANDBOX=passthrough`, the default): a new session then costs no module
    imports. Workflow modules hold no state, and the sandbox's runtime checks of what workflow
    code calls still apply; `reload` restores the SDK's default."""
    restrictions = SandboxRestrictions.default
    if settings.workflow_sandbox == "passthrough":
        restrictions = restrictions.with_passthrough_all_modules()
    return SandboxedWorkflowRunner(restrictions=restrictions)


def tune_garbage_collector(threshold: int) -> None:
    """A worker allocates many short-lived objects per task (protobufs, pydantic models, JSON):
    with Python's young generation of 700 objects, collections cost a few % of every turn. A
    larger one is process-wide, so the process that runs a worker sets it (0: Python's)."""
    if threshold:
        gc.set_threshold(threshold, 50, 50)


class ReverieWorker(Worker):
    """A Temporal worker that closes the model client its activities share once they stopped
    (its aiohttp session would otherwise be left open, and warned about, at exit)."""

    def __init__(self, *args: Any, model: anthropic.AsyncAnthropic, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model = model

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            await self.model.close()


def build_worker(client: Client, pool: Pool, settings: Settings, **overrides: Any) -> ReverieWorker:
    tune_garbage_collector(settings.worker_gc_threshold)
    hooks = WebhookActivities(pool, settings, client)  # webhook deliveries (issue 19)
    events = EventActivities(pool)
    messages = model_client(settings)
    catalog = ModelCatalog(messages, settings)  # shared: one look-up per model and worker
    model = ModelActivities(pool, settings, messages, catalog)
    compaction = CompactionActivities(pool, settings, messages, catalog)
    tools = ToolActivities(pool, settings, sandbox_for(settings))
    delegation = DelegationActivities(pool)  # multi-agent threads (issue 18)
    grader = GraderActivities(pool, settings, messages)
    dreams = DreamActivities(pool, settings, messages)  # dreaming (issue 20)
    return ReverieWorker(
        client,
        model=messages,
        task_queue=settings.task_queue,
        workflows=[
            SessionWorkflow,
            ThreadWorkflow,
            *WEBHOOK_WORKFLOWS,
            DreamWorkflow,
            ScheduledDreamWorkflow,
        ],
        activities=[
            hooks.dispatch,
            hooks.deliver_due,
            events.record_events,
            events.promote_inputs,
            model.model_step,
            model.settle_model_step,
            model.adopt_inputs,
            model.record_unrun_tool_uses,
            compaction.compact_transcript,
            tools.run_tool,
            tools.record_tool_error,
            delegation.delegate,
            delegation.record_wait_result,
            delegation.record_thread_status,
            delegation.report_thread_reply,
            delegation.cross_post_tool_uses,
            delegation.route_answer,
            grader.grade_outcome,
            grader.record_outcome,
            grader.settle_outcome_evaluation,
            dreams.dream_start,
            dreams.dream_extract,
            dreams.dream_plan,
            dreams.dream_consolidate,
            dreams.dream_finish,
            dreams.dream_schedule_pick,
        ],
        # Activity durations, turns and webhook outcomes in the metrics (no-ops when off).
        **{"interceptors": [MetricsInterceptor()], **worker_tuning(settings), **overrides},
    )


async def ensure_search_attributes(client: Client) -> None:
    """Register Reverie's search attributes on a cluster that lacks them (the dev server has them)."""
    namespace = client.namespace
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    missing = {
        key.name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD
        for key in SEARCH_ATTRIBUTES
        if key.name not in listed.custom_attributes
    }
    if missing:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
            )
        except RPCError as error:
            # Another process starting at the same time added them first: that is the goal.
            if error.status != RPCStatusCode.ALREADY_EXISTS:
                raise


async def run_worker(settings: Settings | None = None) -> None:
    """Run until SIGINT/SIGTERM; in-flight activities get a grace period, then Temporal retries."""
    settings = settings or load_settings()
    observability_setup(settings)
    client = await connect_temporal(settings)
    await ensure_search_attributes(client)
    pool = await connect_database(settings)
    await start_dispatcher_if_needed(client, pool, settings)
    worker = build_worker(client, pool, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    target = without_password(settings.anthropic_base_url or "the Anthropic API")
    log.info("worker on task queue %r, model at %s", settings.task_queue, target)
    async with worker:
        await stop.wait()
    await pool.close()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    event_loop.run(run_worker())


if __name__ == "__main__":
    main()
