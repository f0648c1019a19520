"""`/v1/memory_stores` (stores, their memories and memory versions) and the memory store
resources of sessions (`/v1/sessions/{id}/resources`), in the SDK's wire format.

Every write is attributed to the API key that authenticated the request (`api_actor`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from reverie.api.errors import ApiError
from reverie.api.http import json_body, query_bool, query_int, query_str, query_time, respond
from reverie.api.state import API_KEY, client_of
from reverie.models.common import Page
from reverie.models.memory import ApiActor

routes = web.RouteTableDef()
STORE = "/v1/memory_stores/{memory_store_id}"


def _actor(request: web.Request) -> dict[str, Any]:
    return ApiActor(api_key_id=request[API_KEY].id).model_dump()


def _store_id(request: web.Request) -> str:
    return request.match_info["memory_store_id"]


# ---- stores --------------------------------------------------------------------------------------


@routes.post("/v1/memory_stores")
async def create_store(request: web.Request) -> web.Response:
    return respond(await client_of(request).create_memory_store(await json_body(request)))


@routes.get("/v1/memory_stores")
async def list_stores(request: web.Request) -> web.Response:
    page = await client_of(request).list_memory_stores(
        limit=query_int(request, "limit", 20),
        page=query_str(request, "page"),
        include_archived=query_bool(request, "include_archived"),
        created_at_gte=query_time(request, "created_at_gte"),
        created_at_lte=query_time(request, "created_at_lte"),
    )
    return respond(page)


@routes.get(STORE)
async def retrieve_store(request: web.Request) -> web.Response:
    return respond(await client_of(request).get_memory_store(_store_id(request)))


@routes.post(STORE)
async def update_store(request: web.Request) -> web.Response:
    body = await json_body(request)
    return respond(await client_of(request).update_memory_store(_store_id(request), body))


@routes.post(STORE + "/archive")
async def archive_store(request: web.Request) -> web.Response:
    return respond(await client_of(request).archive_memory_store(_store_id(request)))


@routes.delete(STORE)
async def delete_store(request: web.Request) -> web.Response:
    return respond(await client_of(request).delete_memory_store(_store_id(request)))


# ---- memories ------------------------------------------------------------------------------------


@routes.post(STORE + "/memories")
async def create_memory(request: web.Request) -> web.Response:
    body = await json_body(request)
    memory = await client_of(request).create_memory(
        _store_id(request), body, view=query_str(request, "view"), actor=_actor(request)
    )
    return respond(memory)


@routes.get(STORE + "/memories")
async def list_memories(request: web.Request) -> web.Response:
    page = await client_of(request).list_memories(
        _store_id(request),
        path_prefix=query_str(request, "path_prefix"),
        depth=query_int(request, "depth"),
        view=query_str(request, "view"),
        limit=query_int(request, "limit", 20),
        page=query_str(request, "page"),
    )
    return respond(page)


@routes.get(STORE + "/memories/{memory_id}")
async def retrieve_memory(request: web.Request) -> web.Response:
    memory = await client_of(request).get_memory(
        _store_id(request), request.match_info["memory_id"], view=query_str(request, "view")
    )
    return respond(memory)


@routes.post(STORE + "/memories/{memory_id}")
async def update_memory(request: web.Request) -> web.Response:
    body = await json_body(request)
    memory = await client_of(request).update_memory(
        _store_id(request),
        request.match_info["memory_id"],
        body,
        view=query_str(request, "view"),
        actor=_actor(request),
    )
    return respond(memory)


@routes.delete(STORE + "/memories/{memory_id}")
async def delete_memory(request: web.Request) -> web.Response:
    deleted = await client_of(request).delete_memory(
        _store_id(request),
        request.match_info["memory_id"],
        expected_content_sha256=query_str(request, "expected_content_sha256"),
        actor=_actor(request),
    )
    return respond(deleted)


# ---- versions ------------------------------------------------------------------------------------


@routes.get(STORE + "/memory_versions")
async def list_versions(request: web.Request) -> web.Response:
    page = await client_of(request).list_memory_versions(
        _store_id(request),
        memory_id=query_str(request, "memory_id"),
        operation=query_str(request, "operation"),
        session_id=query_str(request, "session_id"),
        api_key_id=query_str(request, "api_key_id"),
        service_account_id=query_str(request, "service_account_id"),
        created_at_gte=query_time(request, "created_at_gte"),
        created_at_lte=query_time(request, "created_at_lte"),
        view=query_str(request, "view"),
        limit=query_int(request, "limit", 20),
        page=query_str(request, "page"),
    )
    return respond(page)


@routes.get(STORE + "/memory_versions/{memory_version_id}")
async def retrieve_version(request: web.Request) -> web.Response:
    version = await client_of(request).get_memory_version(
        _store_id(request),
        request.match_info["memory_version_id"],
        view=query_str(request, "view"),
    )
    return respond(version)


@routes.post(STORE + "/memory_versions/{memory_version_id}/redact")
async def redact_version(request: web.Request) -> web.Response:
    version = await client_of(request).redact_memory_version(
        _store_id(request), request.match_info["memory_version_id"], actor=_actor(request)
    )
    return respond(version)


# ---- session resources ---------------------------------------------------------------------------

RESOURCES = "/v1/sessions/{session_id}/resources"


@routes.get(RESOURCES)
async def list_resources(request: web.Request) -> web.Response:
    """A session's resources (its memory stores), all on one page: there are at most 8."""
    session = await client_of(request).get_session(request.match_info["session_id"])
    return respond(Page[dict[str, Any]](data=session.resources, next_page=None))


@routes.get(RESOURCES + "/{resource_id}")
async def retrieve_resource(request: web.Request) -> web.Response:
    """A memory store resource has no id of its own: it is named by its memory store's id."""
    session = await client_of(request).get_session(request.match_info["session_id"])
    wanted = request.match_info["resource_id"]
    for resource in session.resources:
        if wanted in (resource.get("id"), resource.get("memory_store_id")):
            return respond(resource)
    raise ApiError(
        "not_found_error", f"session {session.id} has no resource {wanted!r}", status=404
    )


@routes.route("*", RESOURCES)
@routes.route("*", RESOURCES + "/{resource_id}")
async def refuse_resource_change(request: web.Request) -> web.Response:
    raise ApiError(
        "invalid_request_error",
        "session resources are fixed when the session is created: memory stores are "
        "attached only then, and file resources are not supported yet",
    )
