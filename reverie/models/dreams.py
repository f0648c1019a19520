"""Dreams (`drm_`), in the SDK's shapes (`client.beta.dreams`), and Reverie's additions: what a
dream proposed and wrote (its diff, with provenance), applying and reverting it, and schedules.

A dream reads one memory store and 1 to 100 sessions, extracts findings from each session,
consolidates them topic by topic into operations on paths, and writes those as memory versions
attributed to the dream, each with the sessions that support it. The request and answer shapes
are `dream_create_params.DreamCreateParams` and `BetaDream`; everything else here is Reverie's.
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from reverie.models.common import StrictModel

MAX_SESSIONS = 100
MAX_INSTRUCTIONS = 4096
MAX_MODEL_ID = 256
DREAM_STATUSES = ("pending", "running", "completed", "failed", "canceled")
FINAL_STATUSES = ("completed", "failed", "canceled")
# Sessions read at once by one dream (each a model call): bounded so a dream over 100 sessions
# does not take the whole worker, wide enough that 100 sessions take a few rounds.
EXTRACT_CONCURRENCY = 20
# A store a dream may read: the whole store is copied for `create_new` and kept as the diff's
# base, so it is bounded (the hosted API refuses large stores with the same error type).
MAX_INPUT_MEMORIES = 2_000
MAX_INPUT_BYTES = 20 * 1024 * 1024
# What the model may propose, at most: findings per session, topics per dream, operations per
# topic. More is cut (and reported).
MAX_FINDINGS_PER_SESSION = 20
MAX_TOPICS = 40
MAX_OPERATIONS_PER_TOPIC = 30
MAX_STATEMENT = 2_000
MAX_EVIDENCE = 1_000
MAX_RATIONALE = 1_000
MAX_TOPIC = 40

# Why a step's model answer may hold less than the model meant (reported in the diff).
CUT_OFF = "cut off at max_tokens: what came after the cut is lost"
DreamStatus = Literal["pending", "running", "completed", "failed", "canceled"]
_TOPIC_RUNS = re.compile(r"[^a-z0-9]+")

# The workflow names and the error types a dream fails with (`error.type`).
DREAM_WORKFLOW = "DreamWorkflow"
SCHEDULED_DREAM_WORKFLOW = "ScheduledDreamWorkflow"
INPUT_STORE_UNAVAILABLE = "input_memory_store_unavailable"
INPUT_SESSION_UNAVAILABLE = "input_session_unavailable"
INPUT_STORE_TOO_LARGE = "input_memory_store_too_large"
OUTPUT_STORE_UNAVAILABLE = "output_memory_store_unavailable"
INTERNAL_ERROR = "internal_error"


class DreamActivity(StrEnum):
    START = "dream_start"
    EXTRACT = "dream_extract"
    PLAN = "dream_plan"
    CONSOLIDATE = "dream_consolidate"
    FINISH = "dream_finish"
    SCHEDULE_PICK = "dream_schedule_pick"


def topic_slug(value: str) -> str:
    """A topic as a short lower-case slug (`Testing & CI` -> `testing-ci`); `general` if empty."""
    slug = _TOPIC_RUNS.sub("-", value.lower()).strip("-")[:MAX_TOPIC].strip("-")
    return slug or "general"


# ---- the SDK's objects ---------------------------------------------------------------------------


class DreamModel(StrictModel):
    id: str = Field(min_length=1, max_length=MAX_MODEL_ID)
    speed: Literal["standard"] | None = "standard"


class MemoryStoreInput(StrictModel):
    type: Literal["memory_store"]
    memory_store_id: str = Field(min_length=1, max_length=128)


class SessionsInput(StrictModel):
    type: Literal["sessions"]
    session_ids: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        min_length=1, max_length=MAX_SESSIONS
    )

    @field_validator("session_ids")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("session_ids may not hold the same id twice")
        return sorted(value)


DreamInput = Annotated[MemoryStoreInput | SessionsInput, Field(discriminator="type")]


class CreateNew(StrictModel):
    type: Literal["create_new"] = "create_new"


class UpdateExisting(StrictModel):
    type: Literal["update_existing"]
    memory_store_id: str


OutputBehavior = Annotated[CreateNew | UpdateExisting, Field(discriminator="type")]


class DreamCreate(StrictModel):
    """`DreamCreateParams`: exactly one memory store and one list of sessions."""

    inputs: list[DreamInput] = Field(min_length=2, max_length=2)
    model: DreamModel | Annotated[str, Field(min_length=1, max_length=MAX_MODEL_ID)]
    instructions: str | None = Field(default=None, min_length=1, max_length=MAX_INSTRUCTIONS)
    output_behavior: OutputBehavior = Field(default_factory=CreateNew)

    @model_validator(mode="after")
    def _one_of_each(self) -> DreamCreate:
        kinds = sorted(i.type for i in self.inputs)
        if kinds != ["memory_store", "sessions"]:
            raise ValueError("inputs must be exactly one memory_store entry and one sessions entry")
        if (
            isinstance(self.output_behavior, UpdateExisting)
            and self.output_behavior.memory_store_id != self.store_id
        ):
            raise ValueError(
                "output_behavior.memory_store_id must be the memory store in inputs "
                f"({self.store_id}), not {self.output_behavior.memory_store_id}"
            )
        return self

    @property
    def store_id(self) -> str:
        return next(i.memory_store_id for i in self.inputs if isinstance(i, MemoryStoreInput))

    @property
    def session_ids(self) -> list[str]:
        return next(i.session_ids for i in self.inputs if isinstance(i, SessionsInput))

    @property
    def model_spec(self) -> DreamModel:
        return DreamModel(id=self.model) if isinstance(self.model, str) else self.model


class DreamUsage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class DreamError(BaseModel):
    type: str
    message: str


class DreamOutput(BaseModel):
    type: Literal["memory_store"] = "memory_store"
    memory_store_id: str


class Dream(BaseModel):
    """`BetaDream`."""

    type: Literal["dream"] = "dream"
    id: str
    status: DreamStatus
    inputs: list[dict[str, Any]]
    model: dict[str, Any]
    instructions: str | None = None
    output_behavior: dict[str, Any]
    outputs: list[DreamOutput] = []
    usage: DreamUsage = DreamUsage()
    error: DreamError | None = None
    session_id: str | None = None
    created_at: datetime
    ended_at: datetime | None = None
    archived_at: datetime | None = None


# ---- what the model proposes (validated before anything is kept) ---------------------------------


class Finding(BaseModel):
    """One thing a session shows, with the evidence for it (quoted from the session)."""

    topic: str = Field(min_length=1, max_length=200)
    kind: Literal["preference", "mistake", "workflow", "fact", "other"] = "other"
    statement: str = Field(min_length=1, max_length=MAX_STATEMENT)
    evidence: str = Field(default="", max_length=MAX_EVIDENCE)

    @field_validator("topic")
    @classmethod
    def _slug(cls, value: str) -> str:
        return topic_slug(value)


Op = Literal["create", "update", "merge", "delete"]


class Operation(BaseModel):
    """One proposed change of the output store."""

    op: Op
    path: str = Field(min_length=1, max_length=2048)
    content: str | None = None
    sources: list[str] = Field(default_factory=list, max_length=20)
    supporting_sessions: list[str] = Field(default_factory=list, max_length=MAX_SESSIONS)
    rationale: str = Field(default="", max_length=MAX_RATIONALE)


class Dropped(BaseModel):
    """An operation (or finding) not written, and why."""

    topic: str | None = None
    op: str | None = None
    path: str | None = None
    reason: str


# ---- workflow and activity inputs and outputs (ids and counts only) ------------------------------


class DreamWorkflowInput(BaseModel):
    dream_id: str = ""
    extract_concurrency: int = EXTRACT_CONCURRENCY
    model_max_attempts: int = 6
    heartbeat_timeout_seconds: float = 10.0
    model_timeout_seconds: float = 600.0


class DreamStarted(BaseModel):
    """What `dream_start` found: the sessions to read (None: the dream had already ended)."""

    output_store_id: str | None = None
    session_ids: list[str] = []
    ended: bool = False


class ExtractInput(BaseModel):
    dream_id: str
    session_id: str


class ExtractResult(BaseModel):
    findings: int
    reused: bool = False


class ConsolidateInput(BaseModel):
    dream_id: str
    topic: str


class ConsolidateResult(BaseModel):
    written: int
    dropped: int


class FinishInput(BaseModel):
    dream_id: str
    status: Literal["completed", "failed", "canceled"]
    error: DreamError | None = None


class ScheduledDreamInput(BaseModel):
    schedule_id: str
    # Set only to run one scheduled time again by hand (tests, operators); else the time the
    # schedule meant this run for (Temporal's `TemporalScheduledStartTime`).
    scheduled_time: datetime | None = None
    # The options of the dreams it runs (`dream_id` is set per dream).
    template: DreamWorkflowInput = Field(default_factory=DreamWorkflowInput)
    # Sessions per dream (at most the 100 a dream reads; fewer to split a run by hand).
    batch: int = Field(default=MAX_SESSIONS, ge=1, le=MAX_SESSIONS)


class SchedulePickInput(BaseModel):
    schedule_id: str
    scheduled_time: datetime
    batch: int = Field(default=MAX_SESSIONS, ge=1, le=MAX_SESSIONS)


class SchedulePicked(BaseModel):
    dream_ids: list[str]
    session_count: int


# ---- review: diff, apply, revert -----------------------------------------------------------------


class DiffEntry(BaseModel):
    path: str
    change: Literal["added", "modified", "removed"]
    before: str | None = None
    after: str | None = None
    diff: str = ""
    supporting_sessions: list[str] = []
    session_count: int = 0
    operations: list[str] = []
    rationale: list[str] = []


class DreamDiff(BaseModel):
    type: Literal["dream_diff"] = "dream_diff"
    dream_id: str
    status: DreamStatus
    output_behavior: str
    memory_store_id: str
    output_store_id: str | None
    entries: list[DiffEntry]
    dropped: list[Dropped] = []
    sessions_read: int = 0
    findings: int = 0
    # Findings whose evidence is not a quote of their session: kept, never consolidated.
    findings_ungrounded: int = 0
    applied_at: datetime | None = None
    reverted_at: datetime | None = None


class Conflict(BaseModel):
    path: str
    reason: str


class ReviewResult(BaseModel):
    """What `apply`, `revert` or `discard` did, path by path."""

    type: Literal["dream_review_result"] = "dream_review_result"
    dream_id: str
    action: Literal["apply", "revert", "discard"]
    memory_store_id: str
    written: list[str] = []
    conflicts: list[Conflict] = []


# ---- schedules -----------------------------------------------------------------------------------


class DreamScheduleCreate(StrictModel):
    memory_store_id: str = Field(min_length=1, max_length=128)
    agent_id: str | None = Field(default=None, min_length=1, max_length=128)
    cron: str = Field(min_length=1, max_length=200)
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    mode: Literal["review", "auto"] = "review"
    instructions: str | None = Field(default=None, min_length=1, max_length=MAX_INSTRUCTIONS)
    model: str | None = Field(default=None, min_length=1, max_length=MAX_MODEL_ID)


class DreamSchedule(BaseModel):
    type: Literal["dream_schedule"] = "dream_schedule"
    id: str
    memory_store_id: str
    agent_id: str | None = None
    cron: str
    timezone: str
    mode: Literal["review", "auto"]
    model: str
    instructions: str | None = None
    paused: bool = False
    next_run_times: list[datetime] = []
    recent_dream_ids: list[str] = []
    cursor_session_id: str | None = None
    created_at: datetime
