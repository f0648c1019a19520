"""Every API route needs a key, as `x-api-key` (what the SDKs send) or `Authorization: Bearer`.

Keys are checked against their stored digest (`store.keys.verify`, constant-time). A verified
key is remembered for `CACHE_SECONDS` so that a busy client costs no query per request; a
revoked key therefore stops working within that time on every API process.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from aiohttp import web

from reverie.api import state
from reverie.api.errors import ApiError, Handler
from reverie.models.keys import ApiKey
from reverie.store import keys
from reverie.store.pool import Pool

CACHE_SECONDS = 5.0
CACHE_SIZE = 4096
# Routes a load balancer probes; they reveal nothing and need no key.
OPEN_PATHS = frozenset({"/healthz"})


class KeyChecker:
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self._verified: dict[bytes, tuple[ApiKey, float]] = {}
        self._pending: dict[bytes, asyncio.Future[ApiKey | None]] = {}

    async def check(self, presented: str) -> ApiKey:
        fingerprint = hashlib.sha256(presented.encode()).digest()
        now = time.monotonic()
        cached = self._verified.get(fingerprint)
        if cached is not None and cached[1] > now:
            return cached[0]
        # Concurrent requests with one key share one verification (a busy client whose cache
        # entry expires would otherwise send a query per request in flight).
        pending = self._pending.get(fingerprint)
        if pending is None:
            pending = asyncio.ensure_future(keys.verify(self.pool, presented))
            self._pending[fingerprint] = pending
            pending.add_done_callback(lambda _: self._pending.pop(fingerprint, None))
        key = await asyncio.shield(pending)
        if key is None:
            self._verified.pop(fingerprint, None)
            raise ApiError("authentication_error", "invalid x-api-key")
        if len(self._verified) >= CACHE_SIZE:
            self._verified.clear()
        self._verified[fingerprint] = (key, now + CACHE_SECONDS)
        return key


def presented_key(request: web.Request) -> str | None:
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path in OPEN_PATHS:
        return await handler(request)
    presented = presented_key(request)
    if presented is None:
        raise ApiError(
            "authentication_error",
            "an API key is required: send it as the x-api-key header or as "
            "Authorization: Bearer <key> (create one with `reverie key create`)",
        )
    request[state.API_KEY] = await request.app[state.KEY_CHECKER].check(presented)
    return await handler(request)
