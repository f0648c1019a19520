"""The model -> tools loop of one thread, shared by a session's primary thread and its subagent
threads (issue 18). It decides; activities do. It sees ids and stop reasons, never content.

A turn: model step -> (tool uses: run the allowed ones in parallel; park on the ones that wait
for the client) -> model step with the results -> ... until the model ends its turn and no new
input arrived meanwhile.

A model step is retried here when the model answers with an error worth retrying: the loop
counts those answers against `model_max_attempts`, records `session.error` (retrying) with the
`rescheduling` status and sleeps the backoff the activity proposed. Attempts lost with a worker
are Temporal's to retry (its own, separate bound). Before giving a step up (exhausted, terminal
or interrupted), the loop settles it: a step that committed after all goes on with its answer,
and one that did not has its span closed.

What follows an answer depends on its stop reason, by one table (`stop_reasons.py`). A long
session compacts its transcript (an activity, keyed by a workflow-made id) before the step
after an answer that neared the context window, after a `model_context_window_exceeded` stop,
and when the model refuses a step as too long (then the step is tried again, compacted).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any, Protocol

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError
from temporalio.exceptions import TimeoutError as TemporalTimeoutError
from temporalio.workflow import ActivityCancellationType, ActivityHandle

with workflow.unsafe.imports_passed_through():
    from reverie.models.common import new_id
    from reverie.models.sessions import SessionStatus
    from reverie.models.threads import ThreadRef
    from reverie.models.workflow_io import (
        RECORD_REFUSED,
        SESSION_ERROR_TYPES,
        Activity,
        AdoptInputsInput,
        CompactInput,
        CompactionReason,
        CompactionResult,
        IdleSpec,
        ModelErrorDetails,
        ModelStepInput,
        ModelStepResult,
        PendingToolUse,
        RunToolInput,
        SessionOptions,
        SettledStep,
        SettleStepInput,
        ThreadState,
        ToolErrorInput,
        ToolUseRef,
        UnrunToolUsesInput,
    )
    from reverie.workflows.activity_options import (
        TOOL_RETRY,
        compaction_timeouts,
        model_retry,
        model_timeouts,
        tool_timeouts,
        worker_loss_retry,
    )
    from reverie.workflows.patches import (
        ADOPT_INTERRUPTED_INPUTS,
        COMPACTION,
        IDLE_WITH_ANSWER,
        MODEL_RETRIES_IN_WORKFLOW,
        SETTLE_FAILED_MODEL_STEP,
        STOP_REASON_RULES,
        patched,
    )
    from reverie.workflows.recording import record
    from reverie.workflows.stop_reasons import UNKNOWN_STOP_REASON_RULE, AnswerRule, rule_for

TakeInputs = Callable[[], list[str]]
# The host's continue-as-new (it owns its workflow's input): called with the thread's state set
# to resume the turn, it does not return.
ContinueAsNew = Callable[[], None]
# Runs a coordinator's delegation tool use (the host owns its threads): the result event's id.
Delegate = Callable[[ToolUseRef], Awaitable[str]]
# Compactions in a row without an answer of the model before the turn gives up, as the hosted
# API does (`compaction_limit_reached_error`, then idle with `retries_exhausted`).
MAX_COMPACTIONS_IN_ROW = 3


class SetStatus(Protocol):
    """The session's one way to change status: its own state, the search attribute, the row
    and the status event (with any events that lead it), together."""

    def __call__(
        self,
        status: SessionStatus,
        event_type: str,
        payload: dict[str, Any] | None = None,
        *,
        leading: list[tuple[str, dict[str, Any]]] | None = None,
    ) -> Awaitable[None]: ...


class TurnEnd(StrEnum):
    END_TURN = "end_turn"
    REQUIRES_ACTION = "requires_action"
    INTERRUPTED = "interrupted"
    RETRIES_EXHAUSTED = "retries_exhausted"
    TERMINATED = "terminated"
    REFUSAL = "refusal"


@dataclass
class TurnOutcome:
    end: TurnEnd
    error: dict[str, Any] | None = None
    event_ids: list[str] = field(default_factory=list)
    stop_details: dict[str, Any] | None = None
    # (patch `idle-with-answer`) The model step recorded the idle status with its answer.
    idle_recorded: bool = False


class AgentLoop:
    """One thread's loop: `ref` names the thread (its log, agent version and environment), the
    state is the thread's own, and the host workflow (a session for its primary thread, a
    `ThreadWorkflow` for a subagent's) owns statuses, inputs and continue-as-new."""

    def __init__(
        self,
        ref: ThreadRef,
        options: SessionOptions,
        state: ThreadState,
        take_inputs: TakeInputs,
        set_status: SetStatus,
        continue_as_new: ContinueAsNew,
        *,
        ends_turns_with_answers: bool = False,
        delegate: Delegate | None = None,
    ) -> None:
        self._ref = ref
        self._options = options
        self._continue_as_new = continue_as_new
        self._delegate = delegate
        self._state = state
        self._take_inputs = take_inputs
        self._set_status = set_status
        self._interrupted = False
        self._running: list[ActivityHandle[Any]] = []
        # (patch `idle-with-answer`) A session's primary thread: a model step that ends the turn
        # records the session's idle status with its answer.
        self.ends_turns_with_answers = ends_turns_with_answers

    # ---- entry points ------------------------------------------------------------------------

    def begin_turn(self) -> None:
        """Called before the turn's status is recorded: an interrupt that arrives meanwhile
        then stops the turn instead of being forgotten."""
        self._interrupted = False

    async def start_turn(self) -> TurnOutcome:
        if self._interrupted:
            return self._stop_interrupted()
        return await self._steps(self._take_inputs())

    async def resume_turn(self) -> TurnOutcome:
        """Every awaited tool use has its answer: act on the answers, then go on."""
        await asyncio.gather(*(self._answer(pending) for pending in self._state.awaiting))
        self._state.awaiting = []
        if self._interrupted:
            return self._stop_interrupted()
        return await self._steps(self._results_then_inputs())

    def interrupt(self) -> None:
        self._interrupted = True
        for handle in self._running:
            if not handle.done():
                handle.cancel()

    def awaiting_all_answered(self) -> bool:
        return bool(self._state.awaiting) and all(p.answer_event_id for p in self._state.awaiting)

    async def abandon_awaiting(self) -> None:
        """An interrupt while tool uses wait: each gets an error result, nothing runs."""
        await asyncio.gather(
            *(
                self._record_error(p.event_id, "interrupted")
                for p in self._state.awaiting
                if self._state.tool_results.get(p.event_id) is None
            )
        )
        self._state.awaiting = []
        self._stop_interrupted()

    async def adopt_held(self) -> None:
        """After an interrupted turn: write the inputs it leaves behind into the transcript, so
        the session carries no ids for them (the next model step sees them all the same)."""
        held = self._state.held_input_ids
        if not held or not patched(ADOPT_INTERRUPTED_INPUTS):
            return
        await record(
            Activity.ADOPT_INPUTS,
            AdoptInputsInput(session_id=self._ref.log_id, event_ids=list(held)),
            summary="keep interrupted inputs",
        )
        self._state.held_input_ids = []

    # ---- the loop ----------------------------------------------------------------------------

    async def continue_turn(self, inputs: list[str]) -> TurnOutcome:
        """The rest of a turn that continued as new between two model steps."""
        continue_answer = self._state.resume_continues_answer
        self._state.resume_continues_answer = False
        return await self._steps(inputs, continue_answer)

    async def _steps(self, inputs: list[str], continue_answer: bool = False) -> TurnOutcome:
        while not self._interrupted:
            await self._continue_as_new_if_suggested(inputs, continue_answer)
            if self._interrupted:
                break
            if self._state.compact_next is not None:
                stop = await self._compact(self._state.compact_next)
                if stop is not None and stop.end != TurnEnd.INTERRUPTED:
                    return stop
                if self._interrupted:
                    break
            step = await self._model_step(inputs, continue_answer)
            if isinstance(step, TurnOutcome):
                return step
            result = step
            self._state.model_requests += 1
            self._state.compactions_in_row = 0
            if result.idle_recorded:
                # The turn ended with the answer (`IdleSpec`): recorded already, whatever came
                # since (an input or an interrupt that arrived after it starts or stops nothing
                # of this turn).
                if result.compaction_due:
                    self._state.compact_next = "threshold"
                return TurnOutcome(TurnEnd.END_TURN, idle_recorded=True)
            if self._interrupted:
                # The answer landed together with the interrupt: none of its tools run.
                await self._refuse_tools(result.tool_uses)
                return self._stop_interrupted()
            if patched(STOP_REASON_RULES):
                if result.compaction_due and patched(COMPACTION):
                    self._state.compact_next = "threshold"
                after = await self._follow_rule(result)
                if isinstance(after, TurnOutcome):
                    return after
                inputs, continue_answer = after
                continue
            if result.tool_uses:
                outcome = await self._use_tools(result.tool_uses)
                if outcome is not None:
                    return outcome
                inputs = self._results_then_inputs()
                continue
            # Messages sent while the model worked are taken up within this turn.
            inputs = self._take_inputs()
            if not inputs:
                return TurnOutcome(TurnEnd.END_TURN)
        return self._stop_interrupted(inputs)

    async def _follow_rule(self, result: ModelStepResult) -> TurnOutcome | tuple[list[str], bool]:
        """What the answer's stop reason says to do (`stop_reasons.STOP_REASON_RULES`): how the
        turn ends, or the next step's inputs and whether it continues the answer as it is."""
        rule = rule_for(result.stop_reason)
        if rule is None:
            workflow.logger.warning(
                "session %s: the model's answer has stop_reason %r, unknown to this Reverie; "
                "the turn ends and none of the answer's %d tool use(s) run",
                self._ref.log_id,
                result.stop_reason,
                len(result.tool_uses),
            )
            rule = UNKNOWN_STOP_REASON_RULE
        uses = result.tool_uses
        if rule == AnswerRule.REFUSED:
            await self._unrun(uses, result.stop_reason, "not_run", adopt=True)
            return TurnOutcome(TurnEnd.REFUSAL, stop_details=result.stop_details)
        if rule == AnswerRule.RESUME:
            if not uses:
                return [], True
            self._state.tool_results = {}
            await self._unrun(uses, result.stop_reason, "not_run")
            return self._results(), False
        if rule == AnswerRule.FINAL and uses:
            await self._unrun(uses, result.stop_reason, "not_run", adopt=True)
            uses = []
        if rule == AnswerRule.COMPACT:
            self._state.compact_next = "context_window_exceeded"
        if uses:
            cut_off = (
                [use for use in uses if use.ends_answer]
                if rule in (AnswerRule.CUT_OFF, AnswerRule.COMPACT)
                else []
            )
            outcome = await self._use_tools(uses, cut_off, result.stop_reason)
            if outcome is not None:
                return outcome
            return self._results_then_inputs(), False
        # Messages sent while the model worked are taken up within this turn; a full context
        # window goes on (compacted) even without them.
        inputs = self._take_inputs()
        if inputs or rule == AnswerRule.COMPACT:
            return inputs, False
        return TurnOutcome(TurnEnd.END_TURN)

    async def _unrun(
        self, uses: list[ToolUseRef], stop_reason: str, reason: str, *, adopt: bool = False
    ) -> None:
        """Record an error result for tool uses that may not run. Adopted results are written
        into the transcript now (the turn ends); others reach the next step as its inputs."""
        if not uses:
            return
        results = {use.event_id: new_id("sevt", workflow.uuid4()) for use in uses}
        await record(
            Activity.RECORD_UNRUN_TOOL_USES,
            UnrunToolUsesInput(
                session_id=self._ref.log_id,
                stop_reason=stop_reason,
                results=results,
                reason=reason,  # type: ignore[arg-type]
                adopt=adopt,
            ),
            summary=f"tool uses not run ({stop_reason})",
        )
        if not adopt:
            self._state.tool_results.update(results)

    async def _compact(
        self, reason: CompactionReason, window: int | None = None
    ) -> TurnOutcome | None:
        """Compact the transcript before the next model step. None: done (or, at the threshold,
        nothing to compact); else how the turn ends (INTERRUPTED: the caller holds inputs)."""
        self._state.compact_next = None
        if self._state.compactions_in_row >= MAX_COMPACTIONS_IN_ROW:
            return TurnOutcome(
                TurnEnd.RETRIES_EXHAUSTED,
                compaction_error(
                    f"the context was compacted {self._state.compactions_in_row} times in a row "
                    "and the model still found the prompt too long"
                ),
            )
        self._state.compactions_in_row += 1
        options = self._options
        handle = workflow.start_activity(
            Activity.COMPACT_TRANSCRIPT,
            CompactInput(
                session_id=self._ref.log_id,
                agent_id=self._ref.agent_id,
                agent_version=self._ref.agent_version,
                compaction_id=new_id("cmpct", workflow.uuid4()),
                reason=reason,
                context_window_tokens=window,
            ),
            retry_policy=model_retry(options),
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            result_type=CompactionResult,
            summary=f"compact transcript ({reason})",
            **compaction_timeouts(options),
        )
        try:
            result: CompactionResult = await self._tracked(handle)
        except ActivityError as failure:
            if self._interrupted or isinstance(failure.cause, CancelledError):
                return TurnOutcome(TurnEnd.INTERRUPTED)
            body, terminal = model_error(failure)
            return TurnOutcome(TurnEnd.TERMINATED if terminal else TurnEnd.RETRIES_EXHAUSTED, body)
        if not result.compacted and reason != "threshold":
            return TurnOutcome(
                TurnEnd.RETRIES_EXHAUSTED,
                compaction_error(
                    f"the prompt is too long for the model and cannot be compacted: {result.detail}"
                ),
            )
        return None

    async def _continue_as_new_if_suggested(
        self, inputs: list[str], continue_answer: bool = False
    ) -> None:
        """A long turn must not outgrow its history: between two model steps, when Temporal
        suggests it, carry the next step's inputs into a new run, which goes on from there."""
        if not workflow.info().is_continue_as_new_suggested():
            return
        await workflow.wait_condition(workflow.all_handlers_finished)
        if self._interrupted:
            return
        self._state.resume_inputs = list(inputs)
        self._state.resume_continues_answer = continue_answer
        self._continue_as_new()

    async def _refuse_tools(self, uses: list[ToolUseRef]) -> None:
        self._state.tool_results = {use.event_id: None for use in uses}
        await asyncio.gather(*(self._record_error(use.event_id, "interrupted") for use in uses))

    async def _use_tools(
        self, uses: list[ToolUseRef], cut_off: list[ToolUseRef] | None = None, stop_reason: str = ""
    ) -> TurnOutcome | None:
        """Run what may run now; park on what waits for the client (None: carry on). A tool
        use in `cut_off` may be incomplete: it gets an error result and never runs."""
        self._state.tool_results = {use.event_id: None for use in uses}
        if cut_off:
            await self._unrun(cut_off, stop_reason, "cut_off")
            refused = {use.event_id for use in cut_off}
            uses = [use for use in uses if use.event_id not in refused]
        self._state.awaiting = [
            PendingToolUse(event_id=use.event_id, kind=use.kind)
            for use in uses
            if use.kind == "custom" or use.evaluated_permission == "ask"
        ]
        waiting = {pending.event_id for pending in self._state.awaiting}
        await asyncio.gather(*(self._run(use) for use in uses if use.event_id not in waiting))
        if self._interrupted:
            if self._state.awaiting:
                await self.abandon_awaiting()
            return self._stop_interrupted()
        if self._state.awaiting:
            return TurnOutcome(
                TurnEnd.REQUIRES_ACTION,
                event_ids=sorted(waiting, key=list(self._state.tool_results).index),
            )
        return None

    def _results_then_inputs(self) -> list[str]:
        return self._results() + self._take_inputs()

    def _results(self) -> list[str]:
        results = [r for r in self._state.tool_results.values() if r is not None]
        self._state.tool_results = {}
        return results

    def _stop_interrupted(self, unsent: list[str] | None = None) -> TurnOutcome:
        """Results already recorded, and inputs no model step has seen, wait for the next turn,
        so nothing is lost and the transcript stays valid."""
        recorded = [r for r in self._state.tool_results.values() if r is not None]
        self._state.held_input_ids = recorded + (unsent or []) + self._state.held_input_ids
        self._state.tool_results = {}
        return TurnOutcome(TurnEnd.INTERRUPTED)

    # ---- model steps -------------------------------------------------------------------------

    async def _model_step(
        self, inputs: list[str], continue_answer: bool = False
    ) -> ModelStepResult | TurnOutcome:
        """The step's answer, or how the turn ends when there is none."""
        step_id = new_id("step", workflow.uuid4())
        retries_here = patched(MODEL_RETRIES_IN_WORKFLOW)
        max_attempts = self._options.model_max_attempts
        attempt = 1
        while True:
            try:
                return await self._attempt(step_id, inputs, attempt, retries_here, continue_answer)
            except ActivityError as error:
                failure = error
            too_long = prompt_too_long_error(failure) if retries_here else None
            if too_long is not None and not self._interrupted and patched(COMPACTION):
                # The transcript outgrew the model's window: compact it, then try the same
                # step again (its inputs are in the transcript already; nothing is repeated).
                stop = await self._compact("prompt_too_long", too_long.context_window_tokens)
                if stop is None and not self._interrupted:
                    continue
                return await self._give_up(step_id, inputs, failure, retries_here, instead=stop)
            details = retryable_model_error(failure) if retries_here else None
            if self._interrupted or details is None or attempt >= max_attempts:
                return await self._give_up(step_id, inputs, failure, retries_here)
            await self._set_status(
                "rescheduling",
                "session.status_rescheduled",
                leading=[("session.error", {"error": error_body(details, "retrying")})],
            )
            delay = details.retry_delay_seconds or 0.0
            if delay > 0:
                # The backoff, cut short by an interrupt.
                with contextlib.suppress(TimeoutError):
                    await workflow.wait_condition(
                        lambda: self._interrupted,
                        timeout=timedelta(seconds=delay),
                        timeout_summary="model retry backoff",
                    )
            if self._interrupted:
                return await self._give_up(step_id, inputs, failure, retries_here)
            await self._set_status("running", "session.status_running")
            if self._interrupted:  # arrived while the status was being recorded
                return await self._give_up(step_id, inputs, failure, retries_here)
            attempt += 1

    async def _attempt(
        self,
        step_id: str,
        inputs: list[str],
        attempt: int,
        retries_here: bool,
        continue_answer: bool = False,
    ) -> ModelStepResult:
        options = self._options
        idle = None
        waiting = self._state.queued or self._state.held_input_ids
        if self.ends_turns_with_answers and not waiting and patched(IDLE_WITH_ANSWER):
            # Should the answer end the turn, its step records the idle status with it (inputs
            # waiting already would go on with the turn: then the workflow decides, as before).
            # A caller whose turn may go on after a final answer (an outcome still to grade)
            # must clear `ends_turns_with_answers` for that turn.
            idle = IdleSpec(event_id=new_id("sevt", workflow.uuid4()), turns=self._state.turns + 1)
        handle = workflow.start_activity(
            Activity.MODEL_STEP,
            ModelStepInput(
                session_id=self._ref.log_id,
                agent_id=self._ref.agent_id,
                agent_version=self._ref.agent_version,
                step_id=step_id,
                input_event_ids=inputs,
                max_attempts=options.model_max_attempts,
                retries_in_workflow=retries_here,
                attempt=attempt,
                continue_answer=continue_answer,
                idle=idle,
                delegates=self._delegate is not None,
                parent_session_id=self._ref.session_id if self._ref.thread_id else None,
            ),
            retry_policy=worker_loss_retry(options) if retries_here else model_retry(options),
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            result_type=ModelStepResult,
            summary="model step",
            **model_timeouts(options),
        )
        return await self._tracked(handle)

    async def _give_up(
        self,
        step_id: str,
        inputs: list[str],
        failure: ActivityError,
        retries_here: bool,
        *,
        instead: TurnOutcome | None = None,
    ) -> ModelStepResult | TurnOutcome:
        """No further attempt: settle the step first. If it committed (its worker died after
        the commit, before Temporal heard), its answer is the step's; an interrupted turn then
        keeps it as an answer that landed with the interrupt. `instead`: how the turn ends when
        not by the failure itself (a compaction that failed or was interrupted)."""
        if patched(SETTLE_FAILED_MODEL_STEP):
            settled: SettledStep = await record(
                Activity.SETTLE_MODEL_STEP,
                SettleStepInput(session_id=self._ref.log_id, step_id=step_id),
                summary="settle model step",
                result_type=SettledStep,
            )
            if settled.committed is not None:
                return settled.committed
        interrupted = instead is not None and instead.end == TurnEnd.INTERRUPTED
        if self._interrupted or interrupted or isinstance(failure.cause, CancelledError):
            # The step may not have recorded its inputs: hold them for the next turn
            # (recording them is idempotent, so holding never duplicates them).
            return self._stop_interrupted(inputs)
        if instead is not None:
            return instead
        body, terminal = model_error(failure, retries_here)
        return TurnOutcome(TurnEnd.TERMINATED if terminal else TurnEnd.RETRIES_EXHAUSTED, body)

    # ---- tools -------------------------------------------------------------------------------

    async def _answer(self, pending: PendingToolUse) -> None:
        if pending.kind == "custom":
            # The client's `user.custom_tool_result` event is itself the result.
            self._state.tool_results[pending.event_id] = pending.answer_event_id
        elif pending.result == "allow":
            await self._run_tool(pending.event_id)
        else:
            await self._record_error(pending.event_id, "denied", pending.answer_event_id)

    async def _run(self, use: ToolUseRef) -> None:
        """A built-in tool runs in an activity; a coordinator's delegation tool is its host's."""
        if use.kind != "delegate" or self._delegate is None:
            await self._run_tool(use.event_id)
        elif self._interrupted:
            await self._record_error(use.event_id, "interrupted")
        else:
            self._state.tool_results[use.event_id] = await self._delegate(use)

    @property
    def interrupted(self) -> bool:
        return self._interrupted

    async def _run_tool(self, tool_use_event_id: str) -> None:
        """At most once: a run lost with its worker is reported to the agent, never repeated."""
        if self._interrupted:
            await self._record_error(tool_use_event_id, "interrupted")
            return
        result_id = new_id("sevt", workflow.uuid4())
        handle = workflow.start_activity(
            Activity.RUN_TOOL,
            RunToolInput(
                session_id=self._ref.log_id,
                agent_id=self._ref.agent_id,
                agent_version=self._ref.agent_version,
                environment_id=self._ref.environment_id,
                tool_use_event_id=tool_use_event_id,
                result_event_id=result_id,
                workspace_session_id=self._ref.session_id if self._ref.thread_id else None,
            ),
            retry_policy=TOOL_RETRY,
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            result_type=bool,
            summary="tool",
            **tool_timeouts(self._options),
        )
        try:
            await self._tracked(handle)
        except ActivityError:
            await self._record_error(tool_use_event_id, "interrupted", result_id=result_id)
            return
        self._state.tool_results[tool_use_event_id] = result_id

    async def _record_error(
        self,
        tool_use_event_id: str,
        reason: str,
        confirmation_event_id: str | None = None,
        *,
        result_id: str | None = None,
    ) -> None:
        result_id = result_id or new_id("sevt", workflow.uuid4())
        await record(
            Activity.RECORD_TOOL_ERROR,
            ToolErrorInput(
                session_id=self._ref.log_id,
                tool_use_event_id=tool_use_event_id,
                result_event_id=result_id,
                reason=reason,  # type: ignore[arg-type]
                confirmation_event_id=confirmation_event_id,
            ),
        )
        self._state.tool_results[tool_use_event_id] = result_id

    async def _tracked(self, handle: ActivityHandle[Any]) -> Any:
        self._running.append(handle)
        try:
            return await handle
        finally:
            self._running.remove(handle)


