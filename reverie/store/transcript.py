"""What the model sees: ordered user and assistant turns, the compactions that stand for older
turns, and finished model steps."""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from reverie.models.common import scrub_json
from reverie.store.pool import Connection, Pool


async def load(conn: Pool | Connection, session_id: str) -> list[tuple[str, list[Any]]]:
    rows = await conn.fetch(
        "SELECT role, content FROM transcript WHERE session_id = $1 ORDER BY seq", session_id
    )
    return [(row["role"], row["content"]) for row in rows]


@dataclass(frozen=True)
class Row:
    seq: int
    role: str
    content: list[Any]


@dataclass(frozen=True)
class Compaction:
    id: str
    upto_seq: int
    summary: str


@dataclass(frozen=True)
class Compacted:
    """The transcript as the model is sent it: the newest compaction's summary (if any) in place
    of the rows it covers, then the rows after it."""

    summary: str | None
    entries: list[tuple[str, list[Any]]]


async def latest_compaction(conn: Pool | Connection, session_id: str) -> Compaction | None:
    row = await conn.fetchrow(
        "SELECT id, upto_seq, summary FROM compactions WHERE session_id = $1"
        " ORDER BY upto_seq DESC, created_at DESC LIMIT 1",
        session_id,
    )
    return None if row is None else Compaction(row["id"], row["upto_seq"], row["summary"])


async def rows_after(conn: Pool | Connection, session_id: str, seq: int) -> list[Row]:
    rows = await conn.fetch(
        "SELECT seq, role, content FROM transcript WHERE session_id = $1 AND seq > $2 ORDER BY seq",
        session_id,
        seq,
    )
    return [Row(row["seq"], row["role"], row["content"]) for row in rows]


async def load_compacted(conn: Pool | Connection, session_id: str) -> Compacted:
    latest = await latest_compaction(conn, session_id)
    rows = await rows_after(conn, session_id, latest.upto_seq if latest else 0)
    return Compacted(
        summary=latest.summary if latest else None,
        entries=[(row.role, row.content) for row in rows],
    )


async def compaction(conn: Pool | Connection, compaction_id: str) -> Compaction | None:
    row = await conn.fetchrow(
        "SELECT id, upto_seq, summary FROM compactions WHERE id = $1", compaction_id
    )
    return None if row is None else Compaction(row["id"], row["upto_seq"], row["summary"])


async def add_compaction(
    conn: Connection, compaction_id: str, session_id: str, upto_seq: int, summary: str, reason: str
) -> bool:
    """Record a compaction; False when an earlier attempt with this id already did."""
    summary, _ = scrub_json(summary)
    inserted = await conn.fetchval(
        "INSERT INTO compactions (id, session_id, upto_seq, summary, reason)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING RETURNING true",
        compaction_id,
        session_id,
        upto_seq,
        summary,
        reason,
    )
    return bool(inserted)


async def add(
    conn: Pool | Connection, entry_id: str, session_id: str, role: str, content: list[Any]
) -> None:
    """One turn, with NUL and unpaired surrogates replaced as the event log replaces them
    (`events.storable`), so the model is shown what the log shows."""
    content, _ = scrub_json(content)
    await conn.execute(
        "INSERT INTO transcript (id, session_id, role, content) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (id) DO NOTHING",
        entry_id,
        session_id,
        role,
        content,
    )


async def finished_step(conn: Pool | Connection, step_id: str) -> dict[str, Any] | None:
    return await conn.fetchval("SELECT result FROM model_steps WHERE step_id = $1", step_id)


async def finish_step(
    conn: Connection, step_id: str, session_id: str, result: dict[str, Any]
) -> bool:
    """Record a step's result; False when an earlier attempt already did (write nothing more)."""
    result, _ = scrub_json(result)
    inserted = await conn.fetchval(
        "INSERT INTO model_steps (step_id, session_id, result) VALUES ($1, $2, $3)"
        " ON CONFLICT (step_id) DO NOTHING RETURNING true",
        step_id,
        session_id,
        result,
    )
    return bool(inserted)


async def add_many(
    conn: Connection, session_id: str, rows: list[tuple[str, str, list[Any]]]
) -> None:
    """Several turns (entry id, role, content) in one round trip, as `add` writes each."""
    if not rows:
        return
    await conn.executemany(
        "INSERT INTO transcript (id, session_id, role, content) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (id) DO NOTHING",
        [(entry_id, session_id, role, scrub_json(content)[0]) for entry_id, role, content in rows],
    )


