"""`/v1/organizations/webhooks`: webhook endpoints as the SDK manages them (create, retrieve,
update, list, delete, regenerate_signing_secret), and Reverie's additions under each endpoint:
`test`, `deliveries` (list, retrieve with every attempt) and `redeliver`."""

from __future__ import annotations

from aiohttp import web

from reverie.api.errors import ApiError
from reverie.api.http import json_body, query_int, query_str, respond
from reverie.api.state import API_KEY, client_of

routes = web.RouteTableDef()
BASE = "/v1/organizations/webhooks"


def _actor(request: web.Request) -> str:
    key = request.get(API_KEY)
    return f"api_key:{key.id}" if key is not None else ""


@routes.post(BASE)
async def create(request: web.Request) -> web.Response:
    body = await json_body(request)
    return respond(await client_of(request).create_webhook(body, created_by=_actor(request)))


@routes.get(BASE)
async def list_endpoints(request: web.Request) -> web.Response:
    page = await client_of(request).list_webhooks(
        limit=query_int(request, "limit"),
        after_id=query_str(request, "after_id"),
        before_id=query_str(request, "before_id"),
        order=query_str(request, "order"),
    )
    return respond(page)


@routes.get(BASE + "/{endpoint_id}")
async def retrieve(request: web.Request) -> web.Response:
    return respond(await client_of(request).get_webhook(request.match_info["endpoint_id"]))


@routes.post(BASE + "/{endpoint_id}")
async def update(request: web.Request) -> web.Response:
    body = await json_body(request)
    return respond(await client_of(request).update_webhook(request.match_info["endpoint_id"], body))


@routes.delete(BASE + "/{endpoint_id}")
async def delete(request: web.Request) -> web.Response:
    return respond(await client_of(request).delete_webhook(request.match_info["endpoint_id"]))


@routes.post(BASE + "/{endpoint_id}/regenerate_signing_secret")
async def regenerate_signing_secret(request: web.Request) -> web.Response:
    """The SDK sends no body; Reverie reads an optional `grace_period_seconds` (how long the old
    secret keeps signing too; default REVERIE_WEBHOOK_ROTATION_GRACE_SECONDS, 0: none)."""
    body = await json_body(request)
    unknown = sorted(set(body) - {"grace_period_seconds"})
    if unknown:
        raise ApiError("invalid_request_error", f"unknown fields: {', '.join(unknown)}")
    answer = await client_of(request).regenerate_webhook_secret(
        request.match_info["endpoint_id"], grace_seconds=body.get("grace_period_seconds")
    )
    return respond(answer)


@routes.post(BASE + "/{endpoint_id}/test")
async def test(request: web.Request) -> web.Response:
    return respond(await client_of(request).test_webhook(request.match_info["endpoint_id"]))


@routes.get(BASE + "/{endpoint_id}/deliveries")
async def deliveries(request: web.Request) -> web.Response:
    page = await client_of(request).list_webhook_deliveries(
        request.match_info["endpoint_id"],
        limit=query_int(request, "limit"),
        page=query_str(request, "page"),
        state=query_str(request, "state"),
        event_id=query_str(request, "event_id"),
    )
    return respond(page)


async def _delivery_of(request: web.Request) -> str:
    """The delivery named in the path, if it belongs to the endpoint named there."""
    endpoint_id = request.match_info["endpoint_id"]
    delivery_id = request.match_info["delivery_id"]
    delivery = await client_of(request).get_webhook_delivery(delivery_id)
    if delivery.endpoint_id != endpoint_id:
        raise ApiError(
            "not_found_error", f"webhook endpoint {endpoint_id} has no delivery {delivery_id!r}"
        )
    return delivery_id


@routes.get(BASE + "/{endpoint_id}/deliveries/{delivery_id}")
async def delivery(request: web.Request) -> web.Response:
    delivery_id = await _delivery_of(request)
    return respond(await client_of(request).get_webhook_delivery(delivery_id))


@routes.post(BASE + "/{endpoint_id}/deliveries/{delivery_id}/redeliver")
async def redeliver(request: web.Request) -> web.Response:
    delivery_id = await _delivery_of(request)
    return respond(await client_of(request).redeliver_webhook(delivery_id))