def retryable_model_error(error: ActivityError) -> ModelErrorDetails | None:
    """The details of a model error worth another attempt (under `MODEL_RETRIES_IN_WORKFLOW`,
    the activity fails every model error at once and says whether to retry); else None."""
    cause = error.cause
    if not isinstance(cause, ApplicationError) or cause.type == RECORD_REFUSED:
        return None
    details = cause.details[0] if cause.details else None
    if not isinstance(details, dict):
        return None
    parsed = ModelErrorDetails.model_validate(details)
    return parsed if parsed.retryable else None


def prompt_too_long_error(error: ActivityError) -> ModelErrorDetails | None:
    """The details of a model error saying the prompt exceeds the context window; else None."""
    cause = error.cause
    if not isinstance(cause, ApplicationError) or cause.type == RECORD_REFUSED:
        return None
    details = cause.details[0] if cause.details else None
    if not isinstance(details, dict):
        return None
    parsed = ModelErrorDetails.model_validate(details)
    return parsed if parsed.prompt_too_long else None


def compaction_error(message: str) -> dict[str, Any]:
    """The `session.error` of a turn whose transcript cannot be made to fit (the hosted API's
    `compaction_limit_reached_error`): the session idles with `retries_exhausted`."""
    return {
        "type": "compaction_limit_reached_error",
        "message": message,
        "retry_status": {"type": "exhausted"},
    }


