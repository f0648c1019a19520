"""Inputs and outputs of workflows and activities: small, serialisable, ids not content.

Everything here lands in Temporal history, so nothing here may carry a transcript, a file or
a memory's content: activities load those from Postgres by id.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from reverie.models.sessions import SessionStatus, Usage
from reverie.models.threads import RosterMember, ThreadEntry


class Activity(StrEnum):
    """Activity names, shared by their definitions and the workflows that call them by name
    (so that workflow code, and every client importing it, need not import the SDKs they use)."""

    RECORD_EVENTS = "record_events"
    PROMOTE_INPUTS = "promote_inputs"
    MODEL_STEP = "model_step"
    RUN_TOOL = "run_tool"
    RECORD_TOOL_ERROR = "record_tool_error"
    SETTLE_MODEL_STEP = "settle_model_step"
    ADOPT_INPUTS = "adopt_inputs"
    RECORD_UNRUN_TOOL_USES = "record_unrun_tool_uses"
    COMPACT_TRANSCRIPT = "compact_transcript"
    # Outcomes (workflows/outcome.py, activities/grader.py).
    GRADE_OUTCOME = "grade_outcome"
    RECORD_OUTCOME = "record_outcome"
    SETTLE_OUTCOME_EVALUATION = "settle_outcome_evaluation"


# `ApplicationError.type` of a write PostgreSQL refused for good (a missing row, a constraint, a
# value it cannot store): retrying cannot help, so the activity fails at once, non-retryable.
RECORD_REFUSED = "record_refused"


# The `session.error` error types Reverie records (the SDK's `BetaManagedAgentsSessionErrorEvent`
# error objects); anything else is recorded as `unknown_error`, with its message.
SESSION_ERROR_TYPES = frozenset(
    {
        "unknown_error",
        "model_overloaded_error",
        "model_rate_limited_error",
        "model_request_failed_error",
        "compaction_limit_reached_error",
        "tool_use_limit_reached_error",
    }
)


StopReason = Literal[
    "end_turn", "requires_action", "retries_exhausted", "budget_reached", "refusal"
]


# Why a transcript is compacted: it neared the threshold, the model refused it as too long (400
# "prompt is too long"), or the model stopped at `model_context_window_exceeded`.
CompactionReason = Literal["threshold", "prompt_too_long", "context_window_exceeded"]


class InputRef(BaseModel):
    """An input event staged in Postgres, named by id, with the few fields routing needs."""

    id: str
    type: str
    tool_use_id: str | None = None
    custom_tool_use_id: str | None = None
    result: Literal["allow", "deny"] | None = None
    # `user.define_outcome`: the outcome's id (made by the client) and its iteration budget.
    outcome_id: str | None = None
    max_iterations: int | None = None
    # `user.interrupt`: the thread it stops (none: every thread of the session).
    session_thread_id: str | None = None


class SendEventsInput(BaseModel):
    events: list[InputRef] = Field(min_length=1)


class EventEcho(BaseModel):
    id: str
    type: str
    processed_at: datetime


class PendingToolUse(BaseModel):
    """A tool use that waits for the client: a confirmation (`ask`) or a custom tool's result."""

    event_id: str
    kind: Literal["builtin", "custom"]
    answer_event_id: str | None = None
    result: Literal["allow", "deny"] | None = None


class ActiveOutcome(BaseModel):
    """The outcome a session works toward, as the workflow keeps it: ids and counters only
    (its description, rubric and verdicts live in PostgreSQL)."""

    outcome_id: str
    # The `user.define_outcome` event: the agent's first input of the outcome.
    event_id: str
    max_iterations: int
    # The evaluation the outcome is on (0-based), and where its loop stands:
    # pending (not taken up by a turn yet) -> working (agent pass) -> evaluating (grader) ->
    # working again (needs_revision) ... -> final_pass (after max_iterations_reached).
    iteration: int = 0
    phase: Literal["pending", "working", "evaluating", "final_pass"] = "pending"
    last_result: str | None = None


