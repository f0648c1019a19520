"""The outcome loop: grade -> revise, wrapping a session's turn (`user.define_outcome`).

A state machine of its own, hosted by the session and driving the shared agent loop through a
narrow interface (`agent_pass`: go on with the turn from these inputs; `take_inputs`: messages
that arrived meanwhile). It decides; activities do. It holds the outcome's ids and counters
(`ActiveOutcome`) and the results of verdicts, never a rubric, a deliverable or an explanation.

    pending --(a turn takes the define_outcome event up)--> working
    working --(the agent's pass ends its turn)--> evaluating
      [span.outcome_evaluation_start; grade_outcome heartbeats, records ..._ongoing and ..._end]
    evaluating --satisfied | failed--> (done: the session idles)
    evaluating --needs_revision--> working, iteration + 1
      (the evaluation's end event is the agent's next input: the grader's feedback)
    evaluating --max_iterations_reached--> final_pass (its end event is the input: one more
      pass, not graded) --(the pass ends)--> (done)
    evaluating --user.interrupt--> interrupted (the grader is cancelled; its evaluation is
      settled: a verdict it committed after all stands, else `interrupted` is recorded)
    evaluating --the grader gives no valid verdict--> failed, with session.error (exhausted)
    working --user.interrupt--> interrupted; --retries_exhausted | refusal | terminated-->
      failed (the agent's turn ended before its work could be graded)
    working --requires_action--> working (the pass goes on once the answers arrive)

Every step is recorded by an activity, with ids made here, so a worker lost at any point
changes nothing a user sees but the delay: a retried grading reuses what it recorded, and a
verdict is recorded once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError
from temporalio.workflow import ActivityCancellationType, ActivityHandle

with workflow.unsafe.imports_passed_through():
    from reverie.models.common import new_id
    from reverie.models.workflow_io import (
        ActiveOutcome,
        Activity,
        CarriedState,
        GradeOutcomeInput,
        GradeOutcomeResult,
        InputRef,
        NewEvent,
        RecordOutcomeInput,
        SessionOptions,
        SessionWorkflowInput,
        SettledEvaluation,
        SettleEvaluationInput,
    )
    from reverie.workflows.agent_loop import TurnEnd, TurnOutcome
    from reverie.workflows.patches import OUTCOMES, patched
    from reverie.workflows.recording import failure_message, record

AgentPass = Callable[[list[str]], Awaitable[TurnOutcome]]
TakeInputs = Callable[[], list[str]]
DEFINE = "user.define_outcome"
# Model calls one grading may make: each sample's verdict attempts and inspection steps.
GRADER_CALLS = 20


def grader_retry(options: SessionOptions) -> RetryPolicy:
    """Model errors while grading are retried by Temporal (the activity sets the delay from
    `retry-after` and fails for good once the session's model budget is spent); attempts lost
    with a worker are retried promptly. Bounded by both budgets together."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=30),
        maximum_attempts=options.model_max_attempts + options.worker_loss_retries,
    )


def grader_timeouts(options: SessionOptions) -> dict[str, timedelta]:
    """A grading makes several model calls (samples in parallel, re-asks, inspection) and
    heartbeats throughout, so a dead worker is noticed within the heartbeat timeout."""
    return {
        "start_to_close_timeout": timedelta(
            seconds=options.model_timeout_seconds * GRADER_CALLS + 60
        ),
        "heartbeat_timeout": timedelta(seconds=options.heartbeat_timeout_seconds),
    }


