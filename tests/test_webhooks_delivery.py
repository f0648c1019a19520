"""Webhook deliveries end to end: the outbox, the dispatcher, the endpoint's workflow and a real
receiver on loopback; every signature checked by the SDK's own verifier (`unwrap`) and by the
`standardwebhooks` package."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from datetime import UTC, datetime
from typing import Any

import anthropic
import pytest
import standardwebhooks
from aiohttp import web

from reverie.models.webhooks import WEBHOOK_EVENT_TYPES, WebhookDelivery
from reverie.settings import Settings
from reverie.store import events, sessions
from tests.fake_model import FakeModelServer, Reply
from tests.webhook_support import (
    HookStack,
    Received,
    Receiver,
    hook_stack,
    receiver,
    wait_until,
)

SDK = anthropic.Anthropic(api_key="unused")


def verify(got: Received, secret: str) -> Any:
    """Both verifiers accept the delivery; the SDK's parse is returned."""
    standardwebhooks.Webhook(secret).verify(got.body, got.headers)
    return SDK.beta.webhooks.unwrap(got.body, headers=got.headers, key=secret)


async def deliveries(stack: HookStack, endpoint_id: str) -> list[WebhookDelivery]:
    page = await stack.client.list_webhook_deliveries(endpoint_id, limit=100)
    return [await stack.client.get_webhook_delivery(d.id) for d in page.data]


async def settled(stack: HookStack, endpoint_id: str, count: int) -> list[WebhookDelivery]:
    """Once `count` deliveries of the endpoint are no longer pending."""

    async def check() -> list[WebhookDelivery] | None:
        found = await deliveries(stack, endpoint_id)
        done = [d for d in found if d.state != "pending"]
        return found if len(done) >= count else None

    return await wait_until(check, what=f"{count} settled deliveries")


async def test_an_agent_created_event_is_delivered_and_verifies(settings: Settings) -> None:
    async with hook_stack(settings) as stack, receiver() as rx:
        endpoint = await stack.client.create_webhook(
            {"url": rx.url, "enabled_events": ["agent.created"], "name": "ci"}
        )
        assert endpoint.signing_secret.startswith("whsec_")
        agent = await stack.client.create_agent({"name": "a", "model": "m"})
        [got] = await rx.wait_for(1)
        event = verify(got, endpoint.signing_secret)
        assert event.type == "event"
        assert event.id == got.webhook_id
        assert event.data.type == "agent.created"
        assert event.data.id == agent.id
        assert event.data.organization_id and event.data.workspace_id
        assert got.headers["content-type"] == "application/json"
        assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
        [delivery] = await settled(stack, endpoint.id, 1)
        assert delivery.state == "delivered"
        assert delivery.event_id == got.webhook_id
        assert [(a.number, a.status, a.address, a.webhook_id) for a in delivery.attempts] == [
            (1, 200, "127.0.0.2", got.webhook_id)
        ]
        assert delivery.attempts[0].latency_ms is not None
        # An agent update is not announced to an endpoint that did not ask for it.
        await stack.client.update_agent(agent.id, {"description": "changed"})
        await asyncio.sleep(1.0)
        assert len(rx.received) == 1


