"""Webhooks when workers die, and deliveries that exist once: a worker killed mid-delivery (the
attempt is made again under the same id), a worker killed between an event's commit and its
dispatch (delivered by the next worker), and one delivery per (event, endpoint) however often
it is written."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import standardwebhooks
from temporalio.client import WorkflowExecutionStatus

from reverie.activities.webhook import TEST_HOOK_FREEZE_DISPATCH, start_dispatcher_if_needed
from reverie.models.webhooks import dispatcher_workflow_id, endpoint_workflow_id
from reverie.settings import Settings
from reverie.store import events, sessions
from tests.helpers import kill, worker_process
from tests.webhook_support import (
    Received,
    hook_stack,
    receiver,
    wait_until,
    webhook_env,
)


async def test_a_worker_killed_during_a_delivery_still_delivers_it_under_the_same_id(
    settings: Settings,
) -> None:
    async def answer(got: Received, index: int) -> Any:
        if index == 0:
            await asyncio.sleep(60)  # the first attempt never gets an answer: its worker dies
        return 200

    # A long attempt timeout (so its lease lasts 40 s): the attempt is made again because the
    # delivering activity's retry finds it orphaned, not because a lease ran out.
    async with (
        hook_stack(settings, worker=False, webhook_timeout_seconds=30) as stack,
        receiver(answers=answer) as rx,
    ):
        endpoint = await stack.client.create_webhook(
            {"url": rx.url, "enabled_events": ["agent.created"]}
        )
        async with worker_process(stack.settings, webhook_env(stack.settings)) as first:
            await stack.client.create_agent({"name": "a", "model": "m"})
            await rx.wait_for(1, timeout=60)
            await kill(first)
        [delivery] = (await stack.client.list_webhook_deliveries(endpoint.id)).data
        assert delivery.state == "pending"
        async with worker_process(stack.settings, webhook_env(stack.settings)):
            started = asyncio.get_running_loop().time()
            got = await rx.wait_for(2, timeout=60)

            async def delivered() -> Any:
                found = await stack.client.get_webhook_delivery(delivery.id)
                return found if found.state == "delivered" else None

            done = await wait_until(delivered, timeout=30, what="the delivery")
            assert asyncio.get_running_loop().time() - started < 30
        assert got[0].webhook_id == got[1].webhook_id == done.event_id
        assert got[0].body == got[1].body
        for request in got:
            standardwebhooks.Webhook(endpoint.signing_secret).verify(request.body, request.headers)
        assert [(a.number, a.status) for a in done.attempts] == [(1, None), (2, 200)]
        assert "worker" in (done.attempts[0].error or "")
        await asyncio.sleep(1.0)
        assert len(rx.received) == 2


async def test_a_worker_killed_between_commit_and_dispatch_still_delivers(
    settings: Settings, tmp_path: Path
) -> None:
    frozen = tmp_path / "dispatcher-frozen"
    async with hook_stack(settings, worker=False) as stack, receiver() as rx:
        endpoint = await stack.client.create_webhook(
            {"url": rx.url, "enabled_events": ["agent.created"]}
        )
        async with worker_process(
            stack.settings, webhook_env(stack.settings, {TEST_HOOK_FREEZE_DISPATCH: str(frozen)})
        ) as first:
            agent = await stack.client.create_agent({"name": "a", "model": "m"})
            await wait_until(lambda: _exists(frozen), timeout=60, what="the dispatcher to freeze")
            await kill(first)
        # Committed with its event, never dispatched, nothing sent.
        row = await stack.pool.fetchrow(
            "SELECT dispatched_at, state, attempts FROM webhook_deliveries WHERE endpoint_id = $1",
            endpoint.id,
        )
        assert (row["dispatched_at"], row["state"], row["attempts"]) == (None, "pending", 0)
        assert rx.received == []
        async with worker_process(stack.settings, webhook_env(stack.settings)):
            [got] = await rx.wait_for(1, timeout=60)

            async def delivered() -> Any:
                page = await stack.client.list_webhook_deliveries(endpoint.id)
                return page.data if page.data[0].state == "delivered" else None

            [delivery] = await wait_until(delivered, what="the delivery")
        assert delivery.dispatched_at is not None and delivery.attempt_count == 1
        payload = standardwebhooks.Webhook(endpoint.signing_secret).verify(got.body, got.headers)
        assert payload["data"]["id"] == agent.id
        assert got.webhook_id == delivery.event_id


async def _exists(path: Path) -> bool:
    return path.exists()


async def test_each_event_is_owed_once_per_endpoint(settings: Settings) -> None:
    """Written twice (a retried write, which records nothing new), the same events owe each
    endpoint one delivery; each endpoint gets each once, all under the event's one id."""
    async with hook_stack(settings) as stack, receiver() as one, receiver() as two:
        endpoints = [
            await stack.client.create_webhook(
                {"url": rx.url, "enabled_events": ["session.status_idled"]}
            )
            for rx in (one, two)
        ]
        agent = await stack.client.create_agent({"name": "a", "model": "m"})
        async with stack.pool.acquire() as conn, conn.transaction():
            await sessions.create(
                conn, "sesn_once", agent, environment_id="env_default", title=None,
                metadata={}, resources=[],
            )  # fmt: skip
        now = datetime.now(UTC)
        rows = [
            ("sevt_a", "session.status_idle", {"stop_reason": {"type": "end_turn"}}, now),
            ("sevt_b", "session.status_idle", {"stop_reason": {"type": "end_turn"}}, now),
        ]
        for _ in range(3):
            await events.append(stack.pool, "sesn_once", rows)
        count = await stack.pool.fetchval("SELECT count(*) FROM webhook_deliveries")
        assert count == 4  # 2 events x 2 endpoints
        await one.wait_for(2)
        await two.wait_for(2)
        await asyncio.sleep(1.0)
        assert len(one.received) == len(two.received) == 2
        ids_one = sorted(r.webhook_id for r in one.received)
        ids_two = sorted(r.webhook_id for r in two.received)
        assert ids_one == ids_two and len(set(ids_one)) == 2
        for endpoint, rx in zip(endpoints, (one, two), strict=True):
            for request in rx.received:
                standardwebhooks.Webhook(endpoint.signing_secret).verify(
                    request.body, request.headers
                )