class OutcomeLoop:
    """Hosted by the session: `validate` and `define` in its send_events update, `interrupt`
    with its interrupt, `run` around each turn, `stop` when an interrupt abandons a parked
    turn, `describe` for its Web UI panel."""

    def __init__(
        self,
        params: SessionWorkflowInput,
        state: CarriedState,
        agent_pass: AgentPass,
        take_inputs: TakeInputs,
        on_change: Callable[[], None] | None = None,
        answers_end_turns: Callable[[bool], None] | None = None,
    ) -> None:
        self._params = params
        self._state = state
        self._agent_pass = agent_pass
        self._take_inputs = take_inputs
        # The host's live panel (the Web UI's details), refreshed as the outcome moves on.
        self._on_change = on_change or (lambda: None)
        # Whether the agent loop may end a turn with its answer (patch `idle-with-answer`): not
        # while an outcome is to be graded after the pass (its final pass may).
        self._answers_end_turns = answers_end_turns or (lambda _: None)
        self._interrupted = False
        self._grading: ActivityHandle[Any] | None = None
        # A session created with the outcome in `initial_events` starts with it queued.
        for ref in state.queued:
            if ref.type == DEFINE and state.outcome is None:
                self.define(ref)
        self._graded_passes(state.outcome is not None and state.outcome.phase != "final_pass")

    # ---- inputs ------------------------------------------------------------------------------

    def validate(self, refs: list[InputRef]) -> None:
        """Refuse (before anything is written) an outcome while another is active."""
        defined = [ref for ref in refs if ref.type == DEFINE]
        if not defined:
            return
        if len(defined) > 1:
            raise ValueError(
                f"only one outcome may be active at a time; this request defines {len(defined)}"
            )
        active = self._state.outcome
        if active is not None:
            where = {
                "pending": "about to start",
                "working": "being worked on",
                "evaluating": "being graded",
                "final_pass": "in its final pass",
            }[active.phase]
            raise ValueError(
                f"outcome {active.outcome_id} is still active ({where}); another outcome may be "
                "defined once it has a terminal result (satisfied, max_iterations_reached, "
                "failed or interrupted), or after a user.interrupt stops it"
            )
        if not defined[0].outcome_id or not defined[0].max_iterations:
            raise ValueError("user.define_outcome arrived without its outcome_id")

    def define(self, ref: InputRef) -> None:
        """Called as the update starts, before its first await: a concurrent update is then
        validated against this outcome."""
        self._state.outcome = ActiveOutcome(
            outcome_id=ref.outcome_id or "",
            event_id=ref.id,
            max_iterations=ref.max_iterations or 3,
        )
        self._graded_passes(True)

    def undefine(self, ref: InputRef) -> None:
        """The update recording the event failed: there is no outcome after all."""
        if self._state.outcome is not None and self._state.outcome.event_id == ref.id:
            self._state.outcome = None
            self._graded_passes(False)

    def interrupt(self) -> None:
        self._interrupted = True
        if self._grading is not None and not self._grading.done():
            self._grading.cancel()

    # ---- around a turn -----------------------------------------------------------------------

    async def run(self, step: Callable[[], Awaitable[TurnOutcome]]) -> TurnOutcome:
        """One turn of the session; with an outcome active, also its grading and revisions."""
        self._interrupted = False
        outcome = self._state.outcome
        if (
            outcome is not None
            and outcome.phase == "pending"
            and self._about_to_start(outcome)
            and patched(OUTCOMES)
        ):
            outcome.phase = "working"
            await self._record(outcome, "running")
        turn = await step()
        # An outcome may also have been defined while the turn ran, and taken up by it.
        if self._state.outcome is None or not patched(OUTCOMES):
            return turn
        return await self._after(turn)

    async def stop(self, result: str = "interrupted") -> None:
        """An interrupt abandoned a parked turn (tool uses awaiting answers): the outcome stops."""
        outcome = self._state.outcome
        if outcome is not None and outcome.phase != "pending":
            await self._end(outcome, result, "Stopped by a user.interrupt.")

    def _about_to_start(self, outcome: ActiveOutcome) -> bool:
        """Whether the turn will take the define_outcome event up (it is still waiting)."""
        waiting = {ref.id for ref in self._state.queued} | set(self._state.held_input_ids)
        return outcome.event_id in waiting

    def _started(self, outcome: ActiveOutcome) -> bool:
        """Whether the agent has been given the outcome (its event left the queue)."""
        waiting = {ref.id for ref in self._state.queued} | set(self._state.held_input_ids)
        return outcome.event_id not in waiting

    async def _after(self, turn: TurnOutcome) -> TurnOutcome:
        while True:
            outcome = self._state.outcome
            if outcome is None:
                return turn
            if outcome.phase == "pending":
                if not self._started(outcome):
                    # Defined while this turn ran, too late for it: the next turn starts it.
                    if turn.end == TurnEnd.INTERRUPTED:
                        await self._end(outcome, "interrupted", "Stopped by a user.interrupt.")
                    return turn
                # Defined while this turn ran, and taken up by it.
                outcome.phase = "working"
                await self._record(outcome, "running")
            if turn.end == TurnEnd.REQUIRES_ACTION:
                return turn
            if turn.end == TurnEnd.INTERRUPTED:
                if outcome.phase == "final_pass":
                    self._done(outcome, "max_iterations_reached")
                else:
                    await self._end(outcome, "interrupted", "Stopped by a user.interrupt.")
                return turn
            if turn.end != TurnEnd.END_TURN:
                if outcome.phase == "final_pass":
                    self._done(outcome, "max_iterations_reached")
                else:
                    await self._end(
                        outcome,
                        "failed",
                        f"The agent's turn ended ({turn.end.value}) before its work could be "
                        "graded; define the outcome again to retry.",
                    )
                return turn
            if outcome.phase == "final_pass":
                self._done(outcome, "max_iterations_reached")
                return turn
            graded = await self._evaluate(outcome)
            if isinstance(graded, TurnOutcome):
                return graded
            result, feedback_id = graded
            outcome.last_result = result
            self._on_change()
            if result == "interrupted":  # settled so before the grader's verdict
                self._done(outcome, result)
                return TurnOutcome(TurnEnd.INTERRUPTED)
            if result in ("satisfied", "failed"):
                self._done(outcome, result)
                return TurnOutcome(TurnEnd.INTERRUPTED) if self._interrupted else turn
            if self._interrupted:
                # The verdict landed together with the interrupt: no further pass.
                if result == "max_iterations_reached":
                    self._done(outcome, result)
                else:
                    await self._end(outcome, "interrupted", "Stopped by a user.interrupt.")
                return TurnOutcome(TurnEnd.INTERRUPTED)
            if result == "needs_revision":
                outcome.iteration += 1
                outcome.phase = "working"
            else:  # max_iterations_reached: one final pass, not graded
                outcome.phase = "final_pass"
                self._graded_passes(False)
            # The evaluation's end event is the agent's next input: the grader's feedback
            # (then any message that arrived while it graded).
            turn = await self._agent_pass([feedback_id, *self._take_inputs()])

    # ---- evaluation --------------------------------------------------------------------------

    async def _evaluate(self, outcome: ActiveOutcome) -> tuple[str, str] | TurnOutcome:
        """(the verdict's result, its end event id), or how the turn ends without one."""
        start_id = new_id("sevt", workflow.uuid4())
        end_id = new_id("sevt", workflow.uuid4())
        outcome.phase = "evaluating"
        start = NewEvent(
            id=start_id,
            type="span.outcome_evaluation_start",
            processed_at=workflow.now(),
            payload={"outcome_id": outcome.outcome_id, "iteration": outcome.iteration},
        )
        await self._record(outcome, "evaluating", events=[start])
        if self._interrupted:
            return await self._settle(outcome, start_id, end_id, "interrupted")
        options = self._params.options
        handle = workflow.start_activity(
            Activity.GRADE_OUTCOME,
            GradeOutcomeInput(
                session_id=self._params.session_id,
                agent_id=self._params.agent_id,
                agent_version=self._params.agent_version,
                outcome_id=outcome.outcome_id,
                iteration=outcome.iteration,
                evaluation_id=start_id,
                end_event_id=end_id,
                last_iteration=outcome.iteration + 1 >= outcome.max_iterations,
                max_attempts=options.model_max_attempts,
            ),
            retry_policy=grader_retry(options),
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            result_type=GradeOutcomeResult,
            summary=f"grade outcome {outcome.outcome_id} (iteration {outcome.iteration})",
            **grader_timeouts(options),
        )
        self._grading = handle
        try:
            graded: GradeOutcomeResult = await handle
        except ActivityError as failure:
            if self._interrupted or isinstance(failure.cause, CancelledError):
                return await self._settle(outcome, start_id, end_id, "interrupted")
            return await self._settle(outcome, start_id, end_id, "failed", failure)
        finally:
            self._grading = None
        return graded.result, end_id

    async def _settle(
        self,
        outcome: ActiveOutcome,
        start_id: str,
        end_id: str,
        result: str,
        failure: ActivityError | None = None,
    ) -> tuple[str, str] | TurnOutcome:
        """Stop waiting for an evaluation: a verdict the grader committed after all stands;
        otherwise `result` is recorded and the outcome ends with it."""
        settled: SettledEvaluation = await record(
            Activity.SETTLE_OUTCOME_EVALUATION,
            SettleEvaluationInput(
                session_id=self._params.session_id,
                outcome_id=outcome.outcome_id,
                iteration=outcome.iteration,
                evaluation_id=start_id,
                end_event_id=end_id,
                result=result,  # type: ignore[arg-type]
                reason=failure_message(failure) if failure is not None else None,
            ),
            summary=f"settle outcome evaluation ({result})",
            result_type=SettledEvaluation,
        )
        if not settled.settled:
            return settled.result, end_id
        self._done(outcome, result)
        if result == "interrupted":
            return TurnOutcome(TurnEnd.INTERRUPTED)
        return TurnOutcome(TurnEnd.RETRIES_EXHAUSTED, error=grader_error(failure))

    # ---- recording ---------------------------------------------------------------------------

    async def _record(
        self,
        outcome: ActiveOutcome,
        result: str,
        *,
        explanation: str | None = None,
        events: list[NewEvent] | None = None,
    ) -> None:
        self._on_change()
        await record(
            Activity.RECORD_OUTCOME,
            RecordOutcomeInput(
                session_id=self._params.session_id,
                outcome_id=outcome.outcome_id,
                result=result,  # type: ignore[arg-type]
                iteration=outcome.iteration,
                explanation=explanation,
                events=events or [],
            ),
            summary=f"outcome {result}",
        )

    async def _end(self, outcome: ActiveOutcome, result: str, explanation: str) -> None:
        """End the outcome outside an evaluation (no span was open)."""
        await self._record(outcome, result, explanation=explanation)
        self._done(outcome, result)

    def _graded_passes(self, graded: bool) -> None:
        """Passes to be graded may not end their turn with the model's answer."""
        self._answers_end_turns(not graded)

    def _done(self, outcome: ActiveOutcome, result: str) -> None:
        self._state.outcome = None
        self._graded_passes(False)
        self._state.last_outcome = f"{outcome.outcome_id}: {result}"
        self._on_change()

    # ---- the Web UI --------------------------------------------------------------------------

    def describe(self) -> str | None:
        outcome = self._state.outcome
        if outcome is not None:
            return (
                f"**outcome:** {outcome.outcome_id} · {outcome.phase} · iteration "
                f"{outcome.iteration + 1}/{outcome.max_iterations} · last verdict: "
                f"{outcome.last_result or '-'}"
            )
        if self._state.last_outcome:
            return f"**last outcome:** {self._state.last_outcome}"
        return None


def grader_error(failure: ActivityError | None) -> dict[str, Any]:
    """The `session.error` of an evaluation that got no verdict (the session idles with
    `retries_exhausted`; the outcome ends `failed`)."""
    cause = failure.cause if failure is not None else None
    details: dict[str, Any] = {}
    if isinstance(cause, ApplicationError) and cause.details and isinstance(cause.details[0], dict):
        details = cause.details[0]
    kind = details.get("error_type") or "unknown_error"
    if kind not in (
        "model_rate_limited_error",
        "model_overloaded_error",
        "model_request_failed_error",
    ):
        kind = "unknown_error"
    message = failure_message(failure) if failure is not None else "the grader failed"
    return {
        "type": kind,
        "message": f"outcome evaluation failed: {message}",
        "retry_status": {"type": "exhausted"},
    }
