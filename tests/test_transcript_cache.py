"""The model step's transcript cache (`store.transcript.TranscriptCache`): a step reads only the
rows that are new, and is sent exactly what a full read would give, whatever happened in between
(another worker appended, a row committed late below one already read, a compaction, a retried
write), within its memory bound."""

from __future__ import annotations

import uuid

from reverie.starter.client import ReverieClient
from reverie.store import transcript
from reverie.store.transcript import TranscriptCache


async def _session(reverie: ReverieClient, model_name: str) -> str:
    agent = await reverie.create_agent({"name": "cache", "model": model_name})
    return (await reverie.create_session({"agent": agent.id})).id


async def _add(reverie: ReverieClient, session_id: str, role: str, text: str) -> str:
    entry_id = f"test:{uuid.uuid4().hex}"
    await transcript.add(reverie.pool, entry_id, session_id, role, [{"type": "text", "text": text}])
    return entry_id


async def _same_as_full_read(
    reverie: ReverieClient, cache: TranscriptCache, session_id: str
) -> None:
    assert await cache.read(reverie.pool, session_id) == await transcript.load_compacted(
        reverie.pool, session_id
    )


async def test_a_step_reads_only_what_is_new(reverie: ReverieClient, model_name: str) -> None:
    session_id = await _session(reverie, model_name)
    cache = TranscriptCache(10_000_000)
    await _same_as_full_read(reverie, cache, session_id)  # empty
    for turn in range(5):
        await _add(reverie, session_id, "user", f"question {turn} " + "x" * 1000)
        await _same_as_full_read(reverie, cache, session_id)
        await _add(reverie, session_id, "assistant", f"answer {turn}")
        await _same_as_full_read(reverie, cache, session_id)
    assert cache.misses == 1 and cache.hits == 10
    assert len(cache) == 1 and cache.size > 5000


async def test_another_worker_appended_meanwhile(reverie: ReverieClient, model_name: str) -> None:
    """Two workers take turns with one session: each reads what the other wrote."""
    session_id = await _session(reverie, model_name)
    first, second = TranscriptCache(10_000_000), TranscriptCache(10_000_000)
    for turn in range(4):
        worker = first if turn % 2 == 0 else second
        await _add(reverie, session_id, "user", f"q{turn}")
        await _same_as_full_read(reverie, worker, session_id)
        await _add(reverie, session_id, "assistant", f"a{turn}")
    await _same_as_full_read(reverie, first, session_id)
    await _same_as_full_read(reverie, second, session_id)
    assert first.hits >= 2 and second.hits >= 1


async def test_a_row_committed_late_below_the_last_one_read(
    reverie: ReverieClient, model_name: str
) -> None:
    """A transaction that took its sequence number first but committed last (a straggling
    attempt of a step): the snapshot that missed it is not used again."""
    session_id = await _session(reverie, model_name)
    cache = TranscriptCache(10_000_000)
    await _add(reverie, session_id, "user", "before")
    await _same_as_full_read(reverie, cache, session_id)
    async with reverie.pool.acquire() as late:
        transaction = late.transaction()
        await transaction.start()
        await transcript.add(
            late, "test:late", session_id, "assistant", [{"type": "text", "text": "late"}]
        )
        await _add(reverie, session_id, "user", "after")  # a higher seq, committed first
        await _same_as_full_read(reverie, cache, session_id)  # reads "after", not "late"
        await transaction.commit()
    hits = cache.hits
    compacted = await cache.read(reverie.pool, session_id)
    assert compacted == await transcript.load_compacted(reverie.pool, session_id)
    assert [entry[1][0]["text"] for entry in compacted.entries] == ["before", "late", "after"]
    assert cache.hits == hits, "the snapshot missing the late row must not be used"


async def test_a_compaction_replaces_the_snapshot(reverie: ReverieClient, model_name: str) -> None:
    session_id = await _session(reverie, model_name)
    cache = TranscriptCache(10_000_000)
    for turn in range(3):
        await _add(reverie, session_id, "user", f"q{turn}")
        await _add(reverie, session_id, "assistant", f"a{turn}")
    await _same_as_full_read(reverie, cache, session_id)
    upto = await reverie.pool.fetchval(
        "SELECT seq FROM transcript WHERE session_id = $1 ORDER BY seq OFFSET 3 LIMIT 1", session_id
    )
    async with reverie.pool.acquire() as conn:
        await transcript.add_compaction(
            conn, f"cmpct_{uuid.uuid4().hex}", session_id, upto, "sum", "threshold"
        )
    await _add(reverie, session_id, "user", "q3")
    compacted = await cache.read(reverie.pool, session_id)
    assert compacted == await transcript.load_compacted(reverie.pool, session_id)
    assert compacted.summary == "sum" and len(compacted.entries) == 3
    await _add(reverie, session_id, "assistant", "a3")
    hits = cache.hits
    await _same_as_full_read(reverie, cache, session_id)
    assert cache.hits == hits + 1  # the compacted snapshot serves the next step


async def test_a_retried_write_changes_nothing(reverie: ReverieClient, model_name: str) -> None:
    """A retried step writes its rows again under the same ids: nothing new, the snapshot holds."""
    session_id = await _session(reverie, model_name)
    cache = TranscriptCache(10_000_000)
    entry = await _add(reverie, session_id, "user", "once")
    await _same_as_full_read(reverie, cache, session_id)
    await transcript.add(
        reverie.pool, entry, session_id, "user", [{"type": "text", "text": "once"}]
    )
    async with reverie.pool.acquire() as conn:
        await transcript.add_many(
            conn, session_id, [(entry, "user", [{"type": "text", "text": "once"}])]
        )
    hits = cache.hits
    await _same_as_full_read(reverie, cache, session_id)
    assert cache.hits == hits + 1


async def test_memory_stays_within_the_bound(reverie: ReverieClient, model_name: str) -> None:
    sessions = [await _session(reverie, model_name) for _ in range(4)]
    for session_id in sessions:
        await _add(reverie, session_id, "user", "y" * 3000)
    cache = TranscriptCache(7000)  # room for two of them
    for session_id in sessions:
        await _same_as_full_read(reverie, cache, session_id)
        assert cache.size <= 7000
    assert len(cache) == 2
    # The oldest were dropped; reading them again is a full read, and still right.
    misses = cache.misses
    await _same_as_full_read(reverie, cache, sessions[0])
    assert cache.misses == misses + 1
    # A transcript larger than the whole bound is never kept; no cache at all still works.
    await _same_as_full_read(reverie, TranscriptCache(100), sessions[1])
    off = TranscriptCache(0)
    await _same_as_full_read(reverie, off, sessions[2])
    await _same_as_full_read(reverie, off, sessions[2])
    assert len(off) == 0 and off.hits == 0
