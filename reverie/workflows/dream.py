"""`DreamWorkflow` (id = the dream id): start -> read every session (in parallel, bounded) ->
plan the topics -> consolidate and write topic by topic -> finish.

The workflow holds ids and counts only; the activities keep every step's result in PostgreSQL.
Its progress shows in the Web UI (current details) and answers the `progress` query. A
cancel ends the dream `canceled` (what was written stays in the output store); a failed step
ends it `failed` with the step's error type (an input gone, a model error once its attempts
are spent), its partial output kept.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from reverie.models.dreams import (
        DREAM_WORKFLOW,
        INTERNAL_ERROR,
        ConsolidateInput,
        ConsolidateResult,
        DreamActivity,
        DreamError,
        DreamStarted,
        DreamWorkflowInput,
        ExtractInput,
        ExtractResult,
        FinishInput,
    )

# Writing rows: retried for as long as it takes (a database outage pauses a dream, never ends
# it); refusals that retrying cannot fix are non-retryable.
RECORD_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=0,
)
RECORD_TIMEOUT = timedelta(minutes=2)


class DreamFailed(Exception):
    def __init__(self, error: DreamError) -> None:
        super().__init__(error.message)
        self.error = error


def _failed(error: ActivityError) -> BaseException:
    """What a failed step means: the dream's cancel (the step was cancelled with it), or the
    dream's failure with the step's error."""
    if isinstance(error.cause, CancelledError):
        return asyncio.CancelledError()
    return DreamFailed(_error_of(error))


def _error_of(failure: BaseException) -> DreamError:
    cause = failure.cause if isinstance(failure, ActivityError) else failure
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError):
        return DreamError(type=cause.type or INTERNAL_ERROR, message=cause.message)
    return DreamError(type=INTERNAL_ERROR, message=str(cause or failure))


@workflow.defn(name=DREAM_WORKFLOW)
class DreamWorkflow:
    def __init__(self) -> None:
        self._phase = "pending"
        self._sessions = 0
        self._read = 0
        self._topics = 0
        self._consolidated = 0
        self._written = 0

    @workflow.query
    def progress(self) -> dict[str, int | str]:
        return {
            "phase": self._phase,
            "sessions": self._sessions,
            "sessions_read": self._read,
            "topics": self._topics,
            "topics_consolidated": self._consolidated,
            "memories_written": self._written,
        }

    def _details(self) -> None:
        workflow.set_current_details(
            f"{self._phase}: {self._read}/{self._sessions} sessions read, "
            f"{self._consolidated}/{self._topics} topics consolidated, "
            f"{self._written} memory versions written"
        )

    @workflow.run
    async def run(self, params: DreamWorkflowInput) -> str:
        try:
            await self._dream(params)
        except DreamFailed as failed:
            return await self._finish(params, "failed", failed.error)
        except (asyncio.CancelledError, CancelledError):
            return await self._finish(params, "canceled", None)
        return await self._finish(params, "completed", None)

    async def _finish(
        self, params: DreamWorkflowInput, status: str, error: DreamError | None
    ) -> str:
        self._phase = status
        self._details()
        return await workflow.execute_activity(
            DreamActivity.FINISH,
            FinishInput(dream_id=params.dream_id, status=status, error=error),  # type: ignore[arg-type]
            start_to_close_timeout=RECORD_TIMEOUT,
            retry_policy=RECORD_RETRY,
            result_type=str,
            summary=f"dream {status}",
        )

    def _model_step(self, params: DreamWorkflowInput) -> dict[str, object]:
        return {
            "start_to_close_timeout": timedelta(seconds=params.model_timeout_seconds * 2 + 60),
            "heartbeat_timeout": timedelta(seconds=params.heartbeat_timeout_seconds),
            "retry_policy": RetryPolicy(
                initial_interval=timedelta(seconds=1),
                maximum_interval=timedelta(seconds=60),
                maximum_attempts=params.model_max_attempts,
            ),
        }

    async def _dream(self, params: DreamWorkflowInput) -> None:
        self._phase = "starting"
        self._details()
        try:
            started = await workflow.execute_activity(
                DreamActivity.START,
                params,
                start_to_close_timeout=RECORD_TIMEOUT,
                retry_policy=RECORD_RETRY,
                result_type=DreamStarted,
                summary="check inputs, snapshot the store",
            )
        except ActivityError as error:
            raise _failed(error) from error
        if started.ended:
            return
        self._sessions = len(started.session_ids)
        self._phase = "reading sessions"
        self._details()
        gate = asyncio.Semaphore(max(1, params.extract_concurrency))

        async def read(session_id: str) -> None:
            async with gate:
                await workflow.execute_activity(
                    DreamActivity.EXTRACT,
                    ExtractInput(dream_id=params.dream_id, session_id=session_id),
                    result_type=ExtractResult,
                    summary=f"read {session_id}",
                    **self._model_step(params),  # type: ignore[arg-type]
                )
                self._read += 1
                self._details()

        tasks = [asyncio.ensure_future(read(s)) for s in started.session_ids]
        try:
            await asyncio.gather(*tasks)
        except ActivityError as error:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise _failed(error) from error
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        try:
            topics = await workflow.execute_activity(
                DreamActivity.PLAN,
                params.dream_id,
                start_to_close_timeout=RECORD_TIMEOUT,
                retry_policy=RECORD_RETRY,
                result_type=list[str],
                summary="plan topics",
            )
        except ActivityError as error:  # a cancel while it plans, as at every other step
            raise _failed(error) from error
        self._topics = len(topics)
        self._phase = "consolidating"
        self._details()
        for topic in topics:
            try:
                done = await workflow.execute_activity(
                    DreamActivity.CONSOLIDATE,
                    ConsolidateInput(dream_id=params.dream_id, topic=topic),
                    result_type=ConsolidateResult,
                    summary=f"consolidate {topic}",
                    **self._model_step(params),  # type: ignore[arg-type]
                )
            except ActivityError as error:
                raise _failed(error) from error
            self._consolidated += 1
            self._written += done.written
            self._details()