class ThreadState(BaseModel):
    """One thread's own state (the primary's or a subagent's): what its agent loop changes,
    carried through continue-as-new by whichever workflow hosts the loop."""

    status: SessionStatus = "idle"
    queued: list[InputRef] = []
    # Tool uses of the last model step, in order, with the ids of their results once recorded.
    tool_results: dict[str, str | None] = {}
    awaiting: list[PendingToolUse] = []
    # Set when a long turn continued as new between two model steps: the next step's inputs.
    resume_inputs: list[str] | None = None
    held_input_ids: list[str] = []
    turns: int = 0
    model_requests: int = 0
    last_stop_reason: str | None = None
    # (patches `compaction`, `stop-reason-rules`) The transcript nears or fills the model's
    # context window: the next model step compacts it first, for this reason.
    compact_next: CompactionReason | None = None
    # Compactions since the model last answered: bounded, so a transcript that cannot shrink
    # enough ends the turn (`compaction_limit_reached_error`) instead of compacting for ever.
    compactions_in_row: int = 0
    # (patch `stop-reason-rules`) Set with `resume_inputs` when a turn continued as new right
    # after a `pause_turn` answer: the next step continues that answer as it is.
    resume_continues_answer: bool = False


class CarriedState(ThreadState):
    """What a session carries through continue-as-new: its primary thread's state, its outcome
    and its subagent threads (ids and statuses). Small by construction."""

    # (patch `outcomes`) The outcome being worked toward, and the last one's final result.
    outcome: ActiveOutcome | None = None
    last_outcome: str | None = None
    # (issue 18) A coordinator's subagent threads, and the replies it has taken in (the last
    # few ids: a reply signalled twice is taken once).
    threads: list[ThreadEntry] = []
    replies_taken: list[str] = []
    # (patch `threads-require-action`) Idle with `requires_action` because every running thread
    # waits for the client: the cross-posted tool uses named (None: not so).
    threads_blocked: list[str] | None = None
    # After an interrupt of the whole session, replies of the stopped threads wait for the
    # coordinator's next turn instead of starting one (until a user message comes); carried so
    # that continuing as new in between does not let such a reply start a turn.
    hold_thread_replies: bool = False


class SessionOptions(BaseModel):
    """Chosen by whoever starts the session and fixed for its life, so replay sees the same."""

    # Attempts of one model call before the session idles with `retries_exhausted`: only the
    # model's own error answers (429, 529, 5xx, timeouts) count, not attempts lost with a worker.
    model_max_attempts: int = Field(default=6, ge=1)
    # One model call may take this long before it counts as a (retryable) failure.
    model_timeout_seconds: float = Field(default=600.0, gt=0)
    # A worker that stops heartbeating for this long is presumed dead: the step is retried.
    heartbeat_timeout_seconds: float = Field(default=10.0, gt=0)
    # Further attempts of one model call after its worker died (or Reverie's own database was
    # briefly unreachable): retried promptly by Temporal and counted apart from the model's
    # errors (the bound applies to each of the model attempts above).
    worker_loss_retries: int = Field(default=8, ge=0)
    # User messages that may wait for the running turn to take them up; more are refused, so
    # that what the workflow carries (through continue-as-new too) stays small.
    max_waiting_inputs: int = Field(default=1000, ge=1)


class SessionWorkflowInput(BaseModel):
    session_id: str
    agent_id: str
    agent_version: int
    environment_id: str = "env_default"
    title: str | None = None
    options: SessionOptions = SessionOptions()
    carried: CarriedState | None = None
    # (patch `created-running`) The session was created with messages and its creator recorded
    # the first turn's running status with them: the first run's first turn begins there.
    started_running: bool = False
    # (issue 18) A coordinator's roster, resolved when the session was created.
    roster: list[RosterMember] = []


class NewEvent(BaseModel):
    """An event the workflow itself emits (statuses, errors): small fields only."""

    id: str
    type: str
    processed_at: datetime
    payload: dict[str, Any] = {}


class RecordEventsInput(BaseModel):
    session_id: str
    events: list[NewEvent]
    # Set the session row's status in the same transaction as the events.
    status: SessionStatus | None = None
    archive: bool = False
    turns: int | None = None


