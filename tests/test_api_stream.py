"""Server-sent event streams: frames the SDKs read, resumption without gaps, one listener."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import aiohttp

from reverie.api.state import FEED, TAILS
from reverie.service.client import ReverieClient
from tests.api_support import Api
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import all_events, new_agent


def _now() -> datetime:
    return datetime.now(UTC)


class Frame(dict):
    pass


@asynccontextmanager
async def sse(
    api: Api, session_id: str, *, last_event_id: str | None = None
) -> AsyncIterator[AsyncIterator[Frame]]:
    """Frames of a stream, parsed as a plain SSE client (curl, EventSource) would."""
    headers = {"x-api-key": api.key, "accept": "text/event-stream"}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{api.base_url}/v1/sessions/{session_id}/events/stream", headers=headers) as r,
    ):
        assert r.status == 200, await r.text()
        assert r.headers["content-type"].startswith("text/event-stream")

        async def frames() -> AsyncIterator[Frame]:
            fields: dict[str, str] = {}
            async for raw in r.content:
                line = raw.decode().rstrip("\n")
                if not line:
                    if fields:
                        yield Frame(fields)
                    fields = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")

        yield frames()


async def collect(frames: AsyncIterator[Frame], until: str) -> list[Frame]:
    out = []
    async for frame in frames:
        out.append(frame)
        if frame.get("event") == until:
            return out
    return out


async def run_turn(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str, text: str
) -> str:
    fake_model.script(model_name, [Reply.text(text)])
    agent_id = await new_agent(reverie, model_name)
    return (await reverie.create_session({"agent": agent_id})).id


async def test_frames_name_their_type_and_id_and_data_is_the_event(
    api: Api, reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    session_id = await run_turn(reverie, fake_model, model_name, "framed")
    async with sse(api, session_id) as frames:
        reading = asyncio.create_task(collect(frames, "session.status_idle"))
        await asyncio.sleep(0.2)
        await reverie.send_message(session_id, "go")
        got = await asyncio.wait_for(reading, 30)
    events = [f for f in got if f["event"] != "ping"]
    recorded = await all_events(reverie, session_id)
    assert [f["id"] for f in events] == [e.id for e in recorded]
    for frame in events:
        data = json.loads(frame["data"])
        assert data["type"] == frame["event"] and data["id"] == frame["id"]


async def test_a_client_that_reconnects_with_last_event_id_misses_nothing_and_sees_nothing_twice(
    api: Api, reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(model_name, [Reply.text("one"), Reply.text("two", delay=0.5)])
    agent_id = await new_agent(reverie, model_name)
    session_id = (await reverie.create_session({"agent": agent_id})).id
    async with sse(api, session_id) as frames:
        reading = asyncio.create_task(collect(frames, "agent.message"))
        await asyncio.sleep(0.2)
        await reverie.send_message(session_id, "first")
        first = [f for f in await asyncio.wait_for(reading, 30) if f["event"] != "ping"]
    # Disconnected mid-turn; the turn goes on, and a second one follows while no one listens.
    await reverie.wait_until_settled(session_id)
    await reverie.send_message(session_id, "second")
    await reverie.wait_until_settled(session_id)
    async with sse(api, session_id, last_event_id=first[-1]["id"]) as frames:
        reading = asyncio.create_task(collect(frames, "session.status_idle"))
        # The first turn's idle, then the whole second turn up to its idle.
        rest = [f for f in await asyncio.wait_for(reading, 30) if f["event"] != "ping"]
        if (
            rest[-1]["event"] == "session.status_idle"
            and sum(f["event"] == "session.status_idle" for f in rest) < 2
        ):
            rest += [
                f
                for f in await asyncio.wait_for(collect(frames, "session.status_idle"), 30)
                if f["event"] != "ping"
            ]
    recorded = [e.id for e in await all_events(reverie, session_id)]
    seen = [f["id"] for f in first + rest]
    assert seen == recorded, "a gap or a duplicate across the reconnect"


async def test_an_idle_stream_sends_keepalives(
    api: Api, reverie: ReverieClient, model_name: str
) -> None:
    agent_id = await new_agent(reverie, model_name)
    session_id = (await reverie.create_session({"agent": agent_id})).id
    async with sse(api, session_id) as frames:
        first = await asyncio.wait_for(anext(frames), 10)
    assert first["event"] == "ping"


async def test_the_stream_ends_cleanly_when_the_session_terminates(
    api: Api, reverie: ReverieClient, model_name: str
) -> None:
    agent_id = await new_agent(reverie, model_name)
    session_id = (await reverie.create_session({"agent": agent_id})).id
    async with sse(api, session_id) as frames:
        reading = asyncio.create_task(collect(frames, "never"))
        await asyncio.sleep(0.2)
        await reverie.archive_session(session_id)
        got = await asyncio.wait_for(reading, 30)  # returns only because the stream ended
    assert [f["event"] for f in got if f["event"] != "ping"][-1] == "session.status_terminated"
    # A stream opened on a terminated session ends at once.
    async with sse(api, session_id) as frames:
        assert [f async for f in frames] == []


async def test_many_streams_of_a_session_share_one_reader_and_one_listener(
    api: Api, reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    from tests.api_support import current_app

    session_id = await run_turn(reverie, fake_model, model_name, "fan-out")
    app = current_app(api)
    feed, tails = app[FEED], app[TAILS]
    count = 100
    before = await reverie.pool.fetchval("SELECT count(*) FROM pg_stat_activity")
    async with asyncio.TaskGroup() as group:
        streams = [group.create_task(_one_stream(api, session_id)) for _ in range(count)]
        for _ in range(200):
            if tails.count(session_id) == count:
                break
            await asyncio.sleep(0.05)
        assert tails.count(session_id) == count
        # One reader for the session, subscribed once to the process's one listener.
        assert feed.subscriber_count(session_id) == 1
        during = await reverie.pool.fetchval("SELECT count(*) FROM pg_stat_activity")
        await reverie.send_message(session_id, "all of you")
    results = [task.result() for task in streams]
    assert all(r[-1] == "session.status_idle" for r in results)
    assert len({tuple(r) for r in results}) == 1, "every stream saw the same events"
    # A hundred streams hold no database connection of their own: at most the shared pool
    # fills up while they open (it serves everything else too).
    assert during - before <= reverie.pool.get_max_size() < count, (before, during)
    for _ in range(100):
        if tails.count(session_id) == 0 and feed.subscriber_count(session_id) == 0:
            break
        await asyncio.sleep(0.05)
    assert tails.count(session_id) == 0 and feed.subscriber_count(session_id) == 0


async def test_a_stream_far_behind_the_shared_tail_catches_up_from_the_log(
    api: Api, reverie: ReverieClient, model_name: str
) -> None:
    """A resume from before what the tail keeps reads its way up from the log, exactly."""
    from reverie.api.tails import KEEP
    from reverie.store import events as event_store

    agent_id = await new_agent(reverie, model_name)
    session_id = (await reverie.create_session({"agent": agent_id})).id
    async with sse(api, session_id) as watcher:  # keeps a tail alive for the session
        first = asyncio.create_task(anext(watcher))
        rows = [
            (f"sevt_bulk{i:05d}{session_id[-8:]}", "agent.message", {"content": []}, _now())
            for i in range(KEEP + 250)
        ]
        await event_store.append(reverie.pool, session_id, rows)
        await asyncio.wait_for(first, 30)
        async with sse(api, session_id, last_event_id=rows[0][0]) as frames:
            got = []
            async for frame in frames:
                if frame["event"] == "ping":
                    break
                got.append(frame["id"])
    assert got == [row[0] for row in rows[1:]]


async def _one_stream(api: Api, session_id: str) -> list[str]:
    async with sse(api, session_id) as frames:
        got = await asyncio.wait_for(collect(frames, "session.status_idle"), 60)
    return [f["id"] and f["event"] for f in got if f["event"] != "ping"]


async def test_resuming_from_an_unknown_event_is_refused(
    api: Api, reverie: ReverieClient, model_name: str
) -> None:
    agent_id = await new_agent(reverie, model_name)
    session_id = (await reverie.create_session({"agent": agent_id})).id
    headers = {"x-api-key": api.key, "Last-Event-ID": "sevt_other"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{api.base_url}/v1/sessions/{session_id}/events/stream", headers=headers) as r,
    ):
        body = await r.json()
    assert r.status == 400 and "sevt_other" in body["error"]["message"]
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{api.base_url}/v1/sessions/sesn_nope/events/stream", headers=headers) as r,
    ):
        assert r.status == 404 and (await r.json())["error"]["type"] == "not_found_error"


async def test_a_process_serves_at_most_its_stream_limit(
    reverie: ReverieClient, api: Api, model_name: str
) -> None:
    from reverie.api.app import start_api

    runner, base_url = await start_api(
        reverie, "127.0.0.1", 0, max_streams=2, keepalive_seconds=0.5
    )
    small = Api(base_url=base_url, key=api.key, runner=runner)
    agent_id = await new_agent(reverie, model_name)
    session_id = (await reverie.create_session({"agent": agent_id})).id
    try:
        async with sse(small, session_id), sse(small, session_id):
            headers = {"x-api-key": api.key}
            url = f"{base_url}/v1/sessions/{session_id}/events/stream"
            async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as r:
                body = await r.json()
            assert r.status == 429 and body["error"]["type"] == "rate_limit_error"
            assert "REVERIE_API_MAX_STREAMS" in body["error"]["message"]
        async with sse(small, session_id) as frames:  # room again once they closed
            assert (await asyncio.wait_for(anext(frames), 10))["event"] == "ping"
    finally:
        await runner.cleanup()


async def test_the_shared_tail_keeps_a_bounded_number_of_bytes(
    api: Api, reverie: ReverieClient, model_name: str
) -> None:
    from reverie.api.tails import KEEP_BYTES
    from reverie.store import events as event_store
    from tests.api_support import current_app

    agent_id = await new_agent(reverie, model_name)
    session_id = (await reverie.create_session({"agent": agent_id})).id
    big = "x" * (300 * 1024)
    rows = [
        (f"sevt_big{i:03d}{session_id[-10:]}", "agent.message", {"content": [big]}, _now())
        for i in range(40)
    ]
    async with sse(api, session_id) as frames:
        await event_store.append(reverie.pool, session_id, rows)
        got = []
        async for frame in frames:
            if frame["event"] != "ping":
                got.append(frame["id"])
            if len(got) == len(rows):
                break
        tail = current_app(api)[TAILS]._tails[session_id]
        kept = sum(len(frame.data) for frame in tail.frames)
        assert kept <= KEEP_BYTES and len(tail.frames) < len(rows)
    assert got == [row[0] for row in rows]


async def test_a_stream_resumes_on_another_api_process_without_a_gap(
    api: Api, reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    """Two API processes behind one balancer: a client cut off from one resumes on the other."""
    from reverie.api.app import start_api
    from reverie.service.client import ReverieClient as Client

    other_client = await Client.connect(reverie.settings)  # its own pool and feed, as a process
    runner, base_url = await start_api(other_client, "127.0.0.1", 0, keepalive_seconds=0.5)
    other = Api(base_url=base_url, key=api.key, runner=runner)
    try:
        fake_model.script(model_name, [Reply.text("one"), Reply.text("two")])
        agent_id = await new_agent(reverie, model_name)
        session_id = (await reverie.create_session({"agent": agent_id})).id
        async with sse(api, session_id) as frames:
            reading = asyncio.create_task(collect(frames, "agent.message"))
            await asyncio.sleep(0.2)
            await reverie.send_message(session_id, "first")
            first = [f for f in await asyncio.wait_for(reading, 30) if f["event"] != "ping"]
        async with sse(other, session_id, last_event_id=first[-1]["id"]) as frames:
            reading = asyncio.create_task(collect(frames, "never"))
            await reverie.wait_until_settled(session_id)
            await reverie.send_message(session_id, "second")
            await reverie.wait_until_settled(session_id)
            await reverie.archive_session(session_id)
            rest = [f for f in await asyncio.wait_for(reading, 30) if f["event"] != "ping"]
        recorded = [e.id for e in await all_events(reverie, session_id)]
        assert [f["id"] for f in first + rest] == recorded
    finally:
        await runner.cleanup()
        await other_client.close()
