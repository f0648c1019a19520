"""`ReverieClient`, where user code has always imported it from.

The client itself lives in `reverie.service.client`, below both the command line and the HTTP
API, so that they share one implementation of every operation (ARCHITECTURE: `api/` never
imports `starter/`).
"""

from reverie.service.client import SETTLED_EVENTS, ReverieClient

__all__ = ["SETTLED_EVENTS", "ReverieClient"]
