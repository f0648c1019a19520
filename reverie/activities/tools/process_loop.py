"""Where tools start child processes: on an event loop of asyncio's own, in a thread of its own.

Workers run on uvloop (reverie/event_loop.py), whose children keep every descriptor the worker
holds that is not close-on-exec, and copies uvloop makes of the child's own stdio: a command one
session's agent runs could then write into another session's pipe or read its sandbox files.
asyncio's own subprocess support starts children with `close_fds` (a child holds its stdio and
its `pass_fds`, nothing else), so tools start, read and wait for their children there. On a
worker already running on asyncio's loop, nothing moves.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _process_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.SelectorEventLoop()  # asyncio's own, whatever the process uses
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            threading.Thread(target=serve, name="reverie-processes", daemon=True).start()
            ready.wait()
            _loop = loop
        return _loop


def uses_own_loop() -> bool:
    """Whether the running loop is not asyncio's own (children must start elsewhere)."""
    return not isinstance(asyncio.get_running_loop(), asyncio.BaseEventLoop)


def from_any_thread(callback: Callable[[], None]) -> Callable[[], None]:
    """`callback` made callable from the process loop's thread: it runs on the caller's loop,
    in the caller's context (an activity's heartbeat needs both)."""
    if not uses_own_loop():
        return callback
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()
    return lambda: loop.call_soon_threadsafe(context.run, callback)


async def on_process_loop(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` (which starts and awaits a child) where children start safely. A cancel of
    the caller cancels `work` there; its own cleanup (killing and reaping) then runs there."""
    if not uses_own_loop():
        return await work
    future = asyncio.run_coroutine_threadsafe(work, _process_loop())
    return await asyncio.wrap_future(future)