async def test_a_worker_starts_the_dispatcher_when_endpoints_exist(settings: Settings) -> None:
    """A dispatcher lost with Temporal's history (here: terminated) is started again when a
    worker starts, and what was owed meanwhile is delivered; with no endpoint none is started."""
    async with hook_stack(settings) as stack, receiver() as rx:
        handle = stack.temporal.get_workflow_handle(
            dispatcher_workflow_id(stack.settings.task_queue)
        )
        await handle.terminate("lost")
        await start_dispatcher_if_needed(stack.temporal, stack.pool, stack.settings)
        assert (await handle.describe()).status == WorkflowExecutionStatus.TERMINATED
        endpoint = await stack.client.create_webhook(
            {"url": rx.url, "enabled_events": ["agent.created"]}
        )
        await stack.client.create_agent({"name": "a", "model": "m"})
        await rx.wait_for(1)

        async def first_settled() -> bool:
            page = await stack.client.list_webhook_deliveries(endpoint.id)
            return page.data[0].state == "delivered"

        await wait_until(first_settled, what="the first delivery")
        await asyncio.sleep(0.5)  # its round is over (a round takes what comes in meanwhile)
        await handle.terminate("lost again")
        await asyncio.sleep(3.0)  # its activity hears of it at its next heartbeat, and stops
        await stack.client.create_agent({"name": "b", "model": "m"})
        await asyncio.sleep(1.5)
        assert len(rx.received) == 1  # owed, not dispatched: no dispatcher
        await start_dispatcher_if_needed(stack.temporal, stack.pool, stack.settings)
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        await rx.wait_for(2)
        page = await stack.client.list_webhook_deliveries(endpoint.id)
        assert {r.webhook_id for r in rx.received} == {d.event_id for d in page.data}


