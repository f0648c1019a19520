"""Sessions: one durable conversation of one agent version."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field, field_validator

from reverie.models.agents import AgentRef, SessionAgent
from reverie.models.common import Metadata, StrictModel
from reverie.models.environments import DEFAULT_ENVIRONMENT_ID
from reverie.models.events import MAX_EVENTS_PER_REQUEST, check_event_count
from reverie.models.outcomes import OutcomeEvaluation

__all__ = ["DEFAULT_ENVIRONMENT_ID", "Session", "SessionCreate", "SessionStatus", "Usage"]

SessionStatus = Literal["rescheduling", "running", "idle", "terminated"]
SESSION_STATUSES: tuple[str, ...] = get_args(SessionStatus)
MAX_INITIAL_EVENTS = MAX_EVENTS_PER_REQUEST


class Usage(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    active_seconds: float = 0.0

    def plus(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_creation_input_tokens=self.cache_creation_input_tokens
            + other.cache_creation_input_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens + other.cache_read_input_tokens,
            active_seconds=self.active_seconds + other.active_seconds,
        )


class CacheCreation(BaseModel):
    """Prompt-cache writes by lifetime. Reverie marks its cache breakpoints with the default
    (5-minute) lifetime, so every write counts there."""

    ephemeral_5m_input_tokens: int = 0
    ephemeral_1h_input_tokens: int = 0


class SessionUsage(BaseModel):
    """`BetaManagedAgentsSessionUsage`: a session's tokens across all its model calls."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation: CacheCreation = CacheCreation()
    active_seconds: float = 0.0

    @classmethod
    def of(cls, usage: Usage) -> SessionUsage:
        return cls(
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_input_tokens=usage.cache_read_input_tokens,
            cache_creation=CacheCreation(
                ephemeral_5m_input_tokens=usage.cache_creation_input_tokens
            ),
            active_seconds=usage.active_seconds,
        )


class SessionStats(BaseModel):
    """`BetaManagedAgentsSessionStats` (`active_seconds`, `duration_seconds`), plus Reverie's
    own counters: `turns`, `model_requests` and `events` recorded."""

    active_seconds: float = 0.0
    duration_seconds: float = 0.0
    turns: int = 0
    model_requests: int = 0
    events: int = 0


class SessionCreate(StrictModel):
    """`SessionCreateParams`. Fields Reverie has not built (`vault_ids`, `budget`, an
    `agent_with_overrides`) are accepted here, so that an SDK sending their empty defaults is
    served, and refused by the client when they ask for something."""

    agent: str | AgentRef | dict[str, Any]
    environment_id: str | None = None
    title: str | None = Field(default=None, max_length=512)
    metadata: Metadata = Field(default_factory=dict)
    resources: list[dict[str, Any]] = []
    initial_events: list[dict[str, Any]] = Field(default_factory=list)
    vault_ids: list[str] = Field(default_factory=list, max_length=100)
    budget: dict[str, Any] | None = None

    @field_validator("agent", mode="after")
    @classmethod
    def _known_agent_form(cls, value: Any) -> Any:
        if isinstance(value, dict) and value.get("type") != "agent_with_overrides":
            raise ValueError(
                'an agent id, {"type": "agent", "id": ..., "version": ...} or '
                '{"type": "agent_with_overrides", ...}'
            )
        return value

    @field_validator("initial_events")
    @classmethod
    def _bounded(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if value:
            check_event_count(len(value), "the list")
        return value

    def agent_ref(self) -> AgentRef:
        if isinstance(self.agent, str):
            return AgentRef(id=self.agent)
        if isinstance(self.agent, dict):
            raise ValueError(f"agent of type {self.agent.get('type')!r}")
        return self.agent

    def unsupported(self) -> str | None:
        """What this request asks for that Reverie has not built, if anything."""
        if isinstance(self.agent, dict):
            return "session-local agent overrides (agent_with_overrides) are not supported yet"
        if self.vault_ids:
            return "vaults (vault_ids) are not supported yet"
        if self.budget is not None:
            return "session budgets are not supported yet"
        return None


class Session(BaseModel):
    """`BetaManagedAgentsSession`: `agent` is the version it runs, as sessions show agents."""

    type: Literal["session"] = "session"
    id: str
    agent: SessionAgent
    environment_id: str
    title: str | None = None
    metadata: dict[str, str] = {}
    resources: list[dict[str, Any]] = []
    status: SessionStatus
    usage: SessionUsage = SessionUsage()
    stats: SessionStats = SessionStats()
    outcome_evaluations: list[OutcomeEvaluation] = []
    vault_ids: list[str] = []
    budget: dict[str, Any] | None = None
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None = None


class SessionUpdate(StrictModel):
    """What may change on a session: its title and metadata (patched key by key; None
    deletes). The SDK's other update fields are refused by the client until Reverie has them."""

    title: str | None = Field(default=None, max_length=512)
    metadata: dict[str, str | None] | None = None
    agent: dict[str, Any] | None = None
    vault_ids: list[str] | None = None
    budget: dict[str, Any] | None = None


class SessionMetadata(StrictModel):
    """Checks a session's metadata after an update's patch, with the same limits as creation."""

    metadata: Metadata
