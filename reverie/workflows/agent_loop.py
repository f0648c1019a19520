"""The model -> tools loop of one thread, shared by a session's primary thread and (later) its
subagent threads. It decides; activities do. It sees ids and stop reasons, never content."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError
from temporalio.workflow import ActivityCancellationType, ActivityHandle

with workflow.unsafe.imports_passed_through():
    from reverie.activities.model import ModelActivities
    from reverie.models.common import new_id
    from reverie.models.workflow_io import ModelStepInput, ModelStepResult, SessionWorkflowInput
    from reverie.workflows.activity_options import model_retry, model_timeouts

Emit = Callable[..., Awaitable[str]]


class TurnEnd(StrEnum):
    END_TURN = "end_turn"
    INTERRUPTED = "interrupted"
    RETRIES_EXHAUSTED = "retries_exhausted"
    TERMINATED = "terminated"


@dataclass
class TurnOutcome:
    end: TurnEnd
    error: dict[str, Any] | None = None


class AgentLoop:
    def __init__(
        self, params: SessionWorkflowInput, emit: Emit, take_inputs: Callable[[], list[str]]
    ) -> None:
        self._params = params
        self._emit = emit
        self._take_inputs = take_inputs
        self._interrupted = False
        self._step: ActivityHandle[ModelStepResult] | None = None
        self.model_requests = params.carried.model_requests if params.carried else 0

    def interrupt(self) -> None:
        self._interrupted = True
        if self._step is not None and not self._step.done():
            self._step.cancel()

    async def run_turn(self) -> TurnOutcome:
        """Model steps until the model ends its turn and no input arrived meanwhile."""
        self._interrupted = False
        inputs = self._take_inputs()
        while not self._interrupted:
            try:
                await self._model_step(inputs)
            except ActivityError as error:
                if self._interrupted or isinstance(error.cause, CancelledError):
                    return TurnOutcome(TurnEnd.INTERRUPTED)
                body, terminal = model_error(error)
                return TurnOutcome(
                    TurnEnd.TERMINATED if terminal else TurnEnd.RETRIES_EXHAUSTED, body
                )
            self.model_requests += 1
            # Messages sent while the model worked are taken up within this turn.
            inputs = self._take_inputs()
            if not inputs or self._interrupted:
                return TurnOutcome(TurnEnd.INTERRUPTED if self._interrupted else TurnEnd.END_TURN)
        return TurnOutcome(TurnEnd.INTERRUPTED)

    async def _model_step(self, inputs: list[str]) -> ModelStepResult:
        options = self._params.options
        self._step = workflow.start_activity_method(
            ModelActivities.model_step,
            ModelStepInput(
                session_id=self._params.session_id,
                agent_id=self._params.agent_id,
                agent_version=self._params.agent_version,
                step_id=new_id("step", workflow.uuid4()),
                input_event_ids=inputs,
                max_attempts=options.model_max_attempts,
            ),
            retry_policy=model_retry(options),
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            summary="model step",
            **model_timeouts(options),
        )
        try:
            return await self._step
        finally:
            self._step = None


def model_error(error: ActivityError) -> tuple[dict[str, Any], bool]:
    """(the `session.error` body, whether it is terminal) from a model step that failed for good."""
    cause = error.cause
    if isinstance(cause, ApplicationError):
        details = cause.details[0] if cause.details else {}
        if not isinstance(details, dict):
            details = {}
        return {
            "type": details.get("error_type") or cause.type or "unknown_error",
            "message": details.get("message") or cause.message,
            "retry_status": {"type": "terminal" if cause.non_retryable else "exhausted"},
        }, cause.non_retryable
    return {
        "type": "unknown_error",
        "message": str(cause or error),
        "retry_status": {"type": "exhausted"},
    }, False