async def test_an_endpoint_workflow_keeps_its_history_bounded_and_ends_with_its_endpoint(
    settings: Settings,
) -> None:
    """Round after round an endpoint's workflow continues as new (the test server suggests it
    after 200 events); disabled or deleted, it ends at once."""
    async with hook_stack(settings) as stack, receiver() as rx:
        endpoint = await stack.client.create_webhook(
            {"url": rx.url, "enabled_events": ["agent.created"]}
        )
        handle = stack.temporal.get_workflow_handle(endpoint_workflow_id(endpoint.id))
        for n in range(30):  # one round each: ~8 history events a round
            await stack.client.create_agent({"name": f"a{n}", "model": "m"})
            await rx.wait_for(n + 1)
            await asyncio.sleep(0.1)
        history = await handle.fetch_history()
        started = history.events[0].workflow_execution_started_event_attributes
        assert started.continued_execution_run_id  # this run continued an earlier one
        assert len(history.events) < 260  # 200, and what the round under way added
        assert len({r.webhook_id for r in rx.received}) == 30
        await stack.client.disable_webhook(endpoint.id)

        async def ended() -> bool:
            status = (await handle.describe()).status
            return status == WorkflowExecutionStatus.COMPLETED

        await wait_until(ended, timeout=15, what="the workflow to end when disabled")
        await stack.client.enable_webhook(endpoint.id)
        await stack.client.create_agent({"name": "after", "model": "m"})
        await rx.wait_for(31)
        await stack.client.delete_webhook(endpoint.id)
        await wait_until(ended, timeout=15, what="the workflow to end when deleted")


async def test_an_endpoint_deleted_while_an_event_is_recorded_never_fails_the_recording(
    settings: Settings,
) -> None:
    """The delete is not committed yet when the event's transaction owes the endpoint a
    delivery: the event is recorded all the same (and owes the vanished endpoint nothing)."""
    async with hook_stack(settings, worker=False) as stack:
        endpoint = await stack.client.create_webhook(
            {"url": "https://8.8.8.8/hook", "enabled_events": ["session.status_idled"]}
        )
        agent = await stack.client.create_agent({"name": "a", "model": "m"})
        async with stack.pool.acquire() as conn, conn.transaction():
            await sessions.create(
                conn, "sesn_race", agent, environment_id="env_default", title=None,
                metadata={}, resources=[],
            )  # fmt: skip
        row = ("sevt_race", "session.status_idle", {"stop_reason": {"type": "end_turn"}})
        async with stack.pool.acquire() as deleting:
            transaction = deleting.transaction()
            await transaction.start()
            await deleting.execute("DELETE FROM webhook_endpoints WHERE id = $1", endpoint.id)
            recording = asyncio.create_task(
                events.append(stack.pool, "sesn_race", [(*row, datetime.now(UTC))])
            )
            await asyncio.sleep(0.5)
            await transaction.commit()
        assert await recording == 1
        assert await stack.pool.fetchval("SELECT count(*) FROM webhook_deliveries") == 0
        # The same for objects announced by their store modules (an agent created).
        other = await stack.client.create_webhook(
            {"url": "https://8.8.8.8/hook", "enabled_events": ["agent.created"]}
        )
        async with stack.pool.acquire() as deleting:
            transaction = deleting.transaction()
            await transaction.start()
            await deleting.execute("DELETE FROM webhook_endpoints WHERE id = $1", other.id)
            creating = asyncio.create_task(stack.client.create_agent({"name": "b", "model": "m"}))
            await asyncio.sleep(0.5)
            await transaction.commit()
        assert (await creating).name == "b"
        assert await stack.pool.fetchval("SELECT count(*) FROM webhook_deliveries") == 0
