"""`/v1/sessions`: create (with `initial_events`), retrieve, update, list, archive, delete."""

from __future__ import annotations

from typing import Literal, cast

from aiohttp import web

from reverie.api.errors import ApiError
from reverie.api.http import (
    json_body,
    query_bool,
    query_int,
    query_list,
    query_str,
    query_time,
    respond,
)
from reverie.api.state import client_of

routes = web.RouteTableDef()


def order_of(request: web.Request, default: Literal["asc", "desc"]) -> Literal["asc", "desc"]:
    order = query_str(request, "order") or default
    if order not in ("asc", "desc"):
        raise ApiError("invalid_request_error", f"order must be asc or desc, not {order!r}")
    return cast(Literal["asc", "desc"], order)


@routes.post("/v1/sessions")
async def create(request: web.Request) -> web.Response:
    return respond(await client_of(request).create_session(await json_body(request)))


@routes.get("/v1/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    client = client_of(request)
    if query_str(request, "memory_store_id") or query_str(request, "deployment_id"):
        # Reverie has no memory stores or deployments yet, so no session can match.
        return respond({"data": [], "next_page": None})
    page = await client.list_sessions(
        limit=query_int(request, "limit", 20),
        page=query_str(request, "page"),
        agent_id=query_str(request, "agent_id"),
        agent_version=query_int(request, "agent_version"),
        statuses=query_list(request, "statuses"),
        include_archived=query_bool(request, "include_archived"),
        order=order_of(request, "desc"),
        created_at_gt=query_time(request, "created_at_gt"),
        created_at_gte=query_time(request, "created_at_gte"),
        created_at_lt=query_time(request, "created_at_lt"),
        created_at_lte=query_time(request, "created_at_lte"),
    )
    return respond(page)


@routes.get("/v1/sessions/{session_id}")
async def retrieve(request: web.Request) -> web.Response:
    return respond(await client_of(request).get_session(request.match_info["session_id"]))


@routes.post("/v1/sessions/{session_id}")
async def update(request: web.Request) -> web.Response:
    session_id = request.match_info["session_id"]
    return respond(await client_of(request).update_session(session_id, await json_body(request)))


@routes.post("/v1/sessions/{session_id}/archive")
async def archive(request: web.Request) -> web.Response:
    return respond(await client_of(request).archive_session(request.match_info["session_id"]))


@routes.delete("/v1/sessions/{session_id}")
async def delete(request: web.Request) -> web.Response:
    session_id = request.match_info["session_id"]
    await client_of(request).delete_session(session_id)
    return respond({"id": session_id, "type": "session_deleted"})
