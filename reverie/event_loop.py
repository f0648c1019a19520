"""The event loop every Reverie process runs on: uvloop by default, asyncio's own on request.

A worker's time between model calls is mostly event-loop work (sockets to PostgreSQL, Temporal's
bridge, the model's HTTP, timers): uvloop does it in C, about a tenth of a session's CPU less in
`bench/session_overhead.py` (c) (bench/README.md). `REVERIE_EVENT_LOOP=asyncio` goes back to
the standard loop, e.g. to debug with asyncio's own tools. The choice is read before any loop
exists, so from the environment alone, not from a settings file the process loads later.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar, get_args

T = TypeVar("T")

EventLoopChoice = Literal["uvloop", "asyncio"]
EVENT_LOOP_VARIABLE = "REVERIE_EVENT_LOOP"

log = logging.getLogger(__name__)


def chosen() -> EventLoopChoice:
    value = os.environ.get(EVENT_LOOP_VARIABLE, "uvloop").strip().lower() or "uvloop"
    if value not in get_args(EventLoopChoice):
        raise SystemExit(f"{EVENT_LOOP_VARIABLE} must be uvloop or asyncio, not {value!r}")
    return value  # type: ignore[return-value]


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when chosen and installed; None: asyncio's default loop."""
    if chosen() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # a platform without its wheel (Windows): the standard loop works too
        log.info("uvloop is not installed; running on asyncio's own event loop")
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
