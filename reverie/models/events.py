"""Session events: what clients send, and the recorded shape every event takes."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from reverie.models.common import StrictModel, check_json
from reverie.models.outcomes import (
    DEFAULT_MAX_ITERATIONS,
    MAX_DESCRIPTION_CHARS,
    MAX_ITERATIONS,
    GraderOptions,
    Rubric,
    not_blank,
)

# Largest accepted input event, serialised. Content lives in Postgres, not in Temporal, but one
# event is still one row that every later model call re-reads: keep it to a sane size.
MAX_EVENT_BYTES = 256 * 1024
# `user.define_outcome` carries a text rubric of up to 262,144 characters (the SDK's bound) and
# a description as long: up to 4 bytes each, escaped as JSON.
MAX_OUTCOME_EVENT_BYTES = 4 * 1024 * 1024
# Events in one request (`send_events`, a session's `initial_events`), as the hosted API allows.
MAX_EVENTS_PER_REQUEST = 50
# Fields that name another event travel to the workflow inside a Temporal update, so they are
# short: Reverie's own ids are 37 characters.
MAX_REFERENCE_ID = 256

ReferenceId = Annotated[str, Field(min_length=1, max_length=MAX_REFERENCE_ID)]


class TextBlock(StrictModel):
    type: Literal["text"] = "text"
    text: str = Field(min_length=1)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text must not be blank")
        return value


class MediaBlock(BaseModel):
    """Image and document blocks pass through to the model as given."""

    model_config = ConfigDict(extra="allow")
    type: Literal["image", "document"]
    source: dict[str, Any]


ContentBlock = Annotated[TextBlock | MediaBlock, Field(discriminator="type")]


def _text_to_blocks(value: Any) -> Any:
    return [{"type": "text", "text": value}] if isinstance(value, str) else value


class UserMessage(StrictModel):
    type: Literal["user.message"] = "user.message"
    content: list[ContentBlock] = Field(min_length=1)

    _coerce = field_validator("content", mode="before")(_text_to_blocks)


class UserInterrupt(StrictModel):
    type: Literal["user.interrupt"] = "user.interrupt"
    session_thread_id: ReferenceId | None = None


class UserToolConfirmation(StrictModel):
    type: Literal["user.tool_confirmation"] = "user.tool_confirmation"
    tool_use_id: ReferenceId
    result: Literal["allow", "deny"]
    deny_message: str | None = Field(default=None, max_length=10_000)


class UserCustomToolResult(StrictModel):
    type: Literal["user.custom_tool_result"] = "user.custom_tool_result"
    custom_tool_use_id: ReferenceId
    content: list[ContentBlock] = Field(default_factory=list)
    is_error: bool = False

    _coerce = field_validator("content", mode="before")(_text_to_blocks)


class UserDefineOutcome(StrictModel):
    """`BetaManagedAgentsUserDefineOutcomeEventParams`, plus Reverie's optional `grader`.
    `max_iterations` null means the default (3). The recorded echo adds `outcome_id`."""

    type: Literal["user.define_outcome"] = "user.define_outcome"
    description: str = Field(min_length=1, max_length=MAX_DESCRIPTION_CHARS)
    rubric: Rubric
    max_iterations: int | None = Field(default=DEFAULT_MAX_ITERATIONS, ge=1, le=MAX_ITERATIONS)
    grader: GraderOptions | None = None

    _blank = field_validator("description")(not_blank)

    @field_validator("max_iterations", mode="after")
    @classmethod
    def _default(cls, value: int | None) -> int:
        return DEFAULT_MAX_ITERATIONS if value is None else value


InputEvent = Annotated[
    UserMessage | UserInterrupt | UserToolConfirmation | UserCustomToolResult | UserDefineOutcome,
    Field(discriminator="type"),
]
INPUT_EVENT_TYPES = (
    "user.message",
    "user.interrupt",
    "user.tool_confirmation",
    "user.custom_tool_result",
    "user.define_outcome",
)
_input_adapter: TypeAdapter[InputEvent] = TypeAdapter(InputEvent)


def parse_input_event(raw: Any) -> InputEvent:
    """Validate one client event, with a message that names the known types on a bad `type`."""
    if isinstance(raw, BaseModel):
        raw = raw.model_dump(exclude_none=True)
    if not isinstance(raw, dict):
        raise ValueError("an event must be an object with a `type`")
    if raw.get("type") not in INPUT_EVENT_TYPES:
        raise ValueError(
            f"unknown event type {raw.get('type')!r}; input events are {', '.join(INPUT_EVENT_TYPES)}"
        )
    check_json(raw)  # before measuring: json.dumps of a far too deep value raises RecursionError
    size = len(json.dumps(raw, default=str).encode())
    limit = MAX_OUTCOME_EVENT_BYTES if raw.get("type") == "user.define_outcome" else MAX_EVENT_BYTES
    if size > limit:
        raise ValueError(f"event of {size} bytes exceeds the limit of {limit} bytes")
    return _input_adapter.validate_python(raw)


def check_event_count(count: int, what: str = "a request") -> None:
    """The per-request bound, with a message that says what it is."""
    if count < 1:
        raise ValueError(f"{what} must hold at least one event")
    if count > MAX_EVENTS_PER_REQUEST:
        raise ValueError(
            f"{what} may hold at most {MAX_EVENTS_PER_REQUEST} events, not {count}: "
            "send them in several requests"
        )


class SendEventsRequest(StrictModel):
    """The body of a send: 1 to `MAX_EVENTS_PER_REQUEST` input events."""

    events: list[dict[str, Any]]

    @model_validator(mode="after")
    def _each_valid(self) -> SendEventsRequest:
        check_event_count(len(self.events), "events")
        for event in self.events:
            parse_input_event(event)
        return self


class Event(BaseModel):
    """A recorded event: `id`, `type`, `processed_at` and the type's own fields, in the SDK's
    shape for its type (`anthropic.types.beta.sessions.BetaManagedAgentsSessionEvent`).

    `session_id` says where the event was read from; the SDK's events do not carry it, so it
    is left out when the event is serialised."""

    model_config = ConfigDict(extra="allow")
    id: str
    type: str
    processed_at: datetime
    session_id: str | None = Field(default=None, exclude=True)

    @property
    def payload(self) -> dict[str, Any]:
        return dict(self.__pydantic_extra__ or {})


# `evaluated_permission` values of policies, and the `evaluation` each implies.
_EVALUATION_OF = {"allow": "always_allow", "ask": "always_ask"}


def upgrade_payload(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """An event payload recorded by an older Reverie, in today's shape (the same rewrite
    migration 0004 made of the rows that existed then; this covers rows an older worker
    writes during an upgrade). A payload already in today's shape comes back as it is.

    - `agent.tool_use.evaluated_permission` was `{"type": "allow" | "ask"}`; it is the bare
      value, with `evaluation` naming the policy it implies.
    """
    if kind == "agent.tool_use":
        permission = payload.get("evaluated_permission")
        if isinstance(permission, dict):
            value = permission.get("type")
            payload = {**payload, "evaluated_permission": value}
            if value in _EVALUATION_OF and "evaluation" not in payload:
                payload["evaluation"] = {"type": _EVALUATION_OF[value]}
    return payload