async def test_session_events_announce_their_webhook_types(settings: Settings) -> None:
    """Each status event of a session's log (written as the session's activities write them)
    is announced under its webhook types; events no webhook announces cost nothing."""
    async with hook_stack(settings) as stack, receiver() as rx:
        endpoint = await stack.client.create_webhook(
            {"url": rx.url, "enabled_events": list(WEBHOOK_EVENT_TYPES)}
        )
        agent = await stack.client.create_agent({"name": "a", "model": "m"})
        session_id = "sesn_webhooktest"
        async with stack.pool.acquire() as conn, conn.transaction():
            await sessions.create(
                conn, session_id, agent, environment_id="env_default", title=None,
                metadata={}, resources=[],
            )  # fmt: skip
        now = datetime.now(UTC)
        log = [
            ("sevt_1", "session.status_running", {}),
            ("sevt_2", "agent.message", {"content": [{"type": "text", "text": "hi"}]}),
            ("sevt_3", "session.status_idle", {"stop_reason": {"type": "end_turn"}}),
            ("sevt_4", "session.status_rescheduled", {}),
            (
                "sevt_5",
                "session.status_idle",
                {"stop_reason": {"type": "requires_action", "event_ids": ["sevt_x"]}},
            ),
            ("sevt_6", "span.outcome_evaluation_end", {"outcome_id": "outc_1"}),
            ("sevt_7", "session.thread_created", {"session_thread_id": "sthr_1"}),
            (
                "sevt_8",
                "session.thread_status_idle",
                {"session_thread_id": "sthr_1", "stop_reason": {"type": "end_turn"}},
            ),
            ("sevt_9", "session.thread_status_terminated", {}),  # no thread named: nothing
            ("sevt_10", "session.status_terminated", {}),
        ]
        for event_id, kind, payload in log:
            await events.append(stack.pool, session_id, [(event_id, kind, payload, now)])
        # A retried write of events already recorded owes nothing more.
        await events.append(stack.pool, session_id, [(e, k, p, now) for e, k, p in log])
        expected = [
            "agent.created",
            "session.created",
            "session.status_run_started",
            "session.running",
            "session.status_idled",
            "session.idled",
            "session.status_rescheduled",
            "session.status_idled",
            "session.idled",
            "session.requires_action",
            "session.outcome_evaluation_ended",
            "session.thread_created",
            "session.thread_idled",
            "session.status_terminated",
        ]
        await rx.wait_for(len(expected))
        await asyncio.sleep(1.0)  # nothing more comes
        parsed = [verify(got, endpoint.signing_secret) for got in rx.received]
        assert sorted(e.data.type for e in parsed) == sorted(expected)
        assert {e.data.id for e in parsed if e.data.type.startswith("session.")} == {session_id}
        threads = [e for e in parsed if e.data.type.startswith("session.thread_")]
        assert {e.data.session_thread_id for e in threads} == {"sthr_1"}
        assert len({e.id for e in parsed}) == len(expected)  # one id per announcement
        found = await settled(stack, endpoint.id, len(expected))
        assert len(found) == len(expected)
        assert {d.state for d in found} == {"delivered"}


async def test_a_running_session_announces_its_life(
    settings: Settings, fake_model: FakeModelServer, model_name: str
) -> None:
    """A real session (workflow, activities, the fake model): created, running, idled,
    archived (terminated), deleted; agent and environment changes too."""
    fake_model.script(model_name, [Reply.text("hello")])
    async with hook_stack(settings, sessions=True) as stack, receiver() as rx:
        endpoint = await stack.client.create_webhook(
            {"url": rx.url, "enabled_events": list(WEBHOOK_EVENT_TYPES)}
        )
        client = stack.client
        environment = await client.create_environment({"name": "hooks"})
        await client.update_environment(environment.id, {"description": "changed"})
        agent = await client.create_agent({"name": "a", "model": model_name})
        await client.update_agent(agent.id, {"system": "be brief"})
        session = await client.create_session({"agent": agent.id, "environment_id": environment.id})
        await client.send_message(session.id, "hi")
        await client.wait_until_settled(session.id)
        await client.archive_session(session.id)
        await client.delete_session(session.id)
        await client.archive_agent(agent.id)
        await client.archive_agent(agent.id)  # already archived: announced once
        await client.archive_environment(environment.id)
        await client.delete_environment(environment.id)
        expected = [
            ("environment.created", environment.id),
            ("environment.updated", environment.id),
            ("agent.created", agent.id),
            ("agent.updated", agent.id),
            ("session.created", session.id),
            ("session.status_run_started", session.id),
            ("session.running", session.id),
            ("session.status_idled", session.id),
            ("session.idled", session.id),
            ("session.status_terminated", session.id),
            ("session.archived", session.id),
            ("session.deleted", session.id),
            ("agent.archived", agent.id),
            ("environment.archived", environment.id),
            ("environment.deleted", environment.id),
        ]
        await rx.wait_for(len(expected))
        await asyncio.sleep(1.0)
        parsed = [verify(got, endpoint.signing_secret) for got in rx.received]
        assert sorted((e.data.type, e.data.id) for e in parsed) == sorted(expected)


async def test_three_failures_then_success_is_four_attempts_under_one_id(
    settings: Settings,
) -> None:
    async with hook_stack(settings) as stack, receiver(answers=[500, 503, 429, 204]) as rx:
        endpoint = await stack.client.create_webhook(
            {"url": rx.url, "enabled_events": ["agent.created"]}
        )
        await stack.client.create_agent({"name": "a", "model": "m"})
        got = await rx.wait_for(4)
        [delivery] = await settled(stack, endpoint.id, 1)
        assert {r.webhook_id for r in got} == {delivery.event_id}
        assert {r.body for r in got} == {got[0].body}  # the same bytes each time
        for request in got:
            verify(request, endpoint.signing_secret)  # each attempt signed afresh
        assert delivery.state == "delivered"
        assert delivery.attempt_count == 4
        assert [(a.number, a.status) for a in delivery.attempts] == [
            (1, 500),
            (2, 503),
            (3, 429),
            (4, 204),
        ]
        assert [a.error for a in delivery.attempts][:3] == ["HTTP 500", "HTTP 503", "HTTP 429"]
        assert delivery.attempts[3].error is None
        # Each retry waited its backoff (0.2 s, then doubling; timers fire on whole seconds on
        # the dev server, so only the lower bound is checked: `retry_at` has its own test).
        gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
        assert all(gap >= 0.15 for gap in gaps), gaps
        await asyncio.sleep(1.0)
        assert len(rx.received) == 4


