"""What an API application and its requests carry, as typed keys."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from reverie.models.keys import ApiKey
from reverie.service.client import ReverieClient

CLIENT = web.AppKey("client", ReverieClient)
KEY_CHECKER = web.AppKey("key_checker", Any)  # auth.KeyChecker (imported there, not here)
FEED = web.AppKey("feed", Any)  # store.event_feed.EventFeed, or one with its interface
TAILS = web.AppKey("tails", Any)  # api.tails.Tails: one reader per session with streams
MAX_BODY_BYTES = web.AppKey("max_body_bytes", int)
KEEPALIVE_SECONDS = web.AppKey("keepalive_seconds", float)

REQUEST_ID = web.RequestKey("request_id", str)
API_KEY = web.RequestKey("api_key", ApiKey)


def client_of(request: web.Request) -> ReverieClient:
    """The shared service client every route calls."""
    return request.app[CLIENT]
