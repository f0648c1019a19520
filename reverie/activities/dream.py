"""A dream's steps: start (check the inputs, snapshot the store, make the output store), read
each session (`dream_extract`, one model call, its findings kept), plan the topics, consolidate
each topic into validated operations and write them (`dream_consolidate`), finish.

Each step keeps its result before returning, under a key the workflow gives it: a retried
extraction or consolidation finds its findings or operations and does not call the model again,
and writes use version ids derived from (dream, topic, operation, path), so a memory is never
written twice. A step's model calls heartbeat; model errors are retried by Temporal (with the
server's `retry-after`) and, once the attempts are spent, fail the dream with the error's type.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from datetime import timedelta
from typing import Any

import anthropic
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from reverie.activities.dream_prompts import (
    CONSOLIDATE_SYSTEM,
    EXTRACT_SYSTEM,
    FINDINGS_BUDGET,
    FINDINGS_TOOL,
    FINDINGS_TOOL_SPEC,
    MAX_SHOWN_MEMORIES,
    OPERATIONS_TOOL,
    OPERATIONS_TOOL_SPEC,
    SHOWN_BUDGET,
    consolidate_prompt,
    extract_prompt,
    names_topic,
    parse_findings,
    pick_findings,
    render_transcript,
    tool_input,
    validate_operations,
)
from reverie.activities.model import call_with_heartbeats, classify, usage_of
from reverie.models.common import derived_id
from reverie.models.dreams import (
    CUT_OFF,
    FINAL_STATUSES,
    INPUT_SESSION_UNAVAILABLE,
    INPUT_STORE_TOO_LARGE,
    INPUT_STORE_UNAVAILABLE,
    MAX_FINDINGS_PER_SESSION,
    MAX_INPUT_BYTES,
    MAX_INPUT_MEMORIES,
    MAX_TOPICS,
    ConsolidateInput,
    ConsolidateResult,
    DreamActivity,
    DreamCreate,
    DreamStarted,
    DreamWorkflowInput,
    Dropped,
    ExtractInput,
    ExtractResult,
    FinishInput,
    Operation,
    SchedulePicked,
    SchedulePickInput,
)
from reverie.models.errors import (
    InvalidRequestError,
    MemoryPathConflictError,
    MemoryPreconditionFailedError,
    NotFoundError,
)
from reverie.models.sessions import Usage
from reverie.settings import Settings
from reverie.store import dreams, memory
from reverie.store import transcript as transcripts
from reverie.store.pool import Connection, Pool

# Tests only: seconds the schedule pick waits after committing (see test_dream_schedules).
TEST_HOOK_SLOW_SCHEDULE_PICK = "REVERIE_TEST_HOOK_SLOW_SCHEDULE_PICK"

WRITE_REFUSALS = (
    MemoryPathConflictError,
    MemoryPreconditionFailedError,
    NotFoundError,
    InvalidRequestError,
)


def input_lost(error_type: str, message: str) -> ApplicationError:
    """A dream input that is gone or unusable: the dream fails with this precise type."""
    return ApplicationError(message, type=error_type, non_retryable=True)


def model_failure(error: anthropic.APIError, cap: float) -> ApplicationError:
    """A model error as Temporal should retry it (or not): the server's delay when it gave one."""
    details, retryable, retry_after = classify(error)  # type: ignore[arg-type]
    benign = details.error_type == "model_rate_limited_error"
    return ApplicationError(
        f"model: {details.message}",
        type=details.error_type,
        non_retryable=not retryable,
        next_retry_delay=(
            timedelta(seconds=max(0.0, min(retry_after, cap))) if retry_after is not None else None
        ),
        category=ApplicationErrorCategory.BENIGN
        if benign
        else ApplicationErrorCategory.UNSPECIFIED,
    )


