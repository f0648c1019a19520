"""`/v1/environments`: create, retrieve, update, list, archive, delete."""

from __future__ import annotations

from aiohttp import web

from reverie.api.http import json_body, query_bool, query_int, query_str, respond
from reverie.api.state import client_of

routes = web.RouteTableDef()


@routes.post("/v1/environments")
async def create(request: web.Request) -> web.Response:
    return respond(await client_of(request).create_environment(await json_body(request)))


@routes.get("/v1/environments")
async def list_environments(request: web.Request) -> web.Response:
    page = await client_of(request).list_environments(
        limit=query_int(request, "limit", 20),
        page=query_str(request, "page"),
        include_archived=query_bool(request, "include_archived"),
    )
    return respond(page)


@routes.get("/v1/environments/{environment_id}")
async def retrieve(request: web.Request) -> web.Response:
    return respond(await client_of(request).get_environment(request.match_info["environment_id"]))


@routes.post("/v1/environments/{environment_id}")
async def update(request: web.Request) -> web.Response:
    environment_id = request.match_info["environment_id"]
    body = await json_body(request)
    return respond(await client_of(request).update_environment(environment_id, body))


@routes.post("/v1/environments/{environment_id}/archive")
async def archive(request: web.Request) -> web.Response:
    environment_id = request.match_info["environment_id"]
    return respond(await client_of(request).archive_environment(environment_id))


@routes.delete("/v1/environments/{environment_id}")
async def delete(request: web.Request) -> web.Response:
    environment_id = request.match_info["environment_id"]
    await client_of(request).delete_environment(environment_id)
    return respond({"id": environment_id, "type": "environment_deleted"})
