"""The one `EventFeed` an API process's streams wait on."""

from __future__ import annotations

from reverie.connections import database_url
from reverie.service.client import ReverieClient
from reverie.store.event_feed import EventFeed


def make_feed(client: ReverieClient) -> EventFeed:
    """The client's own feed when it has one (shared with its follow/wait helpers), else one
    of the API's, on the client's database."""
    feed = getattr(client, "feed", None)
    return feed if isinstance(feed, EventFeed) else EventFeed(database_url(client.settings))