class PromoteInputsInput(BaseModel):
    session_id: str
    event_ids: list[str]
    processed_at: datetime
    # (patch `promote-starts-turn`) Events recorded right after the inputs, in the same
    # transaction, and the status (with the turns so far) they set: the turn's running status.
    then: list[NewEvent] = []
    status: SessionStatus | None = None
    turns: int | None = None


class IdleSpec(BaseModel):
    """(patch `idle-with-answer`) The workflow's rule for a step that may end its turn: if the
    answer ends the turn (`end_turn` or `stop_sequence`, no tool use) and no input reached the
    session while the step ran, the step records `session.status_idle` (this id, `end_turn`)
    and the idle status (with this turn count) in the transaction of its answer."""

    event_id: str
    turns: int


class ModelStepInput(BaseModel):
    session_id: str
    agent_id: str
    agent_version: int
    # Deterministic (workflow-made): names every row the step writes, so a retry writes none twice.
    step_id: str
    # Events whose content becomes the next user turn (messages, tool results), in order.
    input_event_ids: list[str] = []
    # Attempts the workflow's retry policy allows; the last failure is the workflow's to report.
    max_attempts: int
    # Set by workflows that retry model errors themselves (patch `model-retries-in-workflow`):
    # a model error then fails the activity at once (non-retryable, with `ModelErrorDetails`)
    # and the activity records no retry status. Unset in steps of runs older than that patch.
    retries_in_workflow: bool = False
    # Which model attempt of the step this is (1-based), for the backoff the activity proposes.
    attempt: int = Field(default=1, ge=1)
    # (patch `stop-reason-rules`) The last answer paused (`pause_turn`): send the transcript as it
    # is, ending with that answer, so the model continues it (no "Continue." turn is added).
    continue_answer: bool = False
    # (patch `idle-with-answer`) Set when the turn may end with this step (see `IdleSpec`).
    idle: IdleSpec | None = None
    # (issue 18) The coordinator's primary thread: offer the delegation tools of its roster.
    delegates: bool = False
    # (issue 18) A subagent thread's step: its usage counts for its session too.
    parent_session_id: str | None = None


class ToolUseRef(BaseModel):
    """A tool use the model asked for, by the id of its `agent.tool_use` (or custom) event."""

    event_id: str
    name: str
    kind: Literal["builtin", "custom", "delegate"]
    # "deny": a tool the agent does not offer; its run records an error result at once.
    evaluated_permission: Literal["allow", "ask", "deny"] = "allow"
    # The tool use is the answer's last block: in an answer that stopped early (`max_tokens`,
    # `model_context_window_exceeded`) its input may be cut off.
    ends_answer: bool = False


class RunToolInput(BaseModel):
    session_id: str
    agent_id: str
    agent_version: int
    environment_id: str
    tool_use_event_id: str
    # Made by the workflow: a run that is retried or reported as interrupted writes one result.
    result_event_id: str
    # (issue 18) A subagent thread runs its tools in its session's workspace (and mounts).
    workspace_session_id: str | None = None


class ToolErrorInput(BaseModel):
    """Record an error result for a tool use: a denial (message from the confirmation event) or
    an interrupted run."""

    session_id: str
    tool_use_event_id: str
    result_event_id: str
    reason: Literal["denied", "interrupted"]
    confirmation_event_id: str | None = None


class ModelStepResult(BaseModel):
    stop_reason: str
    tool_uses: list[ToolUseRef] = []
    usage: Usage = Usage()
    # Tokens the next request will hold at least (this one's prompt and answer), and whether
    # that is past the compaction threshold of a model the API does not compact for.
    context_tokens: int = 0
    compaction_due: bool = False
    # The answer's `stop_details` (a refusal's category and explanation, bounded), for the
    # `session.status_idle` event.
    stop_details: dict[str, Any] | None = None
    # (patch `idle-with-answer`) The step recorded the turn's end (`IdleSpec`) with its answer.
    idle_recorded: bool = False


class SettleStepInput(BaseModel):
    session_id: str
    step_id: str


