"""Timeouts and retry policies of every activity a session calls, with the reasons for them."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

from reverie.models.workflow_io import SessionOptions

# Writing a few rows: fast and idempotent (ids made by the workflow), so these run as local
# activities: no round trip through the server's task queues, ~10 ms saved per write. A worker
# that dies mid-write re-runs the workflow task, and the write again, harmlessly.
RECORD_TIMEOUT = timedelta(seconds=15)
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    # Unlimited: a failed record would fail the whole workflow, and a database outage must
    # only pause sessions, never end them. Refusals that retrying cannot fix are non-retryable.
    maximum_attempts=0,
)


def worker_loss_retry(options: SessionOptions) -> RetryPolicy:
    """For model steps whose model errors the workflow retries (they fail non-retryable, see
    `patches.MODEL_RETRIES_IN_WORKFLOW`): Temporal then retries only attempts lost with their
    worker (heartbeat or start-to-close timeouts) or to a passing failure of our own (the
    database unreachable), promptly and counted apart from the model's error budget.
    """
    return RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=10),
        maximum_attempts=options.worker_loss_retries + 1,
    )


def model_retry(options: SessionOptions) -> RetryPolicy:
    """Model steps of runs older than `patches.MODEL_RETRIES_IN_WORKFLOW`: every failure counts.

    Bounded: after the last attempt the session idles with `retries_exhausted`.

    The activity sets `next_retry_delay` from `retry-after` when the server sends one; these
    intervals apply otherwise (and after a worker crash).
    """
    return RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=60),
        maximum_attempts=options.model_max_attempts,
    )


def model_timeouts(options: SessionOptions) -> dict[str, timedelta]:
    return {
        # The SDK's own timeout fires first; this only catches a call that ignores it.
        "start_to_close_timeout": timedelta(seconds=options.model_timeout_seconds + 30),
        "heartbeat_timeout": timedelta(seconds=options.heartbeat_timeout_seconds),
    }


def compaction_timeouts(options: SessionOptions) -> dict[str, timedelta]:
    """A compaction may summarise in several model calls; it heartbeats through each."""
    return {
        "start_to_close_timeout": timedelta(seconds=options.model_timeout_seconds * 4 + 60),
        "heartbeat_timeout": timedelta(seconds=options.heartbeat_timeout_seconds),
    }


# Tools run at most once: a command must never run twice because a worker died mid-run. A lost
# run is reported to the agent as interrupted, and the agent decides what to do.
TOOL_RETRY = RetryPolicy(maximum_attempts=1)
# bash allows up to 10 minutes per command; the margin covers start-up and recording.
TOOL_START_TO_CLOSE = timedelta(minutes=11)


def tool_timeouts(options: SessionOptions) -> dict[str, timedelta]:
    return {
        "start_to_close_timeout": TOOL_START_TO_CLOSE,
        "heartbeat_timeout": timedelta(seconds=options.heartbeat_timeout_seconds),
    }