async def test_a_receiver_that_is_down_gets_it_when_it_comes_back(settings: Settings) -> None:
    down = await Receiver().start()
    port = down.port
    await down.stop()
    async with hook_stack(settings) as stack:
        endpoint = await stack.client.create_webhook(
            {"url": f"http://127.0.0.2:{port}/hook", "enabled_events": ["agent.created"]}
        )
        await stack.client.create_agent({"name": "a", "model": "m"})

        async def failed_twice() -> bool:
            found = await deliveries(stack, endpoint.id)
            return bool(found) and found[0].attempt_count >= 2

        await wait_until(failed_twice, what="two failed attempts")
        back = await Receiver().start(port)
        try:
            [got] = await back.wait_for(1)
            [delivery] = await settled(stack, endpoint.id, 1)
        finally:
            await back.stop()
        assert delivery.state == "delivered"
        assert got.webhook_id == delivery.event_id
        errors = [a.error for a in delivery.attempts]
        assert all(e and "Connect" in e for e in errors[:-1]), errors
        assert errors[-1] is None
        assert {a.webhook_id for a in delivery.attempts} == {delivery.event_id}


async def test_a_dead_endpoint_ends_disabled_not_retried_forever(settings: Settings) -> None:
    async with (
        hook_stack(settings, webhook_disable_after=3, webhook_retry_seconds=0.6) as stack,
        receiver(answers=lambda got, index: 500) as rx,
    ):
        endpoint = await stack.client.create_webhook(
            {"url": rx.url, "enabled_events": ["agent.created"]}
        )
        for n in range(3):
            await stack.client.create_agent({"name": f"a{n}", "model": "m"})

        async def disabled() -> Any:
            found = await stack.client.get_webhook(endpoint.id)
            return found if found.state == "disabled" else None

        found = await wait_until(disabled, what="the endpoint disabled")
        assert "3 consecutive failed deliveries" in found.disabled_reason
        assert "HTTP 500" in found.disabled_reason
        finished = await settled(stack, endpoint.id, 3)
        assert {d.state for d in finished} == {"failed"}
        assert all(d.attempt_count >= 2 for d in finished)  # each was retried first
        # Disabled: new events owe it nothing, and nothing more is sent.
        count = len(rx.received)
        await stack.client.create_agent({"name": "later", "model": "m"})
        await asyncio.sleep(1.5)
        assert len(rx.received) == count
        assert len(await deliveries(stack, endpoint.id)) == 3
        # Enabled again: the reason is cleared, and new events are delivered.
        rx.answers = []
        enabled = await stack.client.enable_webhook(endpoint.id)
        assert (enabled.state, enabled.disabled_reason) == ("enabled", "")
        await stack.client.create_agent({"name": "after", "model": "m"})
        await rx.wait_for(count + 1)
        # A failed delivery can be redelivered by hand: same webhook-id, a new round.
        failed = finished[0]
        before = sum(r.webhook_id == failed.event_id for r in rx.received)
        again = await stack.client.redeliver_webhook(failed.id)
        assert again.state == "pending" and again.redeliveries == 1

        async def redelivered() -> bool:
            done = await stack.client.get_webhook_delivery(failed.id)
            return done.state == "delivered"

        await wait_until(redelivered, what="the redelivery")
        assert sum(r.webhook_id == failed.event_id for r in rx.received) == before + 1
        done = await stack.client.get_webhook_delivery(failed.id)
        assert done.attempts[-1].status == 200
        assert {a.webhook_id for a in done.attempts} == {failed.event_id}


