"""The event feed (one LISTEN per process) against the real PostgreSQL, Temporal and worker.

Each test has a feed of its own (the client's is shared by the whole run), and appends through
the client's pool: another connection than the one that listens, as in production.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

import reverie.service.client as client_module
from reverie.models.events import Event
from reverie.starter.client import ReverieClient
from reverie.store import events
from reverie.store.event_feed import EventFeed, parse_notice
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import all_events, assert_each_once, new_agent

TOOLSET = {"type": "agent_toolset_20260401", "configs": [{"name": "web_search", "enabled": False}]}
# How long a ring may take before a test calls it missing (they come in milliseconds).
RING = 5.0
# How long a test waits to be sure that no ring comes.
SILENCE = 0.5
# How long following a short turn may take when the feed works (it takes well under a second).
PROMPT = 10.0
_ids = itertools.count()


@pytest.fixture
async def feed(database_url: str) -> AsyncIterator[EventFeed]:
    feed = EventFeed(database_url, min_backoff=0.01, max_backoff=0.5)
    yield feed
    await feed.close()


async def new_session(reverie: ReverieClient, model_name: str) -> str:
    agent = await reverie.create_agent({"name": "feed", "model": model_name})
    return (await reverie.create_session({"agent": agent.id})).id


def rows(count: int) -> list[events.EventRow]:
    """Fresh events of a type the workflow never reads (the log is all this test looks at)."""
    now = datetime.now(UTC)
    run = uuid.uuid4().hex[:8]
    return [(f"sevt_feed_{run}_{next(_ids)}", "agent.message", {"n": i}, now) for i in range(count)]


async def read_all(reverie: ReverieClient, session_id: str) -> list[int]:
    """The position of each event a follower reads, in the order it reads them (page by page
    from the start, as `follow_events` reads): 1, 2, 3... when nothing is missing or doubled."""
    read: list[str] = []
    after = 0
    while True:
        page, after = await events.list_events(
            reverie.pool, session_id, after_position=after, limit=100
        )
        if not page:
            break
        read += [e.id for e in page]
    found = await reverie.pool.fetch(
        "SELECT id, position FROM events WHERE id = ANY($1::text[])", read
    )
    positions = {row["id"]: row["position"] for row in found}
    return [positions[event_id] for event_id in read]


def test_notice_payloads_parse_and_foreign_ones_are_ignored() -> None:
    assert parse_notice("sesn_abc 42") == ("sesn_abc", 42)
    assert parse_notice("hello") is None
    assert parse_notice("sesn_abc -1") is None
    assert parse_notice(" 3") is None


async def test_a_subscriber_wakes_when_another_connection_appends(
    reverie: ReverieClient, feed: EventFeed, model_name: str
) -> None:
    session_id = await new_session(reverie, model_name)
    other_id = await new_session(reverie, model_name)
    async with feed.subscribe(session_id) as news:
        assert feed.listening and feed.backend_pid is not None
        await events.append(reverie.pool, other_id, rows(1))
        assert not await news.wait(SILENCE), "rung for another session's events"
        await events.append(reverie.pool, session_id, rows(2))
        assert await news.wait(RING)
        assert news.latest == 2
        # Promoted input events are appended too, so they ring the same way.
        event_id = f"sevt_feed_promoted_{uuid.uuid4().hex}"
        message = {"content": [{"type": "text", "text": "hi"}]}
        await events.stage(reverie.pool, session_id, [(event_id, "user.message", message)])
        assert not await news.wait(SILENCE), "rung for a staged (not yet visible) event"
        async with reverie.pool.acquire() as conn, conn.transaction():
            await events.promote(conn, session_id, [event_id], datetime.now(UTC))
        assert await news.wait(RING)
        assert news.latest == 3
    assert feed.subscriber_count() == 0


async def test_nothing_is_heard_of_uncommitted_or_rolled_back_appends(
    reverie: ReverieClient, feed: EventFeed, model_name: str
) -> None:
    session_id = await new_session(reverie, model_name)
    async with feed.subscribe(session_id) as news:
        async with reverie.pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            await events.append(conn, session_id, rows(3))
            assert not await news.wait(SILENCE), "rung before the append committed"
            await transaction.rollback()
        assert not await news.wait(SILENCE), "rung for an append that was rolled back"

        async with reverie.pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            await events.append(conn, session_id, rows(1))
            assert not await news.wait(SILENCE), "rung before the append committed"
            await transaction.commit()
        assert await news.wait(RING), "no ring once the append committed"
        assert news.latest == 1
        assert await read_all(reverie, session_id) == [1]


async def test_a_burst_of_500_appends_reaches_a_slow_reader_without_a_gap(
    reverie: ReverieClient, feed: EventFeed, model_name: str
) -> None:
    """Four writers append 500 events, one per commit; a reader that takes its time (pages of
    50, a pause after each) relies only on rings to know when to read again."""
    session_id = await new_session(reverie, model_name)
    total = 500
    async with feed.subscribe(session_id) as news:

        async def write(share: int) -> None:
            for _ in range(share):
                await events.append(reverie.pool, session_id, rows(1))

        writers = asyncio.gather(*(write(total // 4) for _ in range(4)))
        seen: list[str] = []
        position = 0
        while position < total:
            page, position = await events.list_events(
                reverie.pool, session_id, after_position=position, limit=50
            )
            seen += [e.id for e in page]
            await asyncio.sleep(0.02)  # slow
            if len(page) < 50 and position < total:
                assert await news.wait(RING), f"no ring while {total - position} events wait"
        await writers
        assert await read_all(reverie, session_id) == list(range(1, total + 1))
        logged, _ = await events.list_events(reverie.pool, session_id, limit=total)
        assert seen == [e.id for e in logged]

        # Rings coalesce: once every notification is in, one wait returns, the next blocks.
        before = feed.notifications
        await events.append(reverie.pool, session_id, rows(1))
        for _ in range(200):
            if feed.notifications > before and news.latest == total + 1:
                break
            await asyncio.sleep(0.01)
        assert news.latest == total + 1
        assert await news.wait(0)
        assert not await news.wait(SILENCE / 2)


async def test_the_feed_reconnects_when_its_connection_is_killed(
    reverie: ReverieClient, database_url: str, model_name: str
) -> None:
    session_id = await new_session(reverie, model_name)
    # A backoff long enough that the append below surely lands while no one listens.
    feed = EventFeed(database_url, min_backoff=1.0, max_backoff=2.0)
    try:
        await reconnects(reverie, feed, session_id)
    finally:
        await feed.close()


async def reconnects(reverie: ReverieClient, feed: EventFeed, session_id: str) -> None:
    async with feed.subscribe(session_id) as news:
        first = feed.backend_pid
        assert first is not None
        killed = await reverie.pool.fetchval("SELECT pg_terminate_backend($1)", first)
        assert killed
        for _ in range(int(RING / 0.01)):
            if not feed.listening:
                break
            await asyncio.sleep(0.01)
        assert not feed.listening, "the feed did not notice its connection was killed"
        # Its notification is lost (no one listens); the ring that follows the reconnection is
        # what tells the reader to read again.
        await events.append(reverie.pool, session_id, rows(1))
        assert not await news.wait(0.1)
        assert await news.wait(RING), "no ring after the listening connection was killed"
        for _ in range(int(RING / 0.01)):
            if feed.listening and feed.backend_pid not in (None, first):
                break
            await asyncio.sleep(0.01)
        assert feed.listening and feed.backend_pid not in (None, first)
        assert feed.connects == 2
        assert await read_all(reverie, session_id) == [1]

        # Listening again: the next append rings as before.
        await news.wait(0)  # a late notification of the first append, if it got through
        await events.append(reverie.pool, session_id, rows(1))
        assert await news.wait(RING), "no ring after reconnecting"
        assert news.latest == 2


async def test_a_thousand_subscribers_wake_from_one_append_and_leave_nothing_behind(
    reverie: ReverieClient, feed: EventFeed, model_name: str
) -> None:
    session_id = await new_session(reverie, model_name)
    other_id = await new_session(reverie, model_name)
    count = 1000
    entered = 0
    all_in = asyncio.Event()

    async def follow(session: str) -> bool:
        nonlocal entered
        async with feed.subscribe(session) as news:
            entered += 1
            if entered == count + 100:
                all_in.set()
            return await news.wait(RING)

    woken = [asyncio.create_task(follow(session_id)) for _ in range(count)]
    # Streams that go away without a ring (cancelled, as a closed HTTP stream is).
    abandoned = [asyncio.create_task(follow(other_id)) for _ in range(100)]
    await asyncio.wait_for(all_in.wait(), RING)
    assert feed.subscriber_count(session_id) == count
    assert feed.subscriber_count(other_id) == 100
    for task in abandoned:
        task.cancel()
    await events.append(reverie.pool, session_id, rows(1))
    assert await asyncio.gather(*woken) == [True] * count
    await asyncio.gather(*abandoned, return_exceptions=True)
    assert feed.subscriber_count() == 0
    assert feed.sessions_followed == 0


async def test_follow_events_of_a_real_session_sees_every_event_once_in_order(
    reverie: ReverieClient,
    fake_model: FakeModelServer,
    model_name: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Turns with a tool call, run by the worker on the fake model. Re-reads without a ring
    are set to once a minute, so following and waiting end within PROMPT seconds only if the
    feed rings (a turn takes well under a second)."""
    monkeypatch.setattr(client_module, "SAFETY_REREAD_SECONDS", 60.0)
    fake_model.script(
        model_name,
        [
            Reply.tool_use("bash", {"command": "echo hello"}),
            Reply.text("It said hello.", delay=0.2),
            Reply.text("Second turn.", delay=0.2),
        ],
    )
    agent_id = await new_agent(reverie, model_name, tools=[TOOLSET])
    session = await reverie.create_session({"agent": agent_id})

    async def follow(after: int) -> list[Event]:
        return [e async for e in reverie.follow_events(session.id, after=after, poll_seconds=60.0)]

    await reverie.send_message(session.id, "say hello")
    followed = await asyncio.wait_for(follow(0), PROMPT)
    recorded = await all_events(reverie, session.id)
    assert_each_once(followed)
    assert [e.id for e in followed] == [e.id for e in recorded]
    kinds = [e.type for e in followed]
    assert kinds[0] == "user.message" and kinds[-1] == "session.status_idle"
    assert "agent.tool_use" in kinds and "agent.tool_result" in kinds

    # Following from where it stopped before the next turn even begins: it has nothing to
    # read, waits for that turn's rings, and stops at its idle, as wait_until_settled does.
    following = asyncio.create_task(follow(len(recorded)))
    await asyncio.sleep(0.2)
    assert not following.done()
    await reverie.send_message(session.id, "again")
    settled = await asyncio.wait_for(reverie.wait_until_settled(session.id), PROMPT)
    assert settled.status == "idle"
    more = await asyncio.wait_for(following, PROMPT)
    turn = (await all_events(reverie, session.id))[len(recorded) :]
    assert_each_once(more)
    assert [e.id for e in more] == [e.id for e in turn]
    assert turn[0].type == "user.message" and turn[-1].type == "session.status_idle"
