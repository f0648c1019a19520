"""The codec server: the Temporal Web UI (or `temporal` CLI) sends sealed payloads here and gets
them back readable, so that people holding an API key can read histories Reverie encrypted.

`POST /codec/decode` and `POST /codec/encode` take and answer `{"payloads": [...]}` in Temporal's
JSON form. They need an API key like every route (the Web UI sends its access token as
`Authorization: Bearer`: configure the key there). Browsers may call them from the origins in
REVERIE_CODEC_CORS_ORIGINS only; the CORS preflight needs no key, and answers nothing else.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from reverie.api.errors import ApiError, Handler
from reverie.api.http import json_body
from reverie.api.state import client_of
from reverie.payload_codec import EncryptionCodec, PayloadKeyError

PREFIX = "/codec/"
MAX_PAYLOADS = 1000
routes = web.RouteTableDef()


def allowed_origins(request: web.Request) -> set[str]:
    text = client_of(request).settings.codec_cors_origins
    return {o.strip().rstrip("/") for o in text.split(",") if o.strip()}


def _cors_headers(origin: str) -> dict[str, str]:
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": "Content-Type, Authorization, X-Namespace, X-Api-Key",
        "Access-Control-Max-Age": "600",
        "Vary": "Origin",
    }


@web.middleware
async def codec_cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answers the preflight before authentication (browsers send it without credentials) and
    puts CORS headers on the codec routes' answers, refusals included, for allowed origins."""
    if not request.path.startswith(PREFIX):
        return await handler(request)
    origin = request.headers.get("Origin")
    allowed = origin is not None and origin.rstrip("/") in allowed_origins(request)
    if request.method == "OPTIONS":
        if not allowed:
            return web.Response(status=403, text="origin not allowed")
        return web.Response(status=204, headers=_cors_headers(origin or ""))
    response = await handler(request)
    if allowed:
        response.headers.update(_cors_headers(origin or ""))
    return response


def _codec(request: web.Request) -> EncryptionCodec:
    codec = client_of(request).temporal.data_converter.payload_codec
    if not isinstance(codec, EncryptionCodec):
        raise ApiError(
            "not_found_error", "payload encryption is not turned on (REVERIE_PAYLOAD_KEYS)"
        )
    return codec


async def _payloads(request: web.Request) -> Payloads:
    body: Any = await json_body(request)  # not JSON, or nested too deeply: refused, naming why
    try:
        if not isinstance(body.get("payloads"), list):
            raise ValueError('the body must be {"payloads": [...]}')
        if len(body["payloads"]) > MAX_PAYLOADS:
            raise ValueError(f"at most {MAX_PAYLOADS} payloads at once")
        return json_format.ParseDict(body, Payloads())
    except (ValueError, json_format.ParseError) as error:
        raise ApiError("invalid_request_error", f"not a list of payloads: {error}") from None


def _answer(payloads: list[Any]) -> web.Response:
    return web.json_response(
        json_format.MessageToDict(Payloads(payloads=payloads)) or {"payloads": []}
    )


@routes.post("/codec/decode")
async def decode(request: web.Request) -> web.Response:
    codec = _codec(request)
    payloads = await _payloads(request)
    try:
        return _answer(await codec.decode(payloads.payloads))
    except PayloadKeyError as error:
        raise ApiError("invalid_request_error", str(error)) from None


@routes.post("/codec/encode")
async def encode(request: web.Request) -> web.Response:
    codec = _codec(request)
    payloads = await _payloads(request)
    return _answer(await codec.encode(payloads.payloads))
