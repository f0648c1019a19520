"""Keep the caller's heartbeat going while a slow awaitable runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
HEARTBEAT_SECONDS = 1.0


async def with_heartbeat(work: Awaitable[T], heartbeat: Callable[[], None]) -> T:
    """Await `work`, calling `heartbeat` about every second; cancelling this cancels `work`."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_SECONDS)
            if done:
                return task.result()
            heartbeat()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