class SettledStep(BaseModel):
    """The answer of a step the workflow gave up on, if it committed after all; else None (and
    then no attempt of it can commit any more)."""

    committed: ModelStepResult | None = None


class UnrunToolUsesInput(BaseModel):
    """Tool uses that the answer's stop reason does not let run: each gets an error result
    saying why (`cut_off`: the answer stopped early and this input may be incomplete;
    `not_run`: the stop reason runs no tools). `adopt` also writes the results into the
    transcript at once, when no model step of this turn will."""

    session_id: str
    stop_reason: str
    # tool use event id -> the result event id the workflow made for it
    results: dict[str, str]
    reason: Literal["cut_off", "not_run"]
    adopt: bool = False


class CompactInput(BaseModel):
    """Compact a session's transcript: summarise its older part, keep the recent part as is."""

    session_id: str
    agent_id: str
    agent_version: int
    # Made by the workflow: a retried or repeated compaction with this id records nothing twice.
    compaction_id: str
    reason: CompactionReason
    # The model's context window when the failing request told it (400 "prompt is too long").
    context_window_tokens: int | None = None


class CompactionResult(BaseModel):
    """Whether the transcript was compacted; if not, why (nothing older to summarise)."""

    compacted: bool
    detail: str | None = None


class AdoptInputsInput(BaseModel):
    """Inputs of an interrupted turn, written into the transcript now rather than carried."""

    session_id: str
    event_ids: list[str]


class ModelErrorDetails(BaseModel):
    """What a failed model call tells the workflow, carried in the ApplicationError's details."""

    error_type: Literal[
        "model_rate_limited_error",
        "model_overloaded_error",
        "model_request_failed_error",
        "unknown_error",
    ]
    message: str
    status_code: int | None = None
    # Whether another attempt may succeed, and after how long (from `retry-after`, capped), for
    # workflows that retry model errors themselves.
    retryable: bool = False
    retry_delay_seconds: float | None = None
    # The model refused the request because the prompt is longer than its context window
    # (400 "prompt is too long"): compacting the transcript may help where retrying cannot.
    prompt_too_long: bool = False
    # The window, when the error says it ("... tokens > N maximum").
    context_window_tokens: int | None = None


class RecordOutcomeInput(BaseModel):
    """Move an outcome's state on (`outcome_evaluations[]`), with the events that say so, in
    one transaction; ids made by the workflow make a retry a no-op."""

    session_id: str
    outcome_id: str
    result: Literal[
        "running",
        "evaluating",
        "satisfied",
        "max_iterations_reached",
        "failed",
        "interrupted",
    ]
    iteration: int
    explanation: str | None = None
    events: list[NewEvent] = []


class GradeOutcomeInput(BaseModel):
    """Grade the agent's work of one iteration (activities/grader.py)."""

    session_id: str
    agent_id: str
    agent_version: int
    outcome_id: str
    iteration: int
    # The evaluation's `span.outcome_evaluation_start` event (workflow-made): names the
    # evaluation, its samples and every event it records.
    evaluation_id: str
    end_event_id: str
    # The last evaluation allowed: a verdict other than satisfied or failed becomes
    # `max_iterations_reached`.
    last_iteration: bool
    # Attempts the grader's model errors may use (the session's model budget).
    max_attempts: int = Field(default=6, ge=1)


class GradeOutcomeResult(BaseModel):
    """The recorded verdict's result (its explanation and criteria stay in PostgreSQL)."""

    # satisfied, needs_revision, max_iterations_reached or failed (or what settled it first).
    result: str


class SettleEvaluationInput(BaseModel):
    """An evaluation the workflow stops waiting for (interrupted, or the grader failed): its
    verdict if the grader committed one after all, else `result` is recorded for it."""

    session_id: str
    outcome_id: str
    iteration: int
    evaluation_id: str
    end_event_id: str
    result: Literal["interrupted", "failed"]
    # Why (the grader's failure), for `failed`.
    reason: str | None = None


class SettledEvaluation(BaseModel):
    result: str
    # Whether this settling recorded `result` (False: the grader's own verdict stands).
    settled: bool
