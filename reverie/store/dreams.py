"""Dreams in PostgreSQL: the dream rows, what each step kept (findings per session, operations
per topic, each change written with its provenance), the input's snapshot, and schedules.

Every step's result is written under a key the workflow's inputs determine (dream and session,
dream and topic, the version id derived from them), so a step retried after a worker died finds
what it already did and neither calls the model nor writes a memory twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from reverie.models.common import derived_id, scrub_json
from reverie.models.dreams import (
    FINAL_STATUSES,
    DiffEntry,
    Dream,
    DreamCreate,
    DreamError,
    DreamSchedule,
    DreamUsage,
)
from reverie.models.errors import ConflictError, InvalidRequestError, NotFoundError
from reverie.models.memory import MAX_STORE_NAME, content_sha256
from reverie.models.sessions import Usage
from reverie.store import memory, webhooks
from reverie.store.paging import cursor_args, page_of
from reverie.store.pool import Connection, Pool

_USAGE_KEYS = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
               "cache_read_input_tokens")  # fmt: skip


def dream_actor(dream_id: str) -> dict[str, Any]:
    """Who a dream's writes are attributed to: a `user_actor` naming the dream (the SDK's
    actor types have none for dreams), with the dream's id beside it for Reverie's queries."""
    return {"type": "user_actor", "user_id": f"dream:{dream_id}", "dream_id": dream_id}


def _dream(row: Any) -> Dream:
    outputs = []
    if row["output_store_id"]:
        outputs = [{"type": "memory_store", "memory_store_id": row["output_store_id"]}]
    return Dream.model_validate(
        {
            "id": row["id"],
            "status": row["status"],
            "inputs": [
                {"type": "memory_store", "memory_store_id": row["memory_store_id"]},
                {"type": "sessions", "session_ids": list(row["session_ids"])},
            ],
            "model": row["model"],
            "instructions": row["instructions"],
            "output_behavior": row["output_behavior"],
            "outputs": outputs,
            "usage": {k: int(row["usage"].get(k, 0)) for k in _USAGE_KEYS},
            "error": row["error"],
            "created_at": row["created_at"],
            "ended_at": row["ended_at"],
            "archived_at": row["archived_at"],
        }
    )


async def create(
    conn: Pool | Connection, dream_id: str, params: DreamCreate, *, schedule_id: str | None = None
) -> Dream:
    row = await conn.fetchrow(
        """INSERT INTO dreams (id, memory_store_id, session_ids, model, instructions,
                               output_behavior, schedule_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (id) DO UPDATE SET id = EXCLUDED.id RETURNING *""",
        dream_id,
        params.store_id,
        params.session_ids,
        params.model_spec.model_dump(),
        params.instructions,
        params.output_behavior.model_dump(),
        schedule_id,
    )
    return _dream(row)


async def row_of(conn: Pool | Connection, dream_id: str) -> Any:
    row = await conn.fetchrow("SELECT * FROM dreams WHERE id = $1", dream_id)
    if row is None:
        raise NotFoundError(f"no dream with id {dream_id!r}")
    return row


async def get(conn: Pool | Connection, dream_id: str) -> Dream:
    return _dream(await row_of(conn, dream_id))


async def list_dreams(
    pool: Pool,
    *,
    limit: int,
    page: str | None,
    include_archived: bool = False,
    statuses: Sequence[str] | None = None,
    created_at_gt: datetime | None = None,
    created_at_lt: datetime | None = None,
) -> Any:
    after, after_id = cursor_args(page)
    rows = await pool.fetch(
        """SELECT * FROM dreams
           WHERE ($1::boolean OR archived_at IS NULL)
             AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
             AND ($4::text[] IS NULL OR status = ANY($4))
             AND ($5::timestamptz IS NULL OR created_at > $5)
             AND ($6::timestamptz IS NULL OR created_at < $6)
           ORDER BY created_at DESC, id DESC LIMIT $7""",
        include_archived,
        after,
        after_id,
        list(statuses) if statuses else None,
        created_at_gt,
        created_at_lt,
        limit + 1,
    )
    return page_of(rows, limit, _dream)


async def archive(pool: Pool, dream_id: str) -> Dream:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT * FROM dreams WHERE id = $1 FOR UPDATE", dream_id)
        if row is None:
            raise NotFoundError(f"no dream with id {dream_id!r}")
        if row["status"] not in FINAL_STATUSES:
            raise InvalidRequestError(
                f"dream {dream_id} is {row['status']}: cancel it first, then archive it"
            )
        row = await conn.fetchrow(
            """UPDATE dreams SET archived_at = coalesce(archived_at, now()), updated_at = now()
               WHERE id = $1 RETURNING *""",
            dream_id,
        )
    return _dream(row)


async def running_update_on(conn: Pool | Connection, store_id: str) -> str | None:
    """The `update_existing` dream on this store that has not stopped, if any."""
    return await conn.fetchval(
        """SELECT id FROM dreams WHERE memory_store_id = $1 AND status IN ('pending', 'running')
             AND output_behavior ->> 'type' = 'update_existing' LIMIT 1""",
        store_id,
    )


async def start(conn: Connection, dream_id: str, output_store_id: str) -> None:
    await conn.execute(
        """UPDATE dreams SET status = 'running', output_store_id = $2, updated_at = now()
           WHERE id = $1 AND status IN ('pending', 'running')""",
        dream_id,
        output_store_id,
    )


async def finish(conn: Connection, dream_id: str, status: str, error: DreamError | None) -> bool:
    """The dream's final status (once: a final status never changes), its usage summed from
    what its steps kept, and `dream.completed` / `dream.failed` announced with it."""
    row = await conn.fetchrow("SELECT status FROM dreams WHERE id = $1 FOR UPDATE", dream_id)
    if row is None or row["status"] in FINAL_STATUSES:
        return False
    await conn.execute(
        """UPDATE dreams SET status = $2, error = $3, ended_at = now(), updated_at = now()
           WHERE id = $1""",
        dream_id,
        status,
        None if error is None else error.model_dump(),
    )
    await refresh_usage(conn, dream_id)
    if status in ("completed", "failed"):
        await webhooks.record(conn, f"dream.{status}", dream_id)
    return True


async def refresh_usage(conn: Pool | Connection, dream_id: str) -> None:
    """The dream's usage: the sum of what its kept steps cost (a retried step is counted once)."""
    sums = ", ".join(f"'{k}', coalesce(sum((usage ->> '{k}')::bigint), 0)" for k in _USAGE_KEYS)
    await conn.execute(
        f"""UPDATE dreams SET usage = (
                SELECT jsonb_build_object({sums}) FROM (
                    SELECT usage FROM dream_findings WHERE dream_id = $1
                    UNION ALL SELECT usage FROM dream_topics WHERE dream_id = $1) u),
                updated_at = now()
            WHERE id = $1""",
        dream_id,
    )


def storable(value: Any) -> Any:
    """What the model wrote (findings, operations, dropped ones with their paths), as
    PostgreSQL can store it: NUL and unpaired surrogates replaced by markers."""
    return scrub_json(value)[0]


def usage_json(usage: Usage) -> dict[str, int]:
    return DreamUsage.model_validate(usage.model_dump()).model_dump()


async def set_report(conn: Pool | Connection, dream_id: str, report: dict[str, Any]) -> None:
    await conn.execute(
        "UPDATE dreams SET report = report || $2::jsonb WHERE id = $1", dream_id, report
    )


async def guard_store_delete(conn: Connection, store_id: str) -> None:
    """Refuse to delete the store a dream that has not stopped writes to."""
    dream_id = await conn.fetchval(
        """SELECT id FROM dreams WHERE status IN ('pending', 'running')
             AND (output_store_id = $1 OR (memory_store_id = $1
                  AND output_behavior ->> 'type' = 'update_existing')) LIMIT 1""",
        store_id,
    )
    if dream_id:
        raise ConflictError(
            f"memory store {store_id} is the output of dream {dream_id}, which is still "
            "running: cancel the dream or wait for it to end, then delete the store"
        )


# ---- the input's snapshot and the output store ---------------------------------------------------


async def snapshot_input(conn: Connection, dream_id: str, store_id: str) -> int:
    """What the input store holds now, kept as the dream's base (once)."""
    done = await conn.fetchval("SELECT count(*) FROM dream_base WHERE dream_id = $1", dream_id)
    if done:
        return done
    await conn.execute(
        """INSERT INTO dream_base (dream_id, path, memory_id, content, content_sha256)
           SELECT $1, path, id, content, content_sha256 FROM memories WHERE memory_store_id = $2
           ON CONFLICT DO NOTHING""",
        dream_id,
        store_id,
    )
    return await conn.fetchval("SELECT count(*) FROM dream_base WHERE dream_id = $1", dream_id)


async def base(conn: Pool | Connection, dream_id: str) -> dict[str, Any]:
    rows = await conn.fetch(
        "SELECT path, memory_id, content, content_sha256 FROM dream_base WHERE dream_id = $1",
        dream_id,
    )
    return {row["path"]: row for row in rows}


async def make_output_store(
    conn: Connection, dream_id: str, input_store_id: str, *, max_memories: int
) -> str:
    """A new store (its id derived from the dream's) that starts as a copy of the input: made
    once, however often this runs."""
    store_id = derived_id("memstore", dream_id, "output")
    source = await memory.get_store(conn, input_store_id)
    name = f"{source.name} (dream {dream_id[-8:]})"[:MAX_STORE_NAME]
    made = await conn.fetchval(
        """INSERT INTO memory_stores (id, name, description, metadata)
           VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING RETURNING true""",
        store_id,
        name,
        source.description,
        {"reverie_dream_id": dream_id, "reverie_dream_input": input_store_id},
    )
    if made:
        await webhooks.record(conn, "memory_store.created", store_id)
        for row in await conn.fetch(
            "SELECT path, content FROM dream_base WHERE dream_id = $1 ORDER BY path", dream_id
        ):
            await memory.create_memory(
                conn,
                store_id,
                row["path"],
                row["content"],
                dream_actor(dream_id),
                max_memories=max_memories,
                version_id=derived_id("memver", dream_id, "copy", row["path"]),
                memory_id=derived_id("mem", dream_id, "copy", row["path"]),
            )
    return store_id


# ---- findings and topics -------------------------------------------------------------------------


async def findings_of(conn: Pool | Connection, dream_id: str, session_id: str) -> Any:
    return await conn.fetchval(
        "SELECT findings FROM dream_findings WHERE dream_id = $1 AND session_id = $2",
        dream_id,
        session_id,
    )


async def add_findings(
    conn: Pool | Connection,
    dream_id: str,
    session_id: str,
    findings: list[dict[str, Any]],
    usage: Usage,
) -> bool:
    """One session's findings, kept (what the model wrote, NUL and unpaired surrogates
    replaced: PostgreSQL cannot store them); False when an earlier try kept them."""
    status = await conn.execute(
        """INSERT INTO dream_findings (dream_id, session_id, findings, usage)
           VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
        dream_id,
        session_id,
        storable(findings),
        usage_json(usage),
    )
    return status.endswith(" 1")


async def note_cut_off(conn: Pool | Connection, dream_id: str, what: str) -> None:
    """A step whose model answer was cut off at `max_tokens` (what came after is lost), for
    the diff to report."""
    await conn.execute(
        """UPDATE dreams SET report = jsonb_set(report, '{cut_off}',
               coalesce(report -> 'cut_off', '[]'::jsonb) || jsonb_build_array($2::text))
           WHERE id = $1""",
        dream_id,
        what,
    )


async def all_findings(conn: Pool | Connection, dream_id: str) -> dict[str, list[dict[str, Any]]]:
    rows = await conn.fetch(
        "SELECT session_id, findings FROM dream_findings WHERE dream_id = $1 ORDER BY session_id",
        dream_id,
    )
    return {row["session_id"]: row["findings"] for row in rows}


async def topic_of(conn: Pool | Connection, dream_id: str, topic: str) -> Any:
    return await conn.fetchrow(
        "SELECT * FROM dream_topics WHERE dream_id = $1 AND topic = $2", dream_id, topic
    )


async def add_topic(
    conn: Pool | Connection,
    dream_id: str,
    topic: str,
    operations: list[dict[str, Any]],
    dropped: list[dict[str, Any]],
    usage: Usage,
) -> None:
    await conn.execute(
        """INSERT INTO dream_topics (dream_id, topic, operations, dropped, usage)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING""",
        dream_id,
        topic,
        storable(operations),
        storable(dropped),
        usage_json(usage),
    )


async def topic_written(conn: Pool | Connection, dream_id: str, topic: str) -> None:
    await conn.execute(
        "UPDATE dream_topics SET written = true WHERE dream_id = $1 AND topic = $2",
        dream_id,
        topic,
    )


async def all_dropped(conn: Pool | Connection, dream_id: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT dropped FROM dream_topics WHERE dream_id = $1 ORDER BY topic", dream_id
    )
    return [item for row in rows for item in row["dropped"]]


# ---- changes (with provenance) -------------------------------------------------------------------


async def add_change(
    conn: Connection,
    *,
    dream_id: str,
    kind: str,
    version_id: str,
    store_id: str,
    memory_id: str,
    operation: str,
    path: str,
    before: Any | None,
    after_content: str | None,
    topic: str | None = None,
    supporting_sessions: Sequence[str] = (),
    rationale: str = "",
) -> None:
    """One version written, with the memory as it was before (`before`: a memories row, or None
    when the memory did not exist) and its provenance."""
    await conn.execute(
        """INSERT INTO dream_changes (dream_id, kind, version_id, memory_store_id, memory_id,
               topic, operation, path, before_path, before_content, before_sha256,
               after_content, after_sha256, supporting_sessions, rationale)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
           ON CONFLICT (version_id) DO NOTHING""",
        dream_id,
        kind,
        version_id,
        store_id,
        memory_id,
        topic,
        operation,
        path,
        None if before is None else before["path"],
        None if before is None else before["content"],
        None if before is None else before["content_sha256"],
        after_content,
        None if after_content is None else content_sha256(after_content),
        list(supporting_sessions),
        rationale,
    )


async def changes(conn: Pool | Connection, dream_id: str, kind: str) -> list[Any]:
    return await conn.fetch(
        "SELECT * FROM dream_changes WHERE dream_id = $1 AND kind = $2 ORDER BY seq",
        dream_id,
        kind,
    )


def provenance(rows: Sequence[Any]) -> dict[str, DiffEntry]:
    """Per path, the sessions that support what the dream wrote there and its operations."""
    out: dict[str, DiffEntry] = {}
    for row in rows:
        for path in {row["path"], row["before_path"]} - {None}:
            entry = out.setdefault(path, DiffEntry(path=path, change="modified"))
            entry.supporting_sessions = sorted(
                set(entry.supporting_sessions) | set(row["supporting_sessions"])
            )
            entry.session_count = len(entry.supporting_sessions)
            entry.operations.append(row["operation"])
            if row["rationale"]:
                entry.rationale.append(row["rationale"])
    return out


async def mark(conn: Pool | Connection, dream_id: str, column: str) -> None:
    assert column in ("applied_at", "reverted_at", "discarded_at")
    await conn.execute(
        f"UPDATE dreams SET {column} = now(), updated_at = now() WHERE id = $1", dream_id
    )


# ---- schedules -----------------------------------------------------------------------------------


async def create_schedule(conn: Pool | Connection, schedule: DreamSchedule) -> None:
    await conn.execute(
        """INSERT INTO dream_schedules (id, memory_store_id, agent_id, mode, model, instructions,
                                        cron, timezone)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        schedule.id,
        schedule.memory_store_id,
        schedule.agent_id,
        schedule.mode,
        schedule.model,
        schedule.instructions,
        schedule.cron,
        schedule.timezone,
    )


def _schedule(row: Any) -> DreamSchedule:
    return DreamSchedule(
        id=row["id"],
        memory_store_id=row["memory_store_id"],
        agent_id=row["agent_id"],
        cron=row["cron"],
        timezone=row["timezone"],
        mode=row["mode"],
        model=row["model"],
        instructions=row["instructions"],
        cursor_session_id=row["cursor_session_id"],
        created_at=row["created_at"],
    )


async def get_schedule(conn: Pool | Connection, schedule_id: str) -> DreamSchedule:
    row = await conn.fetchrow("SELECT * FROM dream_schedules WHERE id = $1", schedule_id)
    if row is None:
        raise NotFoundError(f"no dream schedule with id {schedule_id!r}")
    return _schedule(row)


async def list_schedules(conn: Pool | Connection) -> list[DreamSchedule]:
    rows = await conn.fetch("SELECT * FROM dream_schedules ORDER BY created_at DESC, id DESC")
    return [_schedule(row) for row in rows]


async def delete_schedule(conn: Pool | Connection, schedule_id: str) -> None:
    await conn.execute("DELETE FROM dream_schedules WHERE id = $1", schedule_id)


async def recent_runs(conn: Pool | Connection, schedule_id: str, limit: int = 5) -> list[str]:
    rows = await conn.fetch(
        """SELECT dream_ids FROM dream_schedule_runs WHERE schedule_id = $1
           ORDER BY scheduled_time DESC LIMIT $2""",
        schedule_id,
        limit,
    )
    return [d for row in rows for d in row["dream_ids"]]


async def pick_sessions(
    conn: Connection,
    schedule_id: str,
    scheduled_time: datetime,
    *,
    batch: int,
) -> tuple[list[list[str]], bool]:
    """The sessions a run at `scheduled_time` reads, in batches of `batch`, and whether this
    run is new: a run already recorded for this time answers its batches again (from its
    dreams) and the cursor does not move. Call inside a transaction."""
    schedule = await conn.fetchrow(
        "SELECT * FROM dream_schedules WHERE id = $1 FOR UPDATE", schedule_id
    )
    if schedule is None:
        raise NotFoundError(f"no dream schedule with id {schedule_id!r}")
    done = await conn.fetchrow(
        "SELECT dream_ids FROM dream_schedule_runs WHERE schedule_id = $1 AND scheduled_time = $2",
        schedule_id,
        scheduled_time,
    )
    if done is not None:
        rows = await conn.fetch(
            "SELECT session_ids FROM dreams WHERE id = ANY($1::text[]) ORDER BY id",
            done["dream_ids"],
        )
        return [list(r["session_ids"]) for r in rows], False
    rows = await conn.fetch(
        """SELECT id, created_at FROM sessions
           WHERE resources @> jsonb_build_array(jsonb_build_object('memory_store_id', $1::text))
             AND ($2::text IS NULL OR agent_id = $2)
             AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4))
             AND created_at <= $5
           ORDER BY created_at, id""",
        schedule["memory_store_id"],
        schedule["agent_id"],
        schedule["cursor_created_at"],
        schedule["cursor_session_id"] or "",
        scheduled_time,
    )
    ids = [row["id"] for row in rows]
    if rows:
        await conn.execute(
            """UPDATE dream_schedules SET cursor_created_at = $2, cursor_session_id = $3
               WHERE id = $1""",
            schedule_id,
            rows[-1]["created_at"],
            rows[-1]["id"],
        )
    return [ids[i : i + batch] for i in range(0, len(ids), batch)], True


async def record_run(
    conn: Connection,
    schedule_id: str,
    scheduled_time: datetime,
    dream_ids: list[str],
    session_count: int,
) -> None:
    await conn.execute(
        """INSERT INTO dream_schedule_runs (schedule_id, scheduled_time, dream_ids, session_count)
           VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
        schedule_id,
        scheduled_time,
        dream_ids,
        session_count,
    )
