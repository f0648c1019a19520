"""Queue depth: how many workflow and activity tasks wait for a worker on Reverie's task queue,
asked of Temporal every few seconds by each process that has metrics on (the figure is the
cluster's, so any one process's answer will do; dashboards take the max)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from reverie.observability.metrics import METRICS

log = logging.getLogger("reverie.observability")
INTERVAL_SECONDS = 10.0
KINDS = {
    "workflow": TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    "activity": TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
}
_reporters: dict[tuple[int, str], asyncio.Task[None]] = {}


async def report_once(client: Client, task_queue: str) -> None:
    for kind, queue_type in KINDS.items():
        answer = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=queue_type,
                report_stats=True,
            )
        )
        METRICS.queue_depth(task_queue, kind, answer.stats.approximate_backlog_count)


# What a server says when it will never answer: it has no task queue stats, or this client
# may not ask (Temporal Cloud's API keys without the permission). Anything else (Temporal
# restarting, a timeout) passes: the next round asks again.
FINAL = {
    RPCStatusCode.UNIMPLEMENTED,
    RPCStatusCode.PERMISSION_DENIED,
    RPCStatusCode.UNAUTHENTICATED,
    RPCStatusCode.INVALID_ARGUMENT,
}


def gives_up(error: RPCError) -> bool:
    return error.status in FINAL


async def _report(client: Client, task_queue: str) -> None:
    failing = False
    while True:
        try:
            await report_once(client, task_queue)
            failing = False
        except RPCError as error:
            if gives_up(error):
                log.warning("no queue depth metrics: %s", error)
                return
            if not failing:  # once per outage, not every round
                log.warning("queue depth not read (asking again): %s", error)
            failing = True
        await asyncio.sleep(INTERVAL_SECONDS)


def start_reporting(client: Client, task_queue: str) -> None:
    """Report the task queue's depth for as long as the event loop runs (once per client)."""
    key = (id(client), task_queue)
    if key in _reporters and not _reporters[key].done():
        return
    with contextlib.suppress(RuntimeError):  # no running loop: nothing to report from
        _reporters[key] = asyncio.get_running_loop().create_task(_report(client, task_queue))


def stop_reporting() -> None:
    """Stop every reporter of this process (tests, and processes shutting down cleanly)."""
    for task in _reporters.values():
        task.cancel()
    _reporters.clear()