async def test_rotation_signs_with_both_secrets_during_the_grace_period(
    settings: Settings,
) -> None:
    async with hook_stack(settings) as stack, receiver() as rx:
        endpoint = await stack.client.create_webhook(
            {"url": rx.url, "enabled_events": ["agent.created"]}
        )
        old = endpoint.signing_secret
        rotated = await stack.client.regenerate_webhook_secret(endpoint.id, grace_seconds=3600)
        new = rotated.signing_secret
        assert new != old and new.startswith("whsec_")
        assert rotated.previous_secret_expires_at is not None
        await stack.client.create_agent({"name": "a", "model": "m"})
        [got] = await rx.wait_for(1)
        assert len(got.headers["webhook-signature"].split(" ")) == 2
        verify(got, old)  # receivers not switched yet still verify
        verify(got, new)
        # Regenerated again without grace: only the newest secret signs.
        newest = await stack.client.regenerate_webhook_secret(endpoint.id, grace_seconds=0)
        assert newest.previous_secret_expires_at is None
        await stack.client.create_agent({"name": "b", "model": "m"})
        got = (await rx.wait_for(2))[1]
        assert len(got.headers["webhook-signature"].split(" ")) == 1
        verify(got, newest.signing_secret)
        for stale in (old, new):
            with pytest.raises(standardwebhooks.WebhookVerificationError):
                standardwebhooks.Webhook(stale).verify(got.body, got.headers)
            with pytest.raises(standardwebhooks.WebhookVerificationError):
                SDK.beta.webhooks.unwrap(got.body, headers=got.headers, key=stale)


async def test_a_grace_period_ends(settings: Settings) -> None:
    async with hook_stack(settings) as stack, receiver() as rx:
        endpoint = await stack.client.create_webhook(
            {"url": rx.url, "enabled_events": ["agent.created"]}
        )
        rotated = await stack.client.regenerate_webhook_secret(endpoint.id, grace_seconds=0.5)
        await asyncio.sleep(1.0)
        await stack.client.create_agent({"name": "a", "model": "m"})
        [got] = await rx.wait_for(1)
        verify(got, rotated.signing_secret)
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            standardwebhooks.Webhook(endpoint.signing_secret).verify(got.body, got.headers)


async def test_redirects_are_never_followed(settings: Settings) -> None:
    async with receiver() as elsewhere:

        def answer(got: Received, index: int) -> Any:
            if index < 2:
                raise web.HTTPFound(elsewhere.url)
            return 200

        async with hook_stack(settings) as stack, receiver(answers=answer) as rx:
            endpoint = await stack.client.create_webhook(
                {"url": rx.url, "enabled_events": ["agent.created"]}
            )
            await stack.client.create_agent({"name": "a", "model": "m"})
            [delivery] = await settled(stack, endpoint.id, 1)
            assert delivery.state == "delivered"
            assert [a.status for a in delivery.attempts] == [302, 302, 200]
            assert "redirect" in (delivery.attempts[0].error or "")
            assert "never followed" in (delivery.attempts[0].error or "")
            assert elsewhere.received == []
            assert len({r.webhook_id for r in rx.received}) == 1


async def test_huge_and_slow_answers_are_bounded(settings: Settings) -> None:
    async def answer(got: Received, index: int) -> Any:
        if index == 0:
            await asyncio.sleep(10)  # past the 3 s attempt timeout
            return 200
        if index == 1:
            return _Huge(status=500)
        return 200

    async with hook_stack(settings) as stack, receiver(answers=answer) as rx:
        endpoint = await stack.client.create_webhook(
            {"url": rx.url, "enabled_events": ["agent.created"]}
        )
        started = time.monotonic()
        await stack.client.create_agent({"name": "a", "model": "m"})
        [delivery] = await settled(stack, endpoint.id, 1)
        assert time.monotonic() - started < 20
        assert delivery.state == "delivered"
        first, second, third = delivery.attempts
        assert first.status is None and "no answer within 3 s" in (first.error or "")
        assert first.latency_ms is not None and first.latency_ms < 5000
        assert second.status == 500
        assert second.latency_ms is not None and second.latency_ms < 3000
        assert third.status == 200
        assert len(rx.received) == 3


class _Huge(web.StreamResponse):
    """An answer of endless megabytes (only what the client reads is ever sent)."""

    async def prepare(self, request: web.BaseRequest) -> Any:
        self.enable_chunked_encoding()
        writer = await super().prepare(request)
        chunk = b"x" * 1024 * 1024
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            for _ in range(200):  # up to 200 MiB, if anyone read it
                await self.write(chunk)
        return writer


async def test_memory_store_changes_are_announced_once_each(settings: Settings) -> None:
    kinds = ["memory_store.created", "memory_store.archived", "memory_store.deleted"]
    async with hook_stack(settings) as stack, receiver() as rx:
        endpoint = await stack.client.create_webhook({"url": rx.url, "enabled_events": kinds})
        store = await stack.client.create_memory_store({"name": "announced"})
        await stack.client.archive_memory_store(store.id)
        await stack.client.archive_memory_store(store.id)  # already archived: no second event
        await stack.client.delete_memory_store(store.id)
        got = await rx.wait_for(3)
        await asyncio.sleep(1.0)
        assert len(rx.received) == 3
        announced = [verify(g, endpoint.signing_secret).data for g in got]
        assert sorted((d.type, d.id) for d in announced) == sorted((k, store.id) for k in kinds)
