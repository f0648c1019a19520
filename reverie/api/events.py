"""`/v1/sessions/{id}/events`: send, list, and stream as server-sent events.

A stream starts at the session's newest event, as the hosted API's does; beyond it, a client
that reconnects with `Last-Event-ID` gets every event after that one, with no gap and no
duplicate, because events are read back from the log by position, never from memory. Every
stream of a process waits on the one `EventFeed` listener (PostgreSQL LISTEN/NOTIFY), not on a
database poll of its own.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from aiohttp import web

from reverie.api import state
from reverie.api.errors import ApiError
from reverie.api.http import json_body, query_int, query_list, query_str, query_time, respond
from reverie.api.sessions import order_of
from reverie.models.events import Event
from reverie.service.client import ReverieClient
from reverie.store import events as event_store

routes = web.RouteTableDef()

# Events read from the log per batch while a stream catches up.
STREAM_BATCH = 200


def _client(request: web.Request) -> ReverieClient:
    return request.app[state.CLIENT]


@routes.post("/v1/sessions/{session_id}/events")
async def send(request: web.Request) -> web.Response:
    body = await json_body(request)
    if "events" not in body:
        raise ApiError("invalid_request_error", "events: field required")
    extra = sorted(set(body) - {"events"})
    if extra:
        raise ApiError("invalid_request_error", f"unknown fields: {', '.join(extra)}")
    sent = await _client(request).send_events(request.match_info["session_id"], body["events"])
    return respond({"data": [event.model_dump(mode="json") for event in sent]})


@routes.get("/v1/sessions/{session_id}/events")
async def list_events(request: web.Request) -> web.Response:
    page = await _client(request).events_page(
        request.match_info["session_id"],
        limit=query_int(request, "limit", 20),
        page=query_str(request, "page"),
        types=query_list(request, "types"),
        order=order_of(request, "asc"),
        created_at_gt=query_time(request, "created_at_gt"),
        created_at_gte=query_time(request, "created_at_gte"),
        created_at_lt=query_time(request, "created_at_lt"),
        created_at_lte=query_time(request, "created_at_lte"),
    )
    return respond(page)


def frame(event: Event) -> bytes:
    """One server-sent event: `event:` names the type (the SDKs drop frames without it),
    `id:` lets a client resume after it with `Last-Event-ID`."""
    data = json.dumps(event.model_dump(mode="json"), separators=(",", ":"))
    return f"event: {event.type}\nid: {event.id}\ndata: {data}\n\n".encode()


PING = b'event: ping\ndata: {"type":"ping"}\n\n'


@routes.get("/v1/sessions/{session_id}/events/stream")
async def stream(request: web.Request) -> web.StreamResponse:
    client = _client(request)
    session_id = request.match_info["session_id"]
    # Looked up before the stream starts, so that an unknown session is a 404, not a stream.
    ended = (await client.get_session(session_id)).status == "terminated"
    resume_after = request.headers.get("Last-Event-ID") or query_str(request, "last_event_id")
    feed = request.app[state.FEED]
    async with feed.subscribe(session_id) as wake:
        # Subscribed first, then the starting point read: an event recorded in between is
        # both after the starting point and announced to this subscriber.
        if resume_after:
            position = await client.event_position(session_id, resume_after)
        else:
            position = await client.last_position(session_id)
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await response.prepare(request)
        # A client that goes away loses nothing: it resumes with Last-Event-ID.
        with contextlib.suppress(ConnectionResetError):
            await _send_events(request, response, wake, session_id, position, ended)
        return response


async def _send_events(
    request: web.Request,
    response: web.StreamResponse,
    wake: Any,
    session_id: str,
    position: int,
    ended: bool,
) -> None:
    """Events after `position` as they are recorded, until the session terminates."""
    pool = request.app[state.CLIENT].pool
    keepalive = request.app[state.KEEPALIVE_SECONDS]
    while True:
        batch, position = await event_store.list_events(
            pool, session_id, after_position=position, limit=STREAM_BATCH
        )
        for event in batch:
            await response.write(frame(event))
            if event.type == "session.status_terminated":
                await response.write_eof()
                return
        if len(batch) == STREAM_BATCH:
            continue
        if ended:  # terminated before the stream began: what it holds has been sent
            await response.write_eof()
            return
        if not await wake.wait(keepalive):
            await response.write(PING)
