"""Dreams for every front end (the HTTP API, `reverie dream ...`, user code): `ReverieClient`
inherits these methods.

Creating a dream checks its inputs, writes its row and starts `DreamWorkflow` (id = the dream
id). Review is Reverie's own: `dream_diff` shows per path what a dream added, modified or
removed, with the sessions that support it; `apply_dream` writes a `create_new` result into the
input store, each memory only if it is still what the dream read (else it is reported as a
conflict); `revert_dream` restores what an applied or `update_existing` dream changed, each
memory only if it is still what the dream wrote; `discard_dream` archives the output store.
Schedules are Temporal schedules of `ScheduledDreamWorkflow`.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import zoneinfo
from datetime import datetime
from typing import TYPE_CHECKING, Any

from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.service import RPCError

from reverie.models.common import Page, PageRequest, derived_id, new_id
from reverie.models.dreams import (
    CUT_OFF,
    DREAM_STATUSES,
    FINAL_STATUSES,
    INTERNAL_ERROR,
    MAX_TOPICS,
    Conflict,
    DiffEntry,
    Dream,
    DreamCreate,
    DreamDiff,
    DreamError,
    DreamSchedule,
    DreamScheduleCreate,
    DreamWorkflowInput,
    Dropped,
    ReviewResult,
    ScheduledDreamInput,
)
from reverie.models.errors import (
    ConflictError,
    InvalidRequestError,
    MemoryPathConflictError,
    MemoryPreconditionFailedError,
    NotFoundError,
)
from reverie.service.validation import check_id as _id
from reverie.service.validation import parse as _parse
from reverie.store import agents, dreams, memory
from reverie.workflows.dream import DreamWorkflow
from reverie.workflows.dream_schedule import ScheduledDreamWorkflow

if TYPE_CHECKING:
    from temporalio.client import Client

    from reverie.settings import Settings
    from reverie.store.pool import Connection, Pool

SCHEDULE_RUN_PREFIX = "dream-schedule-run"
# What a path of apply or revert may meet (changed meanwhile, the store archived or full): it is
# reported for that path, and the others go on.
REVIEW_REFUSALS = (
    MemoryPathConflictError,
    MemoryPreconditionFailedError,
    NotFoundError,
    InvalidRequestError,
)


def _unified(path: str, before: str | None, after: str | None) -> str:
    lines = difflib.unified_diff(
        (before or "").splitlines(keepends=True),
        (after or "").splitlines(keepends=True),
        fromfile=f"a{path}" if before is not None else "/dev/null",
        tofile=f"b{path}" if after is not None else "/dev/null",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


async def _locked(conn: Connection, dream_id: str) -> Any:
    """The dream's row, locked until the review step's transaction ends: apply, revert and
    discard of one dream (and a cancel, and the dream's own writes) happen one at a time, and
    each is written whole with its mark or not at all."""
    row = await conn.fetchrow("SELECT * FROM dreams WHERE id = $1 FOR UPDATE", dream_id)
    if row is None:
        raise NotFoundError(f"no dream with id {dream_id!r}")
    return row


async def _at(conn: Pool | Connection, store_id: str, path: str) -> Any:
    return await conn.fetchrow(
        "SELECT id, path, content, content_sha256 FROM memories "
        "WHERE memory_store_id = $1 AND path = $2",
        store_id,
        path,
    )


class DreamMethods:
    """Dream operations of `ReverieClient` (which provides `temporal`, `pool` and `settings`)."""

    temporal: Client
    pool: Pool
    settings: Settings

    def _workflow_input(self, dream_id: str = "") -> DreamWorkflowInput:
        return DreamWorkflowInput(
            dream_id=dream_id,
            model_max_attempts=self.settings.model_max_attempts,
            model_timeout_seconds=self.settings.model_timeout_seconds,
        )

    # ---- the SDK's operations --------------------------------------------------------------

    async def create_dream(self, params: DreamCreate | dict[str, Any]) -> Dream:
        """Check the inputs (the store exists and is live, every session exists, no other
        `update_existing` dream runs on the store), write the dream, start its workflow."""
        params = _parse(DreamCreate, params)
        store = await memory.get_store(self.pool, _id("memory store", params.store_id))
        if store.archived_at is not None:
            raise InvalidRequestError(
                f"memory store {store.id} is archived: a dream cannot read it"
            )
        for session_id in params.session_ids:
            _id("session", session_id)
        found = {
            r["id"]
            for r in await self.pool.fetch(
                "SELECT id FROM sessions WHERE id = ANY($1::text[])", params.session_ids
            )
        }
        missing = [s for s in params.session_ids if s not in found]
        if missing:
            raise NotFoundError(f"no session with id {missing[0]!r}")
        dream_id = new_id("drm")
        async with self.pool.acquire() as conn, conn.transaction():
            if params.output_behavior.type == "update_existing":
                await conn.execute("SELECT 1 FROM memory_stores WHERE id = $1 FOR UPDATE", store.id)
                other = await dreams.running_update_on(conn, store.id)
                if other:
                    raise ConflictError(
                        f"dream {other} is still writing into memory store {store.id}: wait for "
                        "it to stop before starting another update_existing dream on it"
                    )
            dream = await dreams.create(conn, dream_id, params)
        summary = f"dream over {len(params.session_ids)} session(s) of {store.name}"
        try:
            await self.temporal.start_workflow(
                DreamWorkflow.run,
                self._workflow_input(dream_id),
                id=dream_id,
                task_queue=self.settings.task_queue,
                static_summary=summary[:200],
                static_details=f"memory store {store.id}, {params.output_behavior.type}",
            )
        except BaseException as error:
            # Never left pending for ever: a dream whose workflow did not start has failed.
            failure = DreamError(type=INTERNAL_ERROR, message=f"could not start: {error}")
            async with self.pool.acquire() as conn, conn.transaction():
                await dreams.finish(conn, dream_id, "failed", failure)
            raise
        return dream

    async def get_dream(self, dream_id: str) -> Dream:
        return await dreams.get(self.pool, _id("dream", dream_id))

    async def list_dreams(
        self,
        *,
        limit: int = 20,
        page: str | None = None,
        include_archived: bool = False,
        statuses: list[str] | None = None,
        created_at_gt: datetime | None = None,
        created_at_lt: datetime | None = None,
    ) -> Page[Dream]:
        paging = _parse(PageRequest, {"limit": limit, "page": page})
        for status in statuses or []:
            if status not in DREAM_STATUSES:
                raise InvalidRequestError(
                    f"statuses: {status!r} is not one of {', '.join(DREAM_STATUSES)}"
                )
        return await dreams.list_dreams(
            self.pool,
            limit=paging.limit,
            page=paging.page,
            include_archived=include_archived,
            statuses=statuses,
            created_at_gt=created_at_gt,
            created_at_lt=created_at_lt,
        )

    async def archive_dream(self, dream_id: str) -> Dream:
        return await dreams.archive(self.pool, _id("dream", dream_id))

    async def cancel_dream(self, dream_id: str) -> Dream:
        """A pending or running dream ends `canceled` now; its workflow stops its current step
        (what it wrote stays in the output store)."""
        row = await dreams.row_of(self.pool, _id("dream", dream_id))
        if row["status"] in FINAL_STATUSES:
            raise InvalidRequestError(
                f"dream {dream_id} is {row['status']}: only a pending or running dream can be "
                "canceled"
            )
        async with self.pool.acquire() as conn, conn.transaction():
            await dreams.finish(conn, dream_id, "canceled", None)
        with contextlib.suppress(RPCError):  # it may have just ended by itself
            await self.temporal.get_workflow_handle(dream_id).cancel()
        return await dreams.get(self.pool, dream_id)

    async def wait_for_dream(self, dream_id: str, *, timeout: float = 120.0) -> Dream:
        """The dream once its workflow has ended (its final status recorded)."""
        handle = self.temporal.get_workflow_handle(_id("dream", dream_id))
        await asyncio.wait_for(handle.result(), timeout)
        return await dreams.get(self.pool, dream_id)

    # ---- review ----------------------------------------------------------------------------

    async def dream_diff(self, dream_id: str, *, content: bool = True) -> DreamDiff:
        """Per path what the dream added, modified or removed (for `create_new`: its output
        store now, operator edits included, against the input as the dream read it; for
        `update_existing`: what it wrote), each with its provenance; and what it dropped."""
        row = await dreams.row_of(self.pool, _id("dream", dream_id))
        behavior = row["output_behavior"]["type"]
        written = await dreams.changes(self.pool, dream_id, "dream")
        provenance = dreams.provenance(written)
        entries: list[DiffEntry] = []
        if behavior == "create_new":
            base = await dreams.base(self.pool, dream_id)
            now: dict[str, Any] = {}
            output = row["output_store_id"]
            if output is None or not await self.pool.fetchval(
                "SELECT 1 FROM memory_stores WHERE id = $1", output
            ):
                base = {}  # no output (or it was deleted): nothing to compare, nothing to apply
            else:
                rows = await self.pool.fetch(
                    "SELECT path, content, content_sha256 FROM memories WHERE memory_store_id = $1",
                    row["output_store_id"],
                )
                now = {r["path"]: r for r in rows}
            for path in sorted(set(base) | set(now)):
                before = base[path]["content"] if path in base else None
                after = now[path]["content"] if path in now else None
                if before == after:
                    continue
                entries.append(self._entry(path, before, after, provenance))
        else:
            first: dict[str, str | None] = {}
            last: dict[str, str | None] = {}
            for change in written:
                first.setdefault(change["path"], change["before_content"])
                last[change["path"]] = change["after_content"]
            for path in sorted(first):
                if first[path] != last[path]:
                    entries.append(self._entry(path, first[path], last[path], provenance))
        if not content:
            for entry in entries:
                entry.before = entry.after = None
        report = row["report"] or {}
        return DreamDiff(
            dream_id=dream_id,
            status=row["status"],
            output_behavior=behavior,
            memory_store_id=row["memory_store_id"],
            output_store_id=row["output_store_id"],
            entries=entries,
            dropped=[
                Dropped.model_validate(d) for d in await dreams.all_dropped(self.pool, dream_id)
            ]
            + [
                Dropped(topic=topic, reason=f"not consolidated: more than {MAX_TOPICS} topics")
                for topic in report.get("topics_left_out", [])
            ]
            + [
                Dropped(reason=f"{what}: the model's answer was {CUT_OFF}")
                for what in report.get("cut_off", [])
            ],
            sessions_read=int(report.get("sessions_read", 0)),
            findings=int(report.get("findings", 0)),
            findings_ungrounded=int(report.get("findings_ungrounded", 0)),
            applied_at=row["applied_at"],
            reverted_at=row["reverted_at"],
        )

    @staticmethod
    def _entry(
        path: str, before: str | None, after: str | None, provenance: dict[str, DiffEntry]
    ) -> DiffEntry:
        change = "added" if before is None else "removed" if after is None else "modified"
        known = provenance.get(path)
        return DiffEntry(
            path=path,
            change=change,  # type: ignore[arg-type]
            before=before,
            after=after,
            diff=_unified(path, before, after),
            supporting_sessions=known.supporting_sessions if known else [],
            session_count=known.session_count if known else 0,
            operations=known.operations if known else ["edited by an operator"],
            rationale=known.rationale if known else [],
        )

    async def apply_dream(self, dream_id: str) -> ReviewResult:
        """Write a completed `create_new` dream's result into its input store, path by path,
        as versions attributed to the dream; a memory changed since the dream read it (or a
        path taken since) is reported as a conflict and left as it is."""
        diff = await self.dream_diff(dream_id)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await _locked(conn, dream_id)
            self._check_apply(dream_id, row)
            if not await conn.fetchval(
                "SELECT 1 FROM memory_stores WHERE id = $1", row["output_store_id"]
            ):
                raise InvalidRequestError(
                    f"dream {dream_id}'s output store {row['output_store_id']} no longer exists"
                )
            base = await dreams.base(conn, dream_id)
            store_id = row["memory_store_id"]
            result = ReviewResult(dream_id=dream_id, action="apply", memory_store_id=store_id)
            actor = dreams.dream_actor(dream_id)
            for entry in diff.entries:
                version_id = derived_id("memver", dream_id, "apply", entry.path)
                try:
                    async with conn.transaction():
                        current = await _at(conn, store_id, entry.path)
                        reason = await self._apply_one(
                            conn, store_id, entry, base.get(entry.path), current, actor, version_id
                        )
                except REVIEW_REFUSALS as err:
                    reason = f"not written: {err.message}"
                if reason:
                    result.conflicts.append(Conflict(path=entry.path, reason=reason))
                else:
                    result.written.append(entry.path)
            await dreams.mark(conn, dream_id, "applied_at")
        return result

    @staticmethod
    def _check_apply(dream_id: str, row: Any) -> None:
        if row["output_behavior"]["type"] != "create_new":
            raise InvalidRequestError(
                f"dream {dream_id} wrote into its input store itself (update_existing): there "
                "is nothing to apply; revert it to undo it"
            )
        if row["status"] != "completed":
            raise InvalidRequestError(
                f"dream {dream_id} is {row['status']}: only a completed dream can be applied"
            )
        if row["applied_at"] is not None:
            raise InvalidRequestError(f"dream {dream_id} was applied already")
        if row["discarded_at"] is not None:
            raise InvalidRequestError(f"dream {dream_id} was discarded")

    async def _apply_one(
        self,
        conn: Connection,
        store_id: str,
        entry: DiffEntry,
        base: Any,
        current: Any,
        actor: dict[str, Any],
        version_id: str,
    ) -> str | None:
        """One path of `apply`: None when written, else why it is a conflict."""
        provenance = {
            "dream_id": actor["dream_id"],
            "kind": "apply",
            "store_id": store_id,
            "operation": entry.change,
            "supporting_sessions": entry.supporting_sessions,
            "rationale": "; ".join(entry.rationale),
        }
        if entry.change == "added":
            assert entry.after is not None
            if current is not None:
                return "a memory was created at this path since the dream read the store"
            done = await memory.create_memory(
                conn,
                store_id,
                entry.path,
                entry.after,
                actor,
                max_memories=self.settings.memory_max_memories,
                version_id=version_id,
            )
            assert done.memory is not None
            memory_id = done.memory.id
        else:
            if current is None:
                return "the memory was deleted since the dream read the store"
            if current["content_sha256"] != base["content_sha256"]:
                return "the memory was changed since the dream read the store"
            memory_id = current["id"]
            if entry.change == "modified":
                assert entry.after is not None
                await memory.update_memory(
                    conn,
                    store_id,
                    memory_id,
                    actor,
                    content=entry.after,
                    expected_sha256=base["content_sha256"],
                    version_id=version_id,
                )
            else:
                await memory.delete_memory(
                    conn,
                    store_id,
                    memory_id,
                    actor,
                    expected_sha256=base["content_sha256"],
                    version_id=version_id,
                )
        await dreams.add_change(
            conn,
            version_id=version_id,
            memory_id=memory_id,
            path=entry.path,
            before=current,
            after_content=entry.after,
            **provenance,
        )
        return None

    async def revert_dream(self, dream_id: str) -> ReviewResult:
        """Undo, newest first, what an `update_existing` dream wrote (or what applying a
        `create_new` one wrote), as new versions; a memory changed since is a conflict."""
        _id("dream", dream_id)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await _locked(conn, dream_id)
            kind = self._check_revert(dream_id, row)
            store_id = row["memory_store_id"]
            result = ReviewResult(dream_id=dream_id, action="revert", memory_store_id=store_id)
            actor = dreams.dream_actor(dream_id)
            for change in reversed(await dreams.changes(conn, dream_id, kind)):
                version_id = derived_id("memver", dream_id, "revert", str(change["seq"]))
                try:
                    async with conn.transaction():
                        reason = await self._revert_one(conn, store_id, change, actor, version_id)
                except REVIEW_REFUSALS as err:
                    reason = f"not written: {err.message}"
                path = change["before_path"] or change["path"]
                if reason:
                    result.conflicts.append(Conflict(path=path, reason=reason))
                elif path not in result.written:
                    result.written.append(path)
            await dreams.mark(conn, dream_id, "reverted_at")
        return result

    @staticmethod
    def _check_revert(dream_id: str, row: Any) -> str:
        """Which of the dream's changes a revert undoes (or why it cannot)."""
        if row["output_behavior"]["type"] == "update_existing":
            kind = "dream"
        elif row["applied_at"] is not None:
            kind = "apply"
        else:
            raise InvalidRequestError(
                f"dream {dream_id} has not been applied: its input store is unchanged (discard "
                "its output store instead)"
            )
        if row["status"] in ("pending", "running"):
            raise InvalidRequestError(f"dream {dream_id} is {row['status']}: cancel it first")
        if row["reverted_at"] is not None:
            raise InvalidRequestError(f"dream {dream_id} was reverted already")
        return kind

    async def _revert_one(
        self,
        conn: Connection,
        store_id: str,
        change: Any,
        actor: dict[str, Any],
        version_id: str,
    ) -> str | None:
        current = await conn.fetchrow(
            "SELECT id, path, content, content_sha256 FROM memories "
            "WHERE memory_store_id = $1 AND id = $2",
            store_id,
            change["memory_id"],
        )
        if change["after_content"] is None:  # the dream deleted it: write it back
            if current is not None or await _at(conn, store_id, change["before_path"]):
                return "a memory is at this path again since the dream deleted it"
            await memory.create_memory(
                conn,
                store_id,
                change["before_path"],
                change["before_content"],
                actor,
                max_memories=self.settings.memory_max_memories,
                version_id=version_id,
            )
        else:
            if current is None:
                return "the memory was deleted since the dream wrote it"
            if current["content_sha256"] != change["after_sha256"]:
                return "the memory was changed since the dream wrote it"
            if change["before_content"] is None:  # the dream made it
                await memory.delete_memory(
                    conn,
                    store_id,
                    current["id"],
                    actor,
                    expected_sha256=change["after_sha256"],
                    version_id=version_id,
                )
            else:
                await memory.update_memory(
                    conn,
                    store_id,
                    current["id"],
                    actor,
                    content=change["before_content"],
                    path=change["before_path"],
                    expected_sha256=change["after_sha256"],
                    version_id=version_id,
                )
        await dreams.add_change(
            conn,
            dream_id=change["dream_id"],
            kind="revert",
            version_id=version_id,
            store_id=store_id,
            memory_id=change["memory_id"],
            operation="revert",
            path=change["before_path"] or change["path"],
            before=current,
            after_content=change["before_content"],
        )
        return None

    async def discard_dream(self, dream_id: str) -> ReviewResult:
        """Archive a finished `create_new` dream's output store (it stays readable)."""
        _id("dream", dream_id)
        async with self.pool.acquire() as conn, conn.transaction():
            row = await _locked(conn, dream_id)
            if row["output_behavior"]["type"] != "create_new":
                raise InvalidRequestError(
                    f"dream {dream_id} wrote into its input store (update_existing): revert it "
                    "instead"
                )
            if row["status"] not in FINAL_STATUSES:
                raise InvalidRequestError(f"dream {dream_id} is {row['status']}: cancel it first")
            await dreams.mark(conn, dream_id, "discarded_at")
        output = row["output_store_id"]
        if output:  # (its own transaction: no second connection taken while one is held)
            with contextlib.suppress(NotFoundError):  # deleted already: nothing to archive
                await memory.archive_store(self.pool, output)
        return ReviewResult(dream_id=dream_id, action="discard", memory_store_id=output or "")

    # ---- schedules -------------------------------------------------------------------------

    async def create_dream_schedule(
        self, params: DreamScheduleCreate | dict[str, Any]
    ) -> DreamSchedule:
        """A Temporal schedule (visible in the Web UI and `temporal schedule list`) that runs
        `ScheduledDreamWorkflow` at each time of `cron` in `timezone`, never overlapping."""
        params = _parse(DreamScheduleCreate, params)
        store = await memory.get_store(self.pool, _id("memory store", params.memory_store_id))
        if store.archived_at is not None:
            raise InvalidRequestError(f"memory store {store.id} is archived")
        model = params.model
        if params.agent_id is not None:
            agent = await agents.get(self.pool, _id("agent", params.agent_id))
            model = model or agent.model.id
        if not model:
            raise InvalidRequestError(
                "a dream schedule needs a model (or an agent to take it from)"
            )
        try:
            zoneinfo.ZoneInfo(params.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise InvalidRequestError(f"unknown time zone {params.timezone!r}") from None
        schedule = DreamSchedule(
            id=new_id("dsch"),
            memory_store_id=store.id,
            agent_id=params.agent_id,
            cron=params.cron,
            timezone=params.timezone,
            mode=params.mode,
            model=model,
            instructions=params.instructions,
            created_at=datetime.now().astimezone(),
        )
        await dreams.create_schedule(self.pool, schedule)
        try:
            await self.temporal.create_schedule(
                schedule.id,
                Schedule(
                    action=ScheduleActionStartWorkflow(
                        ScheduledDreamWorkflow.run,
                        ScheduledDreamInput(
                            schedule_id=schedule.id, template=self._workflow_input()
                        ),
                        id=f"{SCHEDULE_RUN_PREFIX}/{schedule.id}",
                        task_queue=self.settings.task_queue,
                    ),
                    spec=ScheduleSpec(
                        cron_expressions=[params.cron], time_zone_name=params.timezone
                    ),
                    policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
                    state=ScheduleState(
                        note=f"{params.mode} dreams of memory store {store.id} ({store.name})"[:500]
                    ),
                ),
            )
        except (RPCError, ValueError) as error:
            await dreams.delete_schedule(self.pool, schedule.id)
            raise InvalidRequestError(f"Temporal refused the schedule: {error}") from None
        return await self.describe_dream_schedule(schedule.id)

    async def describe_dream_schedule(self, schedule_id: str) -> DreamSchedule:
        schedule = await dreams.get_schedule(self.pool, _id("dream schedule", schedule_id))
        try:
            described = await self.temporal.get_schedule_handle(schedule_id).describe()
        except RPCError as error:
            raise NotFoundError(
                f"Temporal has no schedule {schedule_id}: {error.message}"
            ) from None
        schedule.paused = described.schedule.state.paused
        schedule.next_run_times = list(described.info.next_action_times[:5])
        schedule.recent_dream_ids = await dreams.recent_runs(self.pool, schedule_id)
        return schedule

    async def list_dream_schedules(self) -> list[DreamSchedule]:
        return await dreams.list_schedules(self.pool)

    async def pause_dream_schedule(self, schedule_id: str, *, paused: bool = True) -> DreamSchedule:
        await dreams.get_schedule(self.pool, _id("dream schedule", schedule_id))
        handle = self.temporal.get_schedule_handle(schedule_id)
        if paused:
            await handle.pause(note="paused with reverie")
        else:
            await handle.unpause(note="resumed with reverie")
        return await self.describe_dream_schedule(schedule_id)

    async def trigger_dream_schedule(self, schedule_id: str) -> DreamSchedule:
        """Run the schedule now (skipped if a run is still going)."""
        await dreams.get_schedule(self.pool, _id("dream schedule", schedule_id))
        await self.temporal.get_schedule_handle(schedule_id).trigger()
        return await self.describe_dream_schedule(schedule_id)

    async def delete_dream_schedule(self, schedule_id: str) -> dict[str, str]:
        await dreams.get_schedule(self.pool, _id("dream schedule", schedule_id))
        with contextlib.suppress(RPCError):  # already gone from Temporal: forget it here too
            await self.temporal.get_schedule_handle(schedule_id).delete()
        await dreams.delete_schedule(self.pool, schedule_id)
        return {"type": "dream_schedule_deleted", "id": schedule_id}
