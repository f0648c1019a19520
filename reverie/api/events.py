"""`/v1/sessions/{id}/events`: send, list, and stream as server-sent events.

A stream starts at the session's newest event, as the hosted API's does; beyond it, a client
that reconnects with `Last-Event-ID` gets every event after that one, with no gap and no
duplicate, because events are read back from the log by position, never from memory. Every
stream of a process waits on the one `EventFeed` listener (PostgreSQL LISTEN/NOTIFY), not on a
database poll of its own.
"""

from __future__ import annotations

import contextlib

from aiohttp import web

from reverie.api import state
from reverie.api.errors import ApiError
from reverie.api.http import json_body, query_int, query_list, query_str, query_time, respond
from reverie.api.sessions import order_of
from reverie.api.state import client_of
from reverie.api.tails import TERMINATED, Tail, frames_after
from reverie.service.validation import check_id
from reverie.store import events as event_store
from reverie.store import sessions as session_store

routes = web.RouteTableDef()

# Events a stream reads from the log at once while it catches up with its session's tail.
CATCH_UP_BATCH = 200


@routes.post("/v1/sessions/{session_id}/events")
async def send(request: web.Request) -> web.Response:
    body = await json_body(request)
    if "events" not in body:
        raise ApiError("invalid_request_error", "events: field required")
    extra = sorted(set(body) - {"events"})
    if extra:
        raise ApiError("invalid_request_error", f"unknown fields: {', '.join(extra)}")
    sent = await client_of(request).send_events(request.match_info["session_id"], body["events"])
    return respond({"data": [event.model_dump(mode="json") for event in sent]})


@routes.get("/v1/sessions/{session_id}/events")
async def list_events(request: web.Request) -> web.Response:
    page = await client_of(request).events_page(
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


PING = b'event: ping\ndata: {"type":"ping"}\n\n'


@routes.get("/v1/sessions/{session_id}/events/stream")
async def stream(request: web.Request) -> web.StreamResponse:
    client = client_of(request)
    session_id = request.match_info["session_id"]
    # Looked up before the stream starts, so that an unknown session is a 404, not a stream.
    # Only the status is needed: not the whole session with its agent snapshot.
    status, _ = await session_store.status_of(client.pool, check_id("session", session_id))
    ended = status == "terminated"
    resume_after = request.headers.get("Last-Event-ID") or query_str(request, "last_event_id")
    async with request.app[state.TAILS].follow(session_id) as tail:
        # Following first, then the starting point read: an event recorded in between is both
        # after the starting point and read by the tail.
        if resume_after:
            position = await client.event_position(session_id, resume_after)
        else:
            position = await client.last_position(session_id)
        return await send_stream(request, tail, position, ended)


async def send_stream(
    request: web.Request, tail: Tail, position: int, ended: bool, last: str = TERMINATED
) -> web.StreamResponse:
    """The server-sent stream of a log (a session's, or a thread's) after `position`."""
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
        await _send_frames(request, response, tail, position, ended, last)
    return response


async def _send_frames(
    request: web.Request,
    response: web.StreamResponse,
    tail: Tail,
    position: int,
    ended: bool,
    last: str,
) -> None:
    """Frames after `position` as they are recorded, until the log's `last` event type (the
    session's, or a thread's, terminated status)."""
    pool = request.app[state.CLIENT].pool
    keepalive = request.app[state.KEEPALIVE_SECONDS]
    while True:
        waiter = tail.waiter
        frames = tail.since(position)
        if frames is None:  # further back than the tail keeps: read from the log
            found, _ = await event_store.list_events(
                pool, tail.session_id, after_position=position, limit=CATCH_UP_BATCH
            )
            frames = frames_after(position, found)
        for frame in frames:
            await response.write(frame.data)
            position = frame.position
            if frame.type == last:
                await response.write_eof()
                return
        if frames:
            continue
        if ended:  # terminated before the stream began: what it holds has been sent
            await response.write_eof()
            return
        if not await tail.changed(waiter, keepalive):
            await response.write(PING)
