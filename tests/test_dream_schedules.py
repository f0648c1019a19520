"""Scheduled dreams on the dev server's Temporal schedules, driven through `reverie dream ...`
(the real command line) and the client: a triggered run dreams over the sessions that had the
store attached; a run with no new sessions does nothing; a later run reads only the new ones;
the same scheduled time run twice does its work once; pause, resume, delete."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from temporalio.client import Client, ScheduleOverlapPolicy, WorkflowFailureError

from reverie.activities.dream import TEST_HOOK_SLOW_SCHEDULE_PICK
from reverie.models.dreams import DreamSchedule, ScheduledDreamInput, SchedulePicked
from reverie.service.client import ReverieClient
from reverie.settings import Settings
from reverie.store import dreams
from reverie.workflows.dream_schedule import ScheduledDreamWorkflow
from tests.dream_support import contents, findings, operations, session_with, store_with
from tests.fake_model import FakeModelServer
from tests.helpers import worker_process
from tests.test_cli import cli_env, run_cli


async def run_once(reverie: ReverieClient, temporal: Client, schedule_id: str, n: int) -> list[str]:
    """Trigger the schedule (its `n`th run), wait for the run to end; its dreams' ids.

    A run's scheduled time has whole seconds, and a run at the time of an earlier one is that
    run again (it does nothing new): so a new run is triggered in the next second."""
    await asyncio.sleep(1.05 - datetime.now(UTC).microsecond / 1e6)
    await reverie.trigger_dream_schedule(schedule_id)
    handle = temporal.get_schedule_handle(schedule_id)
    for _ in range(300):
        actions = (await handle.describe()).info.recent_actions
        if len(actions) >= n:
            break
        await asyncio.sleep(0.1)
    workflow_id = actions[-1].action.workflow_id  # type: ignore[union-attr]
    handle = temporal.get_workflow_handle(workflow_id, result_type=SchedulePicked)
    return (await handle.result()).dream_ids


async def test_a_schedule_dreams_over_new_sessions_once(
    reverie: ReverieClient,
    temporal_client: Client,
    settings: Settings,
    fake_model: FakeModelServer,
    model_name: str,
) -> None:
    env = cli_env(settings)
    agent = (await reverie.create_agent({"name": "nightly", "model": model_name})).id
    store = await store_with(reverie, "Nightly", {})
    first = sorted([await session_with(reverie, agent, store, f"day one {n}") for n in range(2)])
    made = await run_cli(
        env, "dream", "schedule", "create", "--memory-store", store, "--agent", agent,
        "--cron", "0 3 * * *", "--timezone", "Europe/Paris", "--mode", "review", "--json",
    )  # fmt: skip
    schedule = made.json()
    schedule_id = schedule["id"]
    assert (schedule["model"], schedule["mode"], schedule["paused"]) == (
        model_name,
        "review",
        False,
    )
    assert schedule["next_run_times"]
    described = await temporal_client.get_schedule_handle(schedule_id).describe()
    assert described.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
    listed = [s.id async for s in await temporal_client.list_schedules()]
    assert schedule_id in listed

    # The first run: the two sessions, one review (create_new) dream.
    fake_model.script(
        model_name,
        [findings(("habits", "Works at night", "day one"))] * 2
        + [operations({"op": "create", "path": "/habits/night.md", "content": "Works at night.",
                       "supporting_sessions": first})],
    )  # fmt: skip
    dream_ids = await run_once(reverie, temporal_client, schedule_id, 1)
    assert len(dream_ids) == 1
    dream = await reverie.wait_for_dream(dream_ids[0])
    assert dream.status == "completed"
    assert dream.inputs[1]["session_ids"] == first
    assert dream.output_behavior == {"type": "create_new"}
    assert await contents(reverie, store) == {}  # review mode: the input waits for apply
    shown = await run_cli(env, "dream", "diff", dream.id)
    assert shown.code == 0, shown.err
    assert "ADDED" in shown.out and "/habits/night.md" in shown.out
    assert "supported by 2 session(s)" in shown.out
    applied = await run_cli(env, "dream", "apply", dream.id, "--json")
    assert applied.json()["written"] == ["/habits/night.md"]
    assert await contents(reverie, store) == {"/habits/night.md": "Works at night."}
    requests = len(fake_model.requests(model_name))

    # No new sessions: nothing to do, no model call.
    assert await run_once(reverie, temporal_client, schedule_id, 2) == []
    assert len(fake_model.requests(model_name)) == requests

    # A new session: only it is read.
    later = await session_with(reverie, agent, store, "day two")
    fake_model.script(model_name, [findings(("habits", "Still at night", "day two"))])
    (second,) = await run_once(reverie, temporal_client, schedule_id, 3)
    assert (await reverie.wait_for_dream(second)).inputs[1]["session_ids"] == [later]
    assert len(fake_model.requests(model_name)) == requests + 2

    # The same scheduled time twice: the second run finds the first's dream, reads nothing.
    newest = await session_with(reverie, agent, store, "day three")
    fake_model.script(model_name, [findings(("habits", "Night owl", "day three"))])
    when = datetime.now(UTC)
    runs = []
    for n in range(2):
        runs.append(
            await temporal_client.execute_workflow(
                ScheduledDreamWorkflow.run,
                ScheduledDreamInput(schedule_id=schedule_id, scheduled_time=when),
                id=f"{schedule_id}-again-{n}",
                task_queue=settings.task_queue,
            )
        )
    assert runs[0].dream_ids == runs[1].dream_ids and runs[0].session_count == 1
    assert (await reverie.get_dream(runs[0].dream_ids[0])).inputs[1]["session_ids"] == [newest]
    assert len(fake_model.requests(model_name)) == requests + 4
    assert (
        await reverie.pool.fetchval(
            "SELECT count(*) FROM dream_findings WHERE session_id = $1", newest
        )
        == 1
    )

    # A dream on request from the command line, waited for, then listed by status.
    fake_model.script(model_name, [findings()])
    made = await run_cli(
        env, "dream", "create", "--memory-store", store, "--session", newest, later,
        "--model", model_name, "--update-existing", "--wait", "60", "--json",
    )  # fmt: skip
    asked = made.json()
    assert asked["status"] == "completed"
    assert asked["output_behavior"] == {"type": "update_existing", "memory_store_id": store}
    assert asked["inputs"][1]["session_ids"] == sorted([newest, later])
    listed_out = await run_cli(env, "dream", "list", "--status", "completed", "--limit", "100")
    assert asked["id"] in listed_out.out

    # Pause, resume, delete.
    paused = await run_cli(env, "dream", "schedule", "pause", schedule_id, "--json")
    assert paused.json()["paused"] is True
    assert (await reverie.pause_dream_schedule(schedule_id, paused=False)).paused is False
    deleted = await run_cli(env, "dream", "schedule", "delete", schedule_id)
    assert deleted.code == 0, deleted.err
    assert schedule_id not in [s.id for s in await reverie.list_dream_schedules()]
    gone = await run_cli(env, "dream", "schedule", "describe", schedule_id)
    assert gone.code == 1 and "not_found_error" in gone.err

    # More sessions than a dream takes are split (batches of 2 here, of 100 in a run), in
    # creation order, and the cursor moves past all of them.
    other = DreamSchedule(
        id=f"dsch_split_{model_name[-6:]}", memory_store_id=store, cron="0 3 * * *",
        timezone="UTC", mode="auto", model=model_name, created_at=datetime.now(UTC),
    )  # fmt: skip
    await dreams.create_schedule(reverie.pool, other)
    every = [*first, later, newest]
    async with reverie.pool.acquire() as conn, conn.transaction():
        batches, new = await dreams.pick_sessions(conn, other.id, datetime.now(UTC), batch=2)
    assert new and [len(b) for b in batches] == [2, 2]
    assert sorted(s for b in batches for s in b) == sorted(every)
    async with reverie.pool.acquire() as conn, conn.transaction():
        assert await dreams.pick_sessions(conn, other.id, datetime.now(UTC), batch=2) == ([], True)


async def test_a_run_canceled_while_it_picks_ends_the_dreams_it_made(
    own_queue: ReverieClient, temporal_client: Client, model_name: str
) -> None:
    """The pick commits this time's dreams and moves the cursor; a cancel landing before the run
    hears back must not leave them pending for ever (no later run picks their sessions)."""
    client = own_queue  # served only by the worker started below, whose pick is slowed
    agent = (await client.create_agent({"name": "canceled", "model": model_name})).id
    store = await store_with(client, "Canceled", {})
    await session_with(client, agent, store, "one thing")
    schedule = await client.create_dream_schedule(
        {"memory_store_id": store, "agent_id": agent, "cron": "0 3 1 1 *", "mode": "review"}
    )
    async with worker_process(client.settings, env={TEST_HOOK_SLOW_SCHEDULE_PICK: "3"}):
        handle = await temporal_client.start_workflow(
            ScheduledDreamWorkflow.run,
            ScheduledDreamInput(schedule_id=schedule.id, scheduled_time=datetime.now(UTC)),
            id=f"{schedule.id}-canceled",
            task_queue=client.settings.task_queue,
        )
        made: list[str] = []
        for _ in range(100):  # the pick has committed: its dreams exist, pending
            made = [
                d.id
                for d in (await client.list_dreams(limit=100)).data
                if d.status == "pending" and d.inputs[0].get("memory_store_id") == store
            ]
            if made:
                break
            await asyncio.sleep(0.1)
        assert made, "the pick never made its dream"
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert [(await client.get_dream(d)).status for d in made] == ["canceled"]
    await client.delete_dream_schedule(schedule.id)
