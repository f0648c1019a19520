"""Turning what a caller sent into models or a refusal meant for a person; shared by every
part of the service layer (sessions, memory, webhooks)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from reverie.models.common import check_json
from reverie.models.errors import InvalidRequestError, NotFoundError


def invalid(error: ValidationError) -> InvalidRequestError:
    """One message naming each problem by its field (`events.0.content: ...`)."""
    problems = []
    for e in error.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in e["loc"])
        message = e["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return InvalidRequestError("; ".join(problems))


def parse(model: type[BaseModel], value: Any) -> Any:
    """`value` as `model` (as is when it already is one), or an `InvalidRequestError`."""
    try:
        return value if isinstance(value, model) else model.model_validate(value)
    except ValidationError as error:
        raise invalid(error) from None


def check_id(kind: str, value: Any) -> str:
    """An id a caller passed in: a string PostgreSQL can compare (no NUL), else a clear error."""
    if not isinstance(value, str) or not value:
        raise InvalidRequestError(f"{kind} id must be a non-empty string, not {value!r}")
    try:
        check_json(value)
    except ValueError as error:
        raise InvalidRequestError(f"{kind} id {value!r}: {error}") from None
    if kind == "session" and value.startswith("sth_"):
        # A subagent thread is stored as a row of `sessions` (issue 18), but it is no session:
        # the session routes never reach it (its own are under /v1/sessions/{id}/threads).
        raise NotFoundError(f"no session with id {value!r}")
    return value
