"""One PostgreSQL LISTEN per process, fanned out to everyone following a session's events.

Readers of a session's log (server-sent-event streams, `ReverieClient.follow_events` and
`wait_until_settled`) used to poll the database, each on its own: a thousand open streams were a
thousand queries every tenth of a second. Instead, every commit that appends events sends one
NOTIFY (see `events.append`), and each process keeps one dedicated connection that LISTENs and
rings the doorbells of the subscribers of that session.

A doorbell carries no events, only "something new was committed": the reader then reads the log
from its own last position (`events.list_events(after_position=...)`). That is what makes this
safe and cheap:
- nothing is lost: positions are gapless and allocated in commit order, so a read after a ring
  sees every event up to the one rung about (and any later ones);
- nothing piles up: rings coalesce (a slow reader that missed ten sees one), so no queue grows
  whatever the reader's speed;
- an outage loses nothing either: when the listening connection drops, notifications sent
  meanwhile are gone, so after reconnecting the feed rings every subscriber, who re-reads.

Readers should still re-read now and then without a ring (every few seconds), so that a
notification that never came (a bug, a writer outside `events.append`) costs latency, not events.

The listening connection is a plain connection to the same database, not one of the pool's: a
LISTEN belongs to a session, and a pooled connection would hand it to whoever acquires it next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from types import TracebackType

import asyncpg

from reverie.store.events import NOTIFY_CHANNEL

log = logging.getLogger(__name__)


def parse_notice(payload: str) -> tuple[str, int] | None:
    """(session id, position of its last event) from a notification's payload; None if it is
    not one of ours (anything may NOTIFY on a channel)."""
    session_id, _, position = payload.rpartition(" ")
    if not session_id or not position.isdigit():
        return None
    return session_id, int(position)


class Subscription:
    """One reader's doorbell for one session: enter it before the first read, then read, then
    `wait`, and read again from the last position after each ring.

    Rings coalesce into one flag: however many commits happened since the last `wait`, the next
    `wait` returns at once, and then blocks until the next ring. A ring may be spurious (the
    reader already read the rows it is about, or the feed reconnected): reading finds nothing
    new, which is cheap. One subscription serves one reader (one task waiting at a time).
    """

    __slots__ = ("_feed", "_rung", "_waiter", "latest", "session_id")

    def __init__(self, feed: EventFeed, session_id: str) -> None:
        self._feed = feed
        self.session_id = session_id
        self._rung = False
        self._waiter: asyncio.Future[None] | None = None
        # The highest position a notification named (a hint only; 0 while none came).
        self.latest = 0

    def _ring(self, position: int | None = None) -> None:
        if position is not None and position > self.latest:
            self.latest = position
        self._rung = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float | None = None) -> bool:
        """True once rung since the last `wait` (at once if it already was), False when
        `timeout` seconds pass without a ring; either way, then read the log."""
        if not self._rung:
            # One bare future, not an asyncio.Event: a subscriber costs next to nothing.
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._waiter
            except TimeoutError:
                if not self._rung:
                    return False
            finally:
                self._waiter = None
        self._rung = False
        return True

    async def __aenter__(self) -> Subscription:
        await self._feed._add(self)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._feed._remove(self)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> int:
        """Each ring, as the latest position heard of (a hint; read from your own position)."""
        await self.wait()
        return self.latest


class EventFeed:
    """The process's listener: `subscribe(session_id)` gives a `Subscription` to enter.

    Started on the first subscription; one dedicated connection from `database_url`. If that
    connection drops (or stops answering its periodic ping), it reconnects with backoff and,
    once listening again, rings every subscriber. `close()` stops it for good.
    """

    def __init__(
        self,
        database_url: str,
        *,
        channel: str = NOTIFY_CHANNEL,
        connect_timeout: float = 10.0,
        ping_seconds: float = 15.0,
        min_backoff: float = 0.05,
        max_backoff: float = 5.0,
    ) -> None:
        self._url = database_url
        self._channel = channel
        self._connect_timeout = connect_timeout
        self._ping_seconds = ping_seconds
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._subscribers: dict[str, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        # Set once the first attempt to listen has ended, whichever way it went.
        self._first_attempt = asyncio.Event()
        # Whether subscribers may have missed a notification (no connection was listening
        # while they read): the next successful LISTEN then rings them all.
        self._gap = False
        self._closed = False
        self.connects = 0  # successful LISTENs, the first one included
        self.notifications = 0  # notifications received on the channel

    # ---- subscribing -------------------------------------------------------------------------

    def subscribe(self, session_id: str) -> Subscription:
        """A doorbell for `session_id`'s new events; use it as `async with` (leaving removes it)."""
        return Subscription(self, session_id)

    async def _add(self, subscription: Subscription) -> None:
        if self._closed:
            raise RuntimeError("the event feed is closed")
        self._subscribers.setdefault(subscription.session_id, set()).add(subscription)
        try:
            if self._task is None:
                self._task = asyncio.create_task(self._run(), name="reverie-event-feed")
            if not self._first_attempt.is_set():
                # Only the very first subscribers wait, and only for the first attempt: were
                # their first read to happen before the LISTEN, a commit in between would go
                # unheard. If that attempt fails, they go on; the LISTEN that finally works
                # rings them (it closes the gap), and their slow re-reads cover the meantime.
                await self._first_attempt.wait()
        except BaseException:
            self._remove(subscription)
            raise

    def _remove(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.session_id)
        if subscribers is None:
            return
        subscribers.discard(subscription)
        if not subscribers:
            del self._subscribers[subscription.session_id]

    def subscriber_count(self, session_id: str | None = None) -> int:
        """How many subscriptions are open (for one session, or in all): for tests, metrics."""
        if session_id is not None:
            return len(self._subscribers.get(session_id, ()))
        return sum(len(s) for s in self._subscribers.values())

    @property
    def sessions_followed(self) -> int:
        """How many sessions have at least one subscriber (the size of the feed's table)."""
        return len(self._subscribers)

    @property
    def listening(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    @property
    def backend_pid(self) -> int | None:
        """The server process of the listening connection (None while there is none)."""
        return self._conn.get_server_pid() if self.listening and self._conn else None

    def _ring_all(self) -> None:
        for subscribers in list(self._subscribers.values()):
            for subscription in list(subscribers):
                subscription._ring()

    def _on_notification(
        self, _conn: asyncpg.Connection, _pid: int, _channel: str, payload: str
    ) -> None:
        self.notifications += 1
        notice = parse_notice(payload)
        if notice is None:
            log.debug("ignoring a notification not of ours on %s: %r", self._channel, payload)
            return
        session_id, position = notice
        for subscription in self._subscribers.get(session_id, ()):
            subscription._ring(position)

    # ---- the listening connection ------------------------------------------------------------

    async def _run(self) -> None:
        """Listen, watch the connection, and start again after a pause when it is lost."""
        delay = self._min_backoff
        while True:
            began = time.monotonic()
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("event feed: listening connection failed: %r", error)
            finally:
                self._first_attempt.set()
            # A connection that lived a while starts the backoff afresh; one that fails at once,
            # again and again, waits longer each time, up to `max_backoff`.
            if time.monotonic() - began > self._max_backoff:
                delay = self._min_backoff
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._max_backoff)

    async def _listen_once(self) -> None:
        """One connection: LISTEN, ring everyone if they may have missed something, then return
        when the connection is lost or stops answering its ping."""
        lost = asyncio.Event()
        try:
            conn = await asyncpg.connect(self._url, timeout=self._connect_timeout)
        except BaseException:
            self._gap = True
            raise
        try:
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(self._channel, self._on_notification)
            self._conn = conn
            self.connects += 1
            if self._gap:
                # Notifications sent while no one listened are gone; the rows are not.
                self._gap = False
                self._ring_all()
            self._first_attempt.set()
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._ping_seconds):
                        await lost.wait()
                if lost.is_set():
                    break
                # A dead peer without a FIN (a network cut) is only noticed by asking.
                async with asyncio.timeout(self._connect_timeout):
                    await conn.execute("SELECT 1")
            log.warning("event feed: the listening connection was lost; reconnecting")
        finally:
            self._conn = None
            self._gap = True
            conn.terminate()

    async def close(self) -> None:
        """Stop listening for good, and ring every subscriber (they re-read and, finding the
        feed closed, fall back on their slow re-reads)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._ring_all()
