"""Reading requests and writing answers: JSON bodies, query parameters, model dumps.

Query parameters follow what the official SDKs send: lists as `name[]=a&name[]=b` (both SDKs) or
repeated / comma-separated `name` (curl users), booleans as `true`/`false`, times in RFC 3339 as
`created_at_gte` (Python) or `created_at[gte]` (TypeScript).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from reverie.api.errors import ApiError

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object; an empty body is an empty object (as `archive` sends)."""
    raw = await request.read()  # aiohttp refuses bodies over client_max_size with 413
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except RecursionError:
        raise ApiError("invalid_request_error", "the request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError("invalid_request_error", f"the request body is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise ApiError("invalid_request_error", "the request body must be a JSON object")
    return body


def _one(request: web.Request, name: str) -> str | None:
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise ApiError("invalid_request_error", f"query parameter {name} given more than once")
    return values[0] if values else None


def query_int(request: web.Request, name: str, default: int | None = None) -> int | None:
    value = _one(request, name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ApiError(
            "invalid_request_error", f"query parameter {name} must be an integer, not {value!r}"
        ) from None


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    value = _one(request, name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ApiError(
        "invalid_request_error", f"query parameter {name} must be true or false, not {value!r}"
    )


def query_str(request: web.Request, name: str) -> str | None:
    return _one(request, name)


def query_list(request: web.Request, name: str) -> list[str] | None:
    """`name[]=a&name[]=b`, `name=a&name=b` or `name=a,b`; None when absent."""
    values = request.query.getall(f"{name}[]", []) + request.query.getall(name, [])
    if not values:
        return None
    return [item for value in values for item in value.split(",") if item]


def query_time(request: web.Request, name: str) -> datetime | None:
    """`created_at_gte=...` (the Python SDK) or `created_at[gte]=...` (the TypeScript SDK)."""
    field, _, bound = name.rpartition("_")
    value = _one(request, name)
    bracketed = _one(request, f"{field}[{bound}]")
    if value is not None and bracketed is not None:
        raise ApiError("invalid_request_error", f"give {name} or {field}[{bound}], not both")
    value = value if value is not None else bracketed
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "+"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ApiError(
            "invalid_request_error",
            f"query parameter {name} must be an RFC 3339 time with a zone, not {value!r}",
        )
    return parsed


def respond(value: BaseModel | dict[str, Any], status: int = 200) -> web.Response:
    body = value.model_dump_json() if isinstance(value, BaseModel) else json.dumps(value)
    return web.Response(body=body, status=status, content_type="application/json")
