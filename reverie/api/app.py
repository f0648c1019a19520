"""The HTTP API: the hosted Managed Agents wire format, so the official SDKs drive Reverie.

Built on aiohttp's server, already a dependency (the SDK's own async transport can use it) and
well kept; it streams server-sent events with back-pressure and needs no ASGI layer. An API
process holds nothing another needs: every answer is read from PostgreSQL or Temporal, the key
cache only remembers verifications for seconds, and streams resume from the log by event id.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from aiohttp import web

from reverie.api import (
    agents,
    codec,
    dreams,
    environments,
    events,
    memory,
    sessions,
    state,
    threads,
    unsupported,
    webhooks,
)
from reverie.api.auth import KeyChecker, auth_middleware
from reverie.api.codec import codec_cors_middleware
from reverie.api.errors import Handler, error_middleware
from reverie.api.feed import make_feed
from reverie.api.tails import Tails
from reverie.observability.tracing import observe_requests
from reverie.service.client import ReverieClient

log = logging.getLogger("reverie.api")

# Largest request body: 50 events of at most 256 KiB each, with room for their JSON framing.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
# A stream with nothing to say sends a ping this often, so proxies keep it open.
DEFAULT_KEEPALIVE_SECONDS = 15.0


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[state.REQUEST_ID] = f"req_{uuid.uuid4().hex}"
    return await handler(request)


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer, errors and streams included (this runs as headers are sent)."""
    response.headers["request-id"] = request.get(state.REQUEST_ID) or f"req_{uuid.uuid4().hex}"


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def build_app(
    client: ReverieClient,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS,
    max_streams: int | None = None,
    feed: Any = None,
) -> web.Application:
    max_streams = client.settings.api_max_streams if max_streams is None else max_streams
    app = web.Application(
        client_max_size=max_body_bytes,
        # observe_requests: a span and a duration per request (issue 21), outside the error
        # middleware so that it sees the status actually sent.
        # codec_cors_middleware: the codec server's CORS preflight, answered before auth.
        middlewares=[
            request_id_middleware,
            observe_requests,
            codec_cors_middleware,
            error_middleware,
            auth_middleware,
        ],
    )
    app[state.CLIENT] = client
    app[state.KEY_CHECKER] = KeyChecker(client.pool)
    app[state.FEED] = feed or make_feed(client)
    app[state.TAILS] = Tails(client.pool, app[state.FEED], max_streams)
    app[state.MAX_BODY_BYTES] = max_body_bytes
    app[state.KEEPALIVE_SECONDS] = keepalive_seconds
    app.on_response_prepare.append(_add_request_id)
    for module in (agents, environments, sessions, events, threads, memory, webhooks, dreams):
        app.router.add_routes(module.routes)
    app.router.add_routes(codec.routes)  # the Web UI's codec server (issue 21)
    unsupported.add_routes(app)
    app.router.add_get("/healthz", healthz)

    own_feed = app[state.FEED] is not getattr(client, "feed", None)

    async def close_feed(_: web.Application) -> None:
        app[state.TAILS].close()
        if own_feed:
            await app[state.FEED].close()

    app.on_cleanup.append(close_feed)
    return app


async def start_api(
    client: ReverieClient, host: str, port: int, **options: Any
) -> tuple[web.AppRunner, str]:
    """Serve the API on host:port until the runner is cleaned up; answers the base URL."""
    # handler_cancellation: a client that goes away cancels its handler at once, so an
    # abandoned stream frees its place (and its share of a tail) without waiting for a write.
    runner = web.AppRunner(
        build_app(client, **options),
        access_log=None,
        shutdown_timeout=1.0,
        handler_cancellation=True,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    shown = f"[{host}]" if ":" in host else host
    return runner, f"http://{shown}:{bound}"