def error_body(details: ModelErrorDetails, retry_status: str) -> dict[str, Any]:
    return {
        "type": details.error_type,
        "message": details.message,
        "retry_status": {"type": retry_status},
    }


def model_error(error: ActivityError, retries_here: bool = False) -> tuple[dict[str, Any], bool]:
    """(the `session.error` body, whether it is terminal) from a model step that failed for good.

    Terminal: the model refused the request (a 4xx other than 408/409/429) or PostgreSQL refused
    to record the step; retrying cannot help. Otherwise the attempts are exhausted: those the
    model's errors may use, or those lost with workers (a timeout).
    """
    cause = error.cause
    if isinstance(cause, ApplicationError):
        details = cause.details[0] if cause.details else {}
        if not isinstance(details, dict):
            details = {}
        if cause.type == RECORD_REFUSED:
            terminal = True
        elif retries_here:
            terminal = cause.non_retryable and not details.get("retryable")
        else:
            terminal = cause.non_retryable
        kind = details.get("error_type") or cause.type
        return {
            # Only the SDK's error types: an activity's own exception (a `KeyError`) is unknown.
            "type": kind if kind in SESSION_ERROR_TYPES else "unknown_error",
            "message": details.get("message") or cause.message,
            "retry_status": {"type": "terminal" if terminal else "exhausted"},
        }, terminal
    message = str(cause or error)
    if isinstance(cause, TemporalTimeoutError):
        message = (
            f"the model step's worker stopped answering ({message}) on every attempt allowed; "
            "send another message to try again"
        )
    return {
        "type": "unknown_error",
        "message": message,
        "retry_status": {"type": "exhausted"},
    }, False
