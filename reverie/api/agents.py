"""`/v1/agents`: create, retrieve (any version), update, list, archive, versions."""

from __future__ import annotations

from aiohttp import web

from reverie.api.http import json_body, query_bool, query_int, query_str, query_time, respond
from reverie.api.state import client_of

routes = web.RouteTableDef()


@routes.post("/v1/agents")
async def create(request: web.Request) -> web.Response:
    return respond(await client_of(request).create_agent(await json_body(request)))


@routes.get("/v1/agents")
async def list_agents(request: web.Request) -> web.Response:
    page = await client_of(request).list_agents(
        limit=query_int(request, "limit", 20),
        page=query_str(request, "page"),
        include_archived=query_bool(request, "include_archived"),
        created_at_gte=query_time(request, "created_at_gte"),
        created_at_lte=query_time(request, "created_at_lte"),
    )
    return respond(page)


@routes.get("/v1/agents/{agent_id}")
async def retrieve(request: web.Request) -> web.Response:
    agent_id = request.match_info["agent_id"]
    return respond(await client_of(request).get_agent(agent_id, query_int(request, "version")))


@routes.post("/v1/agents/{agent_id}")
async def update(request: web.Request) -> web.Response:
    agent_id = request.match_info["agent_id"]
    return respond(await client_of(request).update_agent(agent_id, await json_body(request)))


@routes.post("/v1/agents/{agent_id}/archive")
async def archive(request: web.Request) -> web.Response:
    return respond(await client_of(request).archive_agent(request.match_info["agent_id"]))


@routes.get("/v1/agents/{agent_id}/versions")
async def versions(request: web.Request) -> web.Response:
    page = await client_of(request).list_agent_versions(
        request.match_info["agent_id"],
        limit=query_int(request, "limit", 20),
        page=query_str(request, "page"),
    )
    return respond(page)
