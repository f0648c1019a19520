"""Every answer that is not a success, in the API's error shape and never with internals.

`{"type": "error", "error": {"type", "message"}}`, with the status the hosted API uses for each
type. A failure Reverie did not foresee is logged with its traceback under the request's id and
answered as a bare `api_error` naming that id, so an operator can find it and a caller learns
nothing about the inside.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from reverie.api.state import MAX_BODY_BYTES, REQUEST_ID
from reverie.models.errors import ReverieError

log = logging.getLogger("reverie.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Status of each error type the API answers with (the hosted API's table).
STATUS_OF_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}
# What an aiohttp refusal (raised before a handler runs, or by the body reader) becomes.
_TYPE_OF_HTTP_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
}


class ApiError(ReverieError):
    """A refusal the HTTP layer itself makes (authentication, body size, malformed JSON)."""

    def __init__(self, error_type: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.status = status or STATUS_OF_TYPE[error_type]


def error_response(status: int, error_type: str, message: str) -> web.Response:
    return web.json_response(
        {"type": "error", "error": {"type": error_type, "message": message}}, status=status
    )


def _http_message(error: web.HTTPException, request: web.Request) -> str:
    if error.status == 404:
        return f"no route {request.method} {request.path}"
    if error.status == 405:
        return f"{request.method} is not allowed on {request.path}"
    if error.status == 413:
        return f"the request body is larger than the {request.app[MAX_BODY_BYTES]:,} bytes allowed"
    return error.reason or "the request was refused"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ReverieError as error:
        # `to_dict`: an error may name more than its type and message (conflicting_memory_id).
        return web.json_response(error.to_dict(), status=error.status)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        error_type = _TYPE_OF_HTTP_STATUS.get(error.status, "api_error")
        return error_response(error.status, error_type, _http_message(error, request))
    except (asyncio.CancelledError, ConnectionResetError):
        raise
    except Exception:
        request_id = request.get(REQUEST_ID, "unknown")
        log.exception("request %s (%s %s) failed", request_id, request.method, request.path)
        return error_response(
            500, "api_error", f"internal error; the operator can find it by request id {request_id}"
        )
