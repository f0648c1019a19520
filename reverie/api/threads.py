"""`/v1/sessions/{id}/threads`: a session's threads (issue 18), as the SDK's
`client.beta.sessions.threads` calls them: list, retrieve, archive, and each thread's events
(list and server-sent stream). The primary thread's events are the session's own."""

from __future__ import annotations

from aiohttp import web

from reverie.api import state
from reverie.api.errors import ApiError
from reverie.api.events import send_stream
from reverie.api.http import query_int, query_list, query_str, respond
from reverie.api.state import client_of
from reverie.api.tails import TERMINATED

THREAD_TERMINATED = "session.thread_status_terminated"

routes = web.RouteTableDef()


@routes.get("/v1/sessions/{session_id}/threads")
async def list_threads(request: web.Request) -> web.Response:
    page = await client_of(request).list_threads(
        request.match_info["session_id"],
        limit=query_int(request, "limit", 1000),
        page=query_str(request, "page"),
    )
    statuses = query_list(request, "statuses")
    if statuses:
        page.data = [t for t in page.data if t.status in statuses]
    return respond(page)


@routes.get("/v1/sessions/{session_id}/threads/{thread_id}")
async def retrieve(request: web.Request) -> web.Response:
    found = await client_of(request).get_thread(
        request.match_info["session_id"], request.match_info["thread_id"]
    )
    return respond(found)


@routes.post("/v1/sessions/{session_id}/threads/{thread_id}/archive")
async def archive(_: web.Request) -> web.Response:
    raise ApiError(
        "invalid_request_error",
        "archiving a single thread is not supported yet: archive the session, which ends all "
        "of its threads",
    )


@routes.get("/v1/sessions/{session_id}/threads/{thread_id}/events")
async def list_events(request: web.Request) -> web.Response:
    page = await client_of(request).thread_events_page(
        request.match_info["session_id"],
        request.match_info["thread_id"],
        limit=query_int(request, "limit", 20),
        page=query_str(request, "page"),
    )
    return respond(page)


@routes.get("/v1/sessions/{session_id}/threads/{thread_id}/stream")
async def stream(request: web.Request) -> web.StreamResponse:
    """From the thread's newest event on (or after `Last-Event-ID`), as the session's stream:
    it ends with the thread's terminated status (at once after what it holds, if ended)."""
    client = client_of(request)
    session_id, thread_id = request.match_info["session_id"], request.match_info["thread_id"]
    thread = await client.get_thread(session_id, thread_id)
    log = await client.thread_log(session_id, thread_id)
    # A subagent's log ends with its own terminated status; the primary's is the session's,
    # which also holds the subagents' (cross-posted), so only the session's own ends it.
    last = TERMINATED if log == session_id else THREAD_TERMINATED
    resume_after = request.headers.get("Last-Event-ID") or query_str(request, "last_event_id")
    async with request.app[state.TAILS].follow(log) as tail:
        if resume_after:
            position = await client.event_position_in(log, resume_after)
        else:
            position = await client.last_log_position(log)
        return await send_stream(request, tail, position, thread.status == "terminated", last)
