"""Where tools start child processes: on an event loop of asyncio's own, in a thread of its own.

Workers run on uvloop (reverie/event_loop.py), whose children keep every descriptor the worker
holds that is not close-on-exec, and copies uvloop makes of the child's own stdio: a command one
session's agent runs could then write into another session's pipe or read its sandbox files.
asyncio's own subprocess support starts children with `close_fds` (a child holds its stdio and
its `pass_fds`, nothing else), so tools start, read and wait for their children there. On a
worker already running on asyncio's loop, nothing moves.

A cancelled caller returns only once the work has ended there, its cleanup (killing the process
group, reaping it) included: the caller then closes what the child was given (sandbox files,
the egress proxy), and a descriptor number freed early could be another session's by the time
the child started.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def _process_loop() -> asyncio.AbstractEventLoop:
    """The loop, started on first use; started again if its thread ever ended."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.SelectorEventLoop()  # asyncio's own, whatever the process uses
            ready = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                try:
                    loop.run_forever()
                finally:  # whatever ended it, the next call starts a new one
                    loop.close()

            threading.Thread(target=serve, name="reverie-processes", daemon=True).start()
            ready.wait()
            _loop = loop
        return _loop


def uses_own_loop() -> bool:
    """Whether the running loop is not asyncio's own (children must start elsewhere)."""
    return not isinstance(asyncio.get_running_loop(), asyncio.BaseEventLoop)


def from_any_thread(callback: Callable[[], None]) -> Callable[[], None]:
    """`callback` made callable from the process loop's thread: it runs on the caller's loop,
    in the caller's context (an activity's heartbeat needs both); dropped once that loop closed."""
    if not uses_own_loop():
        return callback
    loop = asyncio.get_running_loop()
    context = contextvars.copy_context()

    def call() -> None:
        with contextlib.suppress(RuntimeError):  # the worker's loop closed (shutting down)
            loop.call_soon_threadsafe(context.run, callback)

    return call


def _settle(task: asyncio.Task[T], outcome: asyncio.Future[T]) -> None:
    if outcome.done():
        return
    if task.cancelled():
        outcome.cancel()
    elif (error := task.exception()) is not None:
        outcome.set_exception(error)
    else:
        outcome.set_result(task.result())


async def on_process_loop(work: Coroutine[Any, Any, T]) -> T:
    """Run `work` (which starts and awaits a child) where children start safely, and answer what
    it answers. A cancel of the caller cancels `work` there and waits for its end."""
    if not uses_own_loop():
        return await work
    caller = asyncio.get_running_loop()
    outcome: asyncio.Future[T] = caller.create_future()
    loop = _process_loop()
    started: list[asyncio.Task[T]] = []

    def start() -> None:
        task = loop.create_task(work)
        started.append(task)
        task.add_done_callback(lambda t: caller.call_soon_threadsafe(_settle, t, outcome))

    loop.call_soon_threadsafe(start)
    try:
        return await asyncio.shield(outcome)
    except asyncio.CancelledError:
        # Runs after `start` (callbacks run in the order they were given).
        loop.call_soon_threadsafe(lambda: started[0].cancel())
        while not outcome.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(outcome)
        if not outcome.cancelled():
            outcome.exception()  # retrieved: the caller's cancel is what it hears
        raise
