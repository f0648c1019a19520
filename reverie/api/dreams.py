"""`/v1/dreams` in the SDK's wire format (`client.beta.dreams`), and Reverie's own review and
schedule routes under `/v1/reverie/` (the hosted API has neither):

- `GET  /v1/reverie/dreams/{id}/diff[?content=false]`: per path added / modified / removed, the
  content diff and the supporting sessions; and the operations the dream dropped, with why.
- `POST /v1/reverie/dreams/{id}/apply`: write a `create_new` result into the input store.
- `POST /v1/reverie/dreams/{id}/discard`: archive a `create_new` result's store.
- `POST /v1/reverie/dreams/{id}/revert`: restore what the dream (or applying it) changed.
- `POST|GET /v1/reverie/dream_schedules`, `GET|DELETE /v1/reverie/dream_schedules/{id}`,
  `POST /v1/reverie/dream_schedules/{id}/pause|resume|trigger`.
"""

from __future__ import annotations

from aiohttp import web

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
DREAM = "/v1/dreams/{dream_id}"
OWN = "/v1/reverie/dreams/{dream_id}"
SCHEDULES = "/v1/reverie/dream_schedules"
SCHEDULE = SCHEDULES + "/{schedule_id}"


def _id(request: web.Request) -> str:
    return request.match_info["dream_id"]


def _schedule_id(request: web.Request) -> str:
    return request.match_info["schedule_id"]


@routes.post("/v1/dreams")
async def create(request: web.Request) -> web.Response:
    return respond(await client_of(request).create_dream(await json_body(request)))


@routes.get("/v1/dreams")
async def list_dreams(request: web.Request) -> web.Response:
    page = await client_of(request).list_dreams(
        limit=query_int(request, "limit", 20),
        page=query_str(request, "page"),
        include_archived=query_bool(request, "include_archived"),
        statuses=query_list(request, "statuses"),
        created_at_gt=query_time(request, "created_at_gt"),
        created_at_lt=query_time(request, "created_at_lt"),
    )
    return respond(page)


@routes.get(DREAM)
async def retrieve(request: web.Request) -> web.Response:
    return respond(await client_of(request).get_dream(_id(request)))


@routes.post(DREAM + "/archive")
async def archive(request: web.Request) -> web.Response:
    return respond(await client_of(request).archive_dream(_id(request)))


@routes.post(DREAM + "/cancel")
async def cancel(request: web.Request) -> web.Response:
    return respond(await client_of(request).cancel_dream(_id(request)))


# ---- Reverie's own: review -----------------------------------------------------------------------


@routes.get(OWN + "/diff")
async def diff(request: web.Request) -> web.Response:
    content = query_bool(request, "content", True)
    return respond(await client_of(request).dream_diff(_id(request), content=content))


@routes.post(OWN + "/apply")
async def apply(request: web.Request) -> web.Response:
    return respond(await client_of(request).apply_dream(_id(request)))


@routes.post(OWN + "/discard")
async def discard(request: web.Request) -> web.Response:
    return respond(await client_of(request).discard_dream(_id(request)))


@routes.post(OWN + "/revert")
async def revert(request: web.Request) -> web.Response:
    return respond(await client_of(request).revert_dream(_id(request)))


# ---- Reverie's own: schedules --------------------------------------------------------------------


@routes.post(SCHEDULES)
async def create_schedule(request: web.Request) -> web.Response:
    return respond(await client_of(request).create_dream_schedule(await json_body(request)))


@routes.get(SCHEDULES)
async def list_schedules(request: web.Request) -> web.Response:
    found = await client_of(request).list_dream_schedules()
    return respond({"data": [s.model_dump(mode="json") for s in found], "next_page": None})


@routes.get(SCHEDULE)
async def describe_schedule(request: web.Request) -> web.Response:
    return respond(await client_of(request).describe_dream_schedule(_schedule_id(request)))


@routes.delete(SCHEDULE)
async def delete_schedule(request: web.Request) -> web.Response:
    return respond(await client_of(request).delete_dream_schedule(_schedule_id(request)))


@routes.post(SCHEDULE + "/pause")
async def pause_schedule(request: web.Request) -> web.Response:
    return respond(await client_of(request).pause_dream_schedule(_schedule_id(request)))


@routes.post(SCHEDULE + "/resume")
async def resume_schedule(request: web.Request) -> web.Response:
    client = client_of(request)
    return respond(await client.pause_dream_schedule(_schedule_id(request), paused=False))


@routes.post(SCHEDULE + "/trigger")
async def trigger_schedule(request: web.Request) -> web.Response:
    return respond(await client_of(request).trigger_dream_schedule(_schedule_id(request)))
