"""One reader per session per API process, shared by every stream of that session.

The process's `EventFeed` rings a session's `Tail` when a commit adds events; the tail reads the
new events once, encodes each frame once, keeps the last `KEEP` of them, and wakes its streams,
which write the shared bytes. Ten streams on a session cost one query and one encoding per event,
not ten. A stream that starts (or falls) further back than the kept frames reads its way up from
the log on its own first, so resumption stays exact however far back it starts.

Positions in a session's log are gapless, so the events after position p read without filters
sit at p+1, p+2, ...: the tail needs no position column.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from reverie.api.errors import ApiError
from reverie.models.events import Event
from reverie.store import events as event_store
from reverie.store.pool import Pool

log = logging.getLogger(__name__)

# Frames a tail keeps for streams that are slightly behind (a slow client, a fresh resume), at
# most this many and this many bytes (an event can be hundreds of kB).
KEEP = 1000
KEEP_BYTES = 8 * 1024 * 1024
# Events one read takes from the log.
BATCH = 200
# A tail re-reads this often even without a ring, so a lost notification costs latency only.
SAFETY_REREAD_SECONDS = 2.0
TERMINATED = "session.status_terminated"


@dataclass(frozen=True, slots=True)
class Frame:
    position: int
    type: str
    data: bytes


def encode(event: Event) -> bytes:
    """One server-sent event: `event:` names the type (the SDKs drop frames without it), `id:`
    lets a client resume after it with `Last-Event-ID`."""
    data = json.dumps(event.model_dump(mode="json"), separators=(",", ":"))
    return f"event: {event.type}\nid: {event.id}\ndata: {data}\n\n".encode()


def frames_after(position: int, found: list[Event]) -> list[Frame]:
    return [Frame(position + i + 1, e.type, encode(e)) for i, e in enumerate(found)]


class Tail:
    """The newest frames of one session, read once for all of its streams."""

    def __init__(self, tails: Tails, session_id: str, head: int) -> None:
        self._tails = tails
        self.session_id = session_id
        self.head = head  # position of the newest frame read (or the start)
        self.frames: deque[Frame] = deque(maxlen=KEEP)
        self._bytes = 0
        self.streams = 0
        self._changed = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._follow(), name=f"tail {session_id}")

    def since(self, position: int) -> list[Frame] | None:
        """Kept frames after `position`; None when the stream is behind what is kept and must
        read from the log itself."""
        oldest = self.frames[0].position if self.frames else self.head + 1
        if position + 1 < oldest:
            return None
        return [frame for frame in self.frames if frame.position > position]

    @property
    def waiter(self) -> asyncio.Future[None]:
        """Resolved when frames are next added: take it before looking at `since`, so that
        frames added in between still wake the caller."""
        return self._changed

    @staticmethod
    async def changed(waiter: asyncio.Future[None], timeout: float) -> bool:
        """True when frames were added, False after `timeout` seconds without."""
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except TimeoutError:
            return False
        return True

    async def _follow(self) -> None:
        async with self._tails.feed.subscribe(self.session_id) as bell:
            while True:
                try:
                    await self._read_new()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("stream tail of %s: reading failed; retrying", self.session_id)
                    await asyncio.sleep(1.0)
                    continue
                if self.frames and self.frames[-1].type == TERMINATED:
                    return
                await bell.wait(SAFETY_REREAD_SECONDS)

    async def _read_new(self) -> None:
        while True:
            found, _ = await event_store.list_events(
                self._tails.pool, self.session_id, after_position=self.head, limit=BATCH
            )
            if not found:
                return
            for frame in frames_after(self.head, found):
                if len(self.frames) == KEEP:
                    self._bytes -= len(self.frames[0].data)
                self.frames.append(frame)
                self._bytes += len(frame.data)
                while self._bytes > KEEP_BYTES and len(self.frames) > 1:
                    self._bytes -= len(self.frames.popleft().data)
            self.head += len(found)
            waiter, self._changed = self._changed, asyncio.get_running_loop().create_future()
            waiter.set_result(None)
            if len(found) < BATCH:
                return

    def close(self) -> None:
        self._task.cancel()


class Tails:
    """The process's tails, one per session that has a stream open."""

    def __init__(self, pool: Pool, feed: object, max_streams: int = 10_000) -> None:
        self.pool = pool
        self.feed = feed
        self.max_streams = max_streams
        self._tails: dict[str, Tail] = {}
        self._streams = 0

    @contextlib.asynccontextmanager
    async def follow(self, session_id: str) -> AsyncIterator[Tail]:
        if self.count() >= self.max_streams:
            raise ApiError(
                "rate_limit_error",
                f"this API process has {self.max_streams:,} streams open, the most it serves "
                "(REVERIE_API_MAX_STREAMS); retry later or on another API process",
            )
        tail = self._tails.get(session_id)
        if tail is None:
            head = await event_store.last_position(self.pool, session_id)
            tail = self._tails.get(session_id)  # another stream may have made it meanwhile
            if tail is None:
                tail = self._tails[session_id] = Tail(self, session_id, head)
        tail.streams += 1
        self._streams += 1
        try:
            yield tail
        finally:
            tail.streams -= 1
            self._streams -= 1
            if tail.streams == 0 and self._tails.get(session_id) is tail:
                del self._tails[session_id]
                tail.close()

    def count(self, session_id: str | None = None) -> int:
        """Streams following `session_id` (all sessions' when None)."""
        if session_id is not None:
            tail = self._tails.get(session_id)
            return tail.streams if tail else 0
        return self._streams

    def close(self) -> None:
        for tail in self._tails.values():
            tail.close()
        self._tails.clear()