# ---- what the model step reads, cached per worker ------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """A session's transcript as the model is sent it (`Compacted`), with what proves it is
    still whole: the compaction it starts from, the last row it holds, how many rows it holds,
    and its size (bytes of the rows' JSON) for the cache's bound."""

    compaction_id: str | None
    summary: str | None
    upto_seq: int
    last_seq: int
    entries: tuple[tuple[str, list[Any]], ...]
    size: int

    @property
    def compacted(self) -> Compacted:
        return Compacted(summary=self.summary, entries=list(self.entries))


@dataclass(frozen=True)
class StepContext:
    """What a model step reads before its request: the transcript, and the session's
    `resources` (read in the same query; they shape the system prompt)."""

    compacted: Compacted
    resources: list[Any]


# Checks a snapshot ($2 its compaction's upto_seq, $3 its last seq) and reads the rows after it,
# with the session's newest compaction and its resources, in one round trip.
_CHECK_AND_READ = """
SELECT
  (SELECT id FROM compactions WHERE session_id = $1
     ORDER BY upto_seq DESC, created_at DESC LIMIT 1) AS compaction_id,
  (SELECT count(*) FROM transcript WHERE session_id = $1 AND seq > $2 AND seq <= $3) AS known,
  (SELECT resources FROM sessions WHERE id = $1) AS resources,
  t.seq, t.role, t.content::text AS content
FROM (SELECT 1) AS one
LEFT JOIN transcript t ON t.session_id = $1 AND t.seq > $3
ORDER BY t.seq
"""

# Reads everything after the newest compaction, with it and the session's resources.
_READ_ALL = """
SELECT c.id AS compaction_id, c.upto_seq, c.summary,
  (SELECT resources FROM sessions WHERE id = $1) AS resources,
  t.seq, t.role, t.content::text AS content
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
  SELECT id, upto_seq, summary FROM compactions WHERE session_id = $1
  ORDER BY upto_seq DESC, created_at DESC LIMIT 1
) AS c ON true
LEFT JOIN transcript t ON t.session_id = $1 AND t.seq > coalesce(c.upto_seq, 0)
ORDER BY t.seq
"""


def _resources(value: Any) -> list[Any]:
    return value or []


async def _full(conn: Pool | Connection, session_id: str) -> tuple[Snapshot, list[Any]]:
    rows = await conn.fetch(_READ_ALL, session_id)
    head = rows[0]
    upto = head["upto_seq"] or 0
    fresh = [row for row in rows if row["seq"] is not None]
    summary = head["summary"]
    return (
        Snapshot(
            compaction_id=head["compaction_id"],
            summary=summary,
            upto_seq=upto,
            last_seq=fresh[-1]["seq"] if fresh else upto,
            entries=tuple((row["role"], json.loads(row["content"])) for row in fresh),
            size=sum(len(row["content"]) for row in fresh) + len(summary or ""),
        ),
        _resources(head["resources"]),
    )


async def read_since(
    conn: Pool | Connection, session_id: str, known: Snapshot | None
) -> tuple[Snapshot, bool, list[Any]]:
    """The transcript as the model is sent it, reading only what is new since `known` (a
    snapshot this worker read before) when `known` is still whole; (snapshot, whether `known`
    was used, the session's resources).

    `known` is checked in the same query that reads the new rows: the session's newest
    compaction must be the one it starts from, and it must hold every row up to its last one
    (rows are only ever inserted, so the count proves it; a row that committed late, below a
    row read already, changes the count). Otherwise everything is read afresh. Correct
    whichever worker wrote what in between."""
    if known is None:
        snapshot, resources = await _full(conn, session_id)
        return snapshot, False, resources
    rows = await conn.fetch(_CHECK_AND_READ, session_id, known.upto_seq, known.last_seq)
    head = rows[0]
    if head["compaction_id"] != known.compaction_id or head["known"] != len(known.entries):
        snapshot, resources = await _full(conn, session_id)
        return snapshot, False, resources
    resources = _resources(head["resources"])
    fresh = [row for row in rows if row["seq"] is not None]
    if not fresh:
        return known, True, resources
    return (
        Snapshot(
            compaction_id=known.compaction_id,
            summary=known.summary,
            upto_seq=known.upto_seq,
            last_seq=fresh[-1]["seq"],
            entries=known.entries
            + tuple((row["role"], json.loads(row["content"])) for row in fresh),
            size=known.size + sum(len(row["content"]) for row in fresh),
        ),
        True,
        resources,
    )


class TranscriptCache:
    """Snapshots of the transcripts this worker's model steps sent, by session, least recently
    used first out once their sizes add up to more than `max_bytes` (0: no cache). A snapshot is
    only a starting point: `read_since` checks it against the database before every use, so a
    step is sent exactly what a full read would give, whichever worker wrote in between."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._snapshots: OrderedDict[str, Snapshot] = OrderedDict()
        self._size = 0
        self.hits = 0  # reads that started from a snapshot
        self.misses = 0  # reads that read everything

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self._snapshots)

    async def read(self, conn: Pool | Connection, session_id: str) -> Compacted:
        return (await self.read_for_step(conn, session_id)).compacted

    async def read_for_step(self, conn: Pool | Connection, session_id: str) -> StepContext:
        """The transcript (through the cache) and the session's resources, in one query."""
        snapshot, used, resources = await read_since(
            conn, session_id, self._snapshots.get(session_id)
        )
        if used:
            self.hits += 1
        else:
            self.misses += 1
        self._keep(session_id, snapshot)
        return StepContext(compacted=snapshot.compacted, resources=resources)

    def forget(self, session_id: str) -> None:
        old = self._snapshots.pop(session_id, None)
        if old is not None:
            self._size -= old.size

    def _keep(self, session_id: str, snapshot: Snapshot) -> None:
        self.forget(session_id)
        if snapshot.size > self.max_bytes:
            return
        self._snapshots[session_id] = snapshot
        self._size += snapshot.size
        while self._size > self.max_bytes:
            _, oldest = self._snapshots.popitem(last=False)
            self._size -= oldest.size