class DreamActivities:
    def __init__(self, pool: Pool, settings: Settings, client: anthropic.AsyncAnthropic) -> None:
        self._pool = pool
        self._settings = settings
        self._client = client

    async def _call(self, request: dict[str, Any]) -> Any:
        try:
            return await call_with_heartbeats(self._client, request)
        except anthropic.APIError as error:
            raise model_failure(error, self._settings.model_max_backoff_seconds) from error

    # ---- start ---------------------------------------------------------------------------

    @activity.defn(name=DreamActivity.START)
    async def dream_start(self, params: DreamWorkflowInput) -> DreamStarted:
        """Check the inputs, keep what the input store holds, make the output store (once)."""
        row = await dreams.row_of(self._pool, params.dream_id)
        if row["status"] in FINAL_STATUSES:
            return DreamStarted(ended=True)
        store_id = row["memory_store_id"]
        stats = await self._pool.fetchrow(
            """SELECT s.archived_at, s.memory_count,
                      (SELECT coalesce(sum(content_size_bytes), 0) FROM memories
                       WHERE memory_store_id = s.id) AS bytes
               FROM memory_stores s WHERE s.id = $1""",
            store_id,
        )
        if stats is None:
            raise input_lost(INPUT_STORE_UNAVAILABLE, f"memory store {store_id} no longer exists")
        if stats["archived_at"] is not None and row["output_store_id"] is None:
            raise input_lost(INPUT_STORE_UNAVAILABLE, f"memory store {store_id} is archived")
        if stats["memory_count"] > MAX_INPUT_MEMORIES or stats["bytes"] > MAX_INPUT_BYTES:
            raise input_lost(
                INPUT_STORE_TOO_LARGE,
                f"memory store {store_id} holds {stats['memory_count']:,} memories "
                f"({stats['bytes']:,} bytes); a dream reads at most {MAX_INPUT_MEMORIES:,} "
                f"memories and {MAX_INPUT_BYTES:,} bytes",
            )
        await self._check_sessions(list(row["session_ids"]))
        async with self._pool.acquire() as conn, conn.transaction():
            # Canceled since it was read: make no output store (it would belong to no dream).
            status = await conn.fetchval(
                "SELECT status FROM dreams WHERE id = $1 FOR UPDATE", params.dream_id
            )
            if status in FINAL_STATUSES:
                return DreamStarted(ended=True)
            await dreams.snapshot_input(conn, params.dream_id, store_id)
            if row["output_behavior"]["type"] == "update_existing":
                output = store_id
            else:
                output = await dreams.make_output_store(
                    conn,
                    params.dream_id,
                    store_id,
                    max_memories=self._settings.memory_max_memories,
                )
            await dreams.start(conn, params.dream_id, output)
        return DreamStarted(output_store_id=output, session_ids=list(row["session_ids"]))

    async def _check_store(self, store_id: str) -> None:
        """The input store, deleted while the dream runs: the dream fails (its output so far
        kept), as when a session is lost."""
        if not await self._pool.fetchval("SELECT 1 FROM memory_stores WHERE id = $1", store_id):
            raise input_lost(INPUT_STORE_UNAVAILABLE, f"memory store {store_id} no longer exists")

    async def _check_sessions(self, session_ids: list[str]) -> None:
        found = {
            r["id"]
            for r in await self._pool.fetch(
                "SELECT id FROM sessions WHERE id = ANY($1::text[])", session_ids
            )
        }
        missing = [s for s in session_ids if s not in found]
        if missing:
            raise input_lost(INPUT_SESSION_UNAVAILABLE, f"session {missing[0]} no longer exists")

    # ---- extract -------------------------------------------------------------------------

    @activity.defn(name=DreamActivity.EXTRACT)
    async def dream_extract(self, params: ExtractInput) -> ExtractResult:
        """One session's findings: kept ones are reused; else one model call, then kept."""
        kept = await dreams.findings_of(self._pool, params.dream_id, params.session_id)
        if kept is not None:
            return ExtractResult(findings=len(kept), reused=True)
        row = await dreams.row_of(self._pool, params.dream_id)
        if row["status"] != "running":  # canceled meanwhile: no model call for nothing
            return ExtractResult(findings=0)
        await self._check_store(row["memory_store_id"])
        await self._check_sessions([params.session_id])
        compacted = await transcripts.load_compacted(self._pool, params.session_id)
        text = render_transcript(compacted.summary, compacted.entries)
        findings: list[dict[str, Any]] = []
        usage = Usage()
        cut = False
        if text.strip():
            nonce = secrets.token_hex(8)
            message = await self._call(
                {
                    "model": row["model"]["id"],
                    "max_tokens": self._settings.max_tokens,
                    "system": EXTRACT_SYSTEM.format(
                        nonce=nonce, tool=FINDINGS_TOOL, limit=MAX_FINDINGS_PER_SESSION
                    ),
                    "messages": [
                        {
                            "role": "user",
                            "content": extract_prompt(
                                nonce, params.session_id, text, row["instructions"]
                            ),
                        }
                    ],
                    "tools": [FINDINGS_TOOL_SPEC],
                    "tool_choice": {"type": "tool", "name": FINDINGS_TOOL},
                }
            )
            usage = usage_of(message.usage)
            cut = message.stop_reason == "max_tokens"
            findings, _ = parse_findings(tool_input(message, FINDINGS_TOOL), text)
        async with self._pool.acquire() as conn, conn.transaction():
            added = await dreams.add_findings(
                conn, params.dream_id, params.session_id, findings, usage
            )
            if added and cut:
                await dreams.note_cut_off(conn, params.dream_id, f"session {params.session_id}")
            await dreams.refresh_usage(conn, params.dream_id)
        return ExtractResult(findings=len(findings))

    # ---- plan ----------------------------------------------------------------------------

    @activity.defn(name=DreamActivity.PLAN)
    async def dream_plan(self, dream_id: str) -> list[str]:
        """The topics to consolidate: those with findings, the most widely supported first,
        at most `MAX_TOPICS` (the rest are reported, not consolidated); in name order."""
        support: dict[str, set[str]] = {}
        kept = await dreams.all_findings(self._pool, dream_id)
        for session_id, findings in kept.items():
            for finding in findings:
                if finding.get("grounded", True):
                    support.setdefault(finding["topic"], set()).add(session_id)
        ranked = sorted(support, key=lambda t: (-len(support[t]), t))
        left_out = ranked[MAX_TOPICS:]
        await dreams.set_report(
            self._pool,
            dream_id,
            {
                "topics_left_out": left_out,
                "sessions_read": len(kept),
                "findings": sum(len(f) for f in kept.values()),
                "findings_ungrounded": sum(
                    not x.get("grounded", True) for f in kept.values() for x in f
                ),
            },
        )
        return sorted(ranked[:MAX_TOPICS])

    # ---- consolidate and write -----------------------------------------------------------

    @activity.defn(name=DreamActivity.CONSOLIDATE)
    async def dream_consolidate(self, params: ConsolidateInput) -> ConsolidateResult:
        row = await dreams.row_of(self._pool, params.dream_id)
        store_id = row["output_store_id"]
        kept = await dreams.topic_of(self._pool, params.dream_id, params.topic)
        if kept is None:
            if row["status"] != "running":  # canceled meanwhile: no model call for nothing
                return ConsolidateResult(written=0, dropped=0)
            await self._check_store(row["memory_store_id"])
            await self._propose(row, params.topic)
            kept = await dreams.topic_of(self._pool, params.dream_id, params.topic)
        if kept["written"]:
            return ConsolidateResult(written=0, dropped=len(kept["dropped"]))
        operations = [Operation.model_validate(o) for o in kept["operations"]]
        failures: list[dict[str, Any]] = []
        written = 0
        for index, op in enumerate(operations):
            digests = kept["operations"][index].get("shown", {})
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    await _still_running(conn, params.dream_id)
                    written += await self._write(
                        conn, params.dream_id, store_id, params.topic, index, op, digests
                    )
            except DreamEnded as ended:
                failures.append(
                    Dropped(
                        topic=params.topic, op=op.op, path=op.path, reason=f"not written: {ended}"
                    ).model_dump()
                )
            except WRITE_REFUSALS as error:
                failures.append(
                    Dropped(
                        topic=params.topic,
                        op=op.op,
                        path=op.path,
                        reason=f"not written: {getattr(error, 'message', error)}",
                    ).model_dump()
                )
        await self._pool.execute(
            """UPDATE dream_topics SET written = true, dropped = dropped || $3::jsonb
               WHERE dream_id = $1 AND topic = $2 AND NOT written""",
            params.dream_id,
            params.topic,
            dreams.storable(failures),
        )
        return ConsolidateResult(written=written, dropped=len(kept["dropped"]) + len(failures))

    async def _propose(self, row: Any, topic: str) -> None:
        """One model call for the topic; the validated operations kept (with the digest of each
        memory they change, as shown) and the dropped ones, with why."""
        dream_id = row["id"]
        store_id = row["output_store_id"]
        findings, unshown = pick_findings(
            [
                (session_id, f)
                for session_id, items in (await dreams.all_findings(self._pool, dream_id)).items()
                for f in items
                if f["topic"] == topic and f.get("grounded", True)
            ]
        )
        existing = {
            r["path"]
            for r in await self._pool.fetch(
                "SELECT path FROM memories WHERE memory_store_id = $1", store_id
            )
        }
        named = sorted(p for p in existing if names_topic(p, topic))[: MAX_SHOWN_MEMORIES * 4]
        candidates = sorted(
            await self._pool.fetch(
                """SELECT path, content, content_sha256 FROM memories
                   WHERE memory_store_id = $1 AND path = ANY($2::text[])""",
                store_id,
                named,
            ),
            key=lambda r: r["path"],
        )
        shown, size = [], 0
        for candidate in candidates:
            if len(shown) >= MAX_SHOWN_MEMORIES or size + len(candidate["content"]) > SHOWN_BUDGET:
                continue
            shown.append(candidate)
            size += len(candidate["content"])
        nonce = secrets.token_hex(8)
        message = await self._call(
            {
                "model": row["model"]["id"],
                "max_tokens": self._settings.max_tokens,
                "system": CONSOLIDATE_SYSTEM.format(nonce=nonce, topic=topic, tool=OPERATIONS_TOOL),
                "messages": [
                    {
                        "role": "user",
                        "content": consolidate_prompt(
                            nonce,
                            topic,
                            shown,
                            findings,
                            row["instructions"],
                            len(candidates) - len(shown),
                        ),
                    }
                ],
                "tools": [OPERATIONS_TOOL_SPEC],
                "tool_choice": {"type": "tool", "name": OPERATIONS_TOOL},
            }
        )
        digests = {r["path"]: r["content_sha256"] for r in shown}
        checked = validate_operations(
            tool_input(message, OPERATIONS_TOOL),
            topic=topic,
            shown=digests,
            existing=existing,
            sessions={session_id for session_id, _ in findings},
        )
        operations = [
            {
                **op.model_dump(),
                "shown": {p: digests[p] for p in (op.path, *op.sources) if p in digests},
            }
            for op in checked.kept
        ]
        if message.stop_reason == "max_tokens":
            checked.dropped.append(Dropped(topic=topic, reason=f"the model's answer was {CUT_OFF}"))
        if unshown:
            checked.dropped.append(
                Dropped(
                    topic=topic,
                    reason=f"{unshown} findings of this topic were not shown to the model: "
                    f"more than one call's budget of {FINDINGS_BUDGET:,} characters",
                )
            )
        async with self._pool.acquire() as conn, conn.transaction():
            await dreams.add_topic(
                conn,
                dream_id,
                topic,
                operations,
                [d.model_dump() for d in checked.dropped],
                usage_of(message.usage),
            )
            await dreams.refresh_usage(conn, dream_id)

    async def _write(
        self,
        conn: Connection,
        dream_id: str,
        store_id: str,
        topic: str,
        index: int,
        op: Operation,
        digests: dict[str, str],
    ) -> int:
        """One operation's versions, each with its provenance; the memories it changes must
        still have the digest they were shown with."""
        actor = dreams.dream_actor(dream_id)
        common = {
            "dream_id": dream_id,
            "kind": "dream",
            "store_id": store_id,
            "operation": op.op,
            "topic": topic,
            "supporting_sessions": op.supporting_sessions,
            "rationale": op.rationale,
        }
        written = 0

        def ids(path: str) -> tuple[str, str]:
            parts = (dream_id, topic, str(index), path)
            return derived_id("memver", *parts), derived_id("mem", *parts)

        if op.op in ("create", "update", "merge"):
            assert op.content is not None
            version_id, memory_id = ids(op.path)
            before = await _memory_at(conn, store_id, op.path)
            if (
                before is None
                and op.path in digests
                and await memory._replayed(conn, version_id) is None
            ):
                raise NotFoundError(f"the memory at {op.path} was deleted since it was shown")
            if before is None:
                done = await memory.create_memory(
                    conn,
                    store_id,
                    op.path,
                    op.content,
                    actor,
                    max_memories=self._settings.memory_max_memories,
                    version_id=version_id,
                    memory_id=memory_id,
                )
            else:
                done = await memory.update_memory(
                    conn,
                    store_id,
                    before["id"],
                    actor,
                    content=op.content,
                    expected_sha256=digests.get(op.path, "0" * 64),
                    version_id=version_id,
                )
            if done.version_id is not None:
                written += 1
                if not done.replayed:
                    await dreams.add_change(
                        conn,
                        version_id=done.version_id,
                        memory_id=done.memory.id if done.memory else memory_id,
                        path=op.path,
                        before=before,
                        after_content=op.content,
                        **common,
                    )
        targets = op.sources if op.op == "merge" else [op.path] if op.op == "delete" else []
        for path in targets:
            version_id, _ = ids(path)
            before = await _memory_at(conn, store_id, path)
            if before is None:
                if await memory._replayed(conn, version_id) is not None:
                    continue
                raise NotFoundError(f"no memory at {path} any more")
            done = await memory.delete_memory(
                conn,
                store_id,
                before["id"],
                actor,
                expected_sha256=digests.get(path, "0" * 64),
                version_id=version_id,
            )
            written += 1
            if not done.replayed:
                await dreams.add_change(
                    conn,
                    version_id=version_id,
                    memory_id=before["id"],
                    path=path,
                    before=before,
                    after_content=None,
                    **common,
                )
        return written

    # ---- finish --------------------------------------------------------------------------

    @activity.defn(name=DreamActivity.FINISH)
    async def dream_finish(self, params: FinishInput) -> str:
        """The final status (a dream already ended keeps its own); answers the one it has."""
        async with self._pool.acquire() as conn, conn.transaction():
            await dreams.finish(conn, params.dream_id, params.status, params.error)
            return await conn.fetchval("SELECT status FROM dreams WHERE id = $1", params.dream_id)

    # ---- schedules -----------------------------------------------------------------------

    @activity.defn(name=DreamActivity.SCHEDULE_PICK)
    async def dream_schedule_pick(self, params: SchedulePickInput) -> SchedulePicked:
        """The dreams of one scheduled time: made once (the sessions after the cursor, in
        batches of 100, the cursor moved past them), found again on a second run; none once the
        schedule is deleted (a run already started would otherwise retry for ever)."""
        async with self._pool.acquire() as conn, conn.transaction():
            try:
                schedule = await dreams.get_schedule(conn, params.schedule_id)
            except NotFoundError:  # deleted since this run started: nothing to dream over
                return SchedulePicked(dream_ids=[], session_count=0)
            batches, new = await dreams.pick_sessions(
                conn, params.schedule_id, params.scheduled_time, batch=params.batch
            )
            stamp = params.scheduled_time.isoformat()
            dream_ids = [
                derived_id("drm", params.schedule_id, stamp, str(i)) for i in range(len(batches))
            ]
            if not new:
                return SchedulePicked(
                    dream_ids=dream_ids, session_count=sum(len(b) for b in batches)
                )
            for dream_id, batch in zip(dream_ids, batches, strict=True):
                behavior: dict[str, Any] = {"type": "create_new"}
                if schedule.mode == "auto":
                    behavior = {
                        "type": "update_existing",
                        "memory_store_id": schedule.memory_store_id,
                    }
                params_ = DreamCreate.model_validate(
                    {
                        "inputs": [
                            {"type": "memory_store", "memory_store_id": schedule.memory_store_id},
                            {"type": "sessions", "session_ids": batch},
                        ],
                        "model": schedule.model,
                        "instructions": schedule.instructions,
                        "output_behavior": behavior,
                    }
                )
                await dreams.create(conn, dream_id, params_, schedule_id=params.schedule_id)
            count = sum(len(b) for b in batches)
            await dreams.record_run(
                conn, params.schedule_id, params.scheduled_time, dream_ids, count
            )
        # Tests only: the dreams are made and the cursor moved; the run is canceled meanwhile.
        await asyncio.sleep(float(os.environ.get(TEST_HOOK_SLOW_SCHEDULE_PICK) or 0))
        return SchedulePicked(dream_ids=dream_ids, session_count=count)


class DreamEnded(Exception):
    """The dream was canceled (or ended) while a step was still running."""


async def _still_running(conn: Connection, dream_id: str) -> None:
    """Refuse a write once the dream has ended: a cancel reaches a running step only at its
    next heartbeat, and what it would write after the cancel must not land (least of all in
    an `update_existing` dream's input store). Holds the dream's row until the write commits,
    so a cancel (which locks it) comes wholly before or wholly after it."""
    status = await conn.fetchval("SELECT status FROM dreams WHERE id = $1 FOR SHARE", dream_id)
    if status != "running":
        raise DreamEnded(f"the dream is {status}")


async def _memory_at(conn: Connection, store_id: str, path: str) -> Any:
    return await conn.fetchrow(
        "SELECT id, path, content, content_sha256 FROM memories "
        "WHERE memory_store_id = $1 AND path = $2",
        store_id,
        path,
    )
