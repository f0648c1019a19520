"""Webhook activities: the dispatcher (outbox -> endpoint workflows) and the attempts (POSTs).

`dispatch` runs for minutes at a time, heartbeating: it LISTENs for the outbox's NOTIFY (and
reads the outbox every second anyway), wakes the workflow of every endpoint owed a delivery
(signal-with-start, so a workflow that is not running is started), and only then marks those
deliveries dispatched. A worker that dies at any point leaves them undispatched, and the next
run of the activity, on another worker, dispatches them: none is missed.

`deliver_due` attempts an endpoint's due deliveries, up to `REVERIE_WEBHOOK_MAX_IN_FLIGHT` at
once over kept-alive connections, and writes each outcome: delivered (any 2xx), or failed and
due again after an exponential backoff with jitter, or failed for good when the retry window is
spent. Every attempt is logged (time, status, latency, error, the address connected to). The
body and the `webhook-id` are the same on every attempt; the timestamp and signatures are made
afresh for each.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
from temporalio import activity
from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy
from yarl import URL

from reverie.connections import database_url
from reverie.models.webhooks import (
    DISPATCHER_WORKFLOW,
    ENDPOINT_WORKFLOW,
    WAKE_SIGNAL,
    DeliverDueInput,
    DeliverDueResult,
    DispatcherInput,
    EndpointWorkflowInput,
    WebhookActivity,
    dispatcher_workflow_id,
    endpoint_workflow_id,
    signature_header,
)
from reverie.settings import Settings
from reverie.store import webhooks as store
from reverie.store.pool import Pool
from reverie.webhook_targets import WebhookRefused, WebhookResolver, literal_refusal

log = logging.getLogger("reverie.webhooks")

# A test hook: the dispatcher stops (without heartbeating) right after reading deliveries it has
# not dispatched yet, and writes this file, so a test can kill its worker at exactly that point.
TEST_HOOK_FREEZE_DISPATCH = "REVERIE_TEST_HOOK_FREEZE_WEBHOOK_DISPATCH"

DISPATCH_BATCH = 1000
# The dispatcher reads the outbox at least this often, NOTIFY or not.
DISPATCH_POLL_SECONDS = 1.0
# ...and at most this often, so a burst of commits is dispatched in a few batches.
DISPATCH_MIN_INTERVAL_SECONDS = 0.02
# Every so often it wakes endpoints whose due deliveries nobody has attempted for a while.
SWEEP_SECONDS = 15.0
OVERDUE_SECONDS = 30.0
# One run of `deliver_due` stops taking new deliveries after this long (then ends, and the
# workflow runs it again if more are due), so that no activity runs for ever.
ROUND_SECONDS = 60.0
# What is read of a receiver's answer (the rest is dropped with the connection).
ANSWER_LIMIT = 64 * 1024
USER_AGENT = "Reverie-Webhooks/1"
SETTLE_ATTEMPTS = 6
TRANSIENT_DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    OSError,
)


async def start_dispatcher_if_needed(client: Client, pool: Pool, settings: Settings) -> None:
    """At a worker's start: make sure the task queue's dispatcher runs when endpoints exist
    (creating an endpoint starts it too; this covers a Temporal whose history was lost)."""
    if await store.any_endpoint(pool):
        await client.start_workflow(
            DISPATCHER_WORKFLOW,
            DispatcherInput(),
            id=dispatcher_workflow_id(settings.task_queue),
            task_queue=settings.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        )


def body_of(event_id: str, created_at: datetime, data: dict) -> str:
    """The thin body (`BetaWebhookEvent`), the same bytes on every attempt."""
    return json.dumps(
        {
            "type": "event",
            "id": event_id,
            "created_at": created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "data": data,
        },
        separators=(",", ":"),
    )


class WebhookActivities:
    def __init__(self, pool: Pool, settings: Settings, temporal: Client) -> None:
        self._pool = pool
        self._settings = settings
        self._temporal = temporal

    # ---- the dispatcher --------------------------------------------------------------------

    @activity.defn(name=WebhookActivity.DISPATCH)
    async def dispatch(self, params: DispatcherInput) -> None:
        loop = asyncio.get_running_loop()
        news = asyncio.Event()
        listener: asyncpg.Connection | None = None
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            listener = await asyncpg.connect(database_url(self._settings))
            await listener.add_listener(store.NOTIFY_CHANNEL, lambda *_: news.set())
        ends = loop.time() + params.lifetime_seconds
        next_sweep = loop.time()
        try:
            while loop.time() < ends:
                activity.heartbeat()
                news.clear()
                batch = await store.undispatched(self._pool, DISPATCH_BATCH)
                if batch:
                    await self._freeze_if_asked()
                    endpoints = list(dict.fromkeys(endpoint for _, endpoint in batch))
                    await self._wake(endpoints, params)
                    await store.mark_dispatched(self._pool, [d for d, _ in batch])
                if loop.time() >= next_sweep:
                    next_sweep = loop.time() + SWEEP_SECONDS
                    overdue = await store.overdue_endpoints(self._pool, OVERDUE_SECONDS)
                    if overdue:
                        log.warning("waking webhook endpoints with overdue deliveries: %s", overdue)
                        await self._wake(overdue, params)
                if len(batch) == DISPATCH_BATCH:
                    continue
                await asyncio.sleep(DISPATCH_MIN_INTERVAL_SECONDS)
                if not news.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(news.wait(), DISPATCH_POLL_SECONDS)
        finally:
            if listener is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(listener.close(), 5)

    async def _wake(self, endpoint_ids: Iterable[str], params: DispatcherInput) -> None:
        """Signal-with-start each endpoint's workflow on this worker's task queue."""
        task_queue = activity.info().task_queue

        async def one(endpoint_id: str) -> None:
            await self._temporal.start_workflow(
                ENDPOINT_WORKFLOW,
                EndpointWorkflowInput(
                    endpoint_id=endpoint_id,
                    heartbeat_timeout_seconds=params.heartbeat_timeout_seconds,
                ),
                id=endpoint_workflow_id(endpoint_id),
                task_queue=task_queue,
                start_signal=WAKE_SIGNAL,
                static_summary=f"webhook deliveries to {endpoint_id}",
            )

        await asyncio.gather(*(one(e) for e in endpoint_ids))

    async def _freeze_if_asked(self) -> None:
        marker = os.environ.get(TEST_HOOK_FREEZE_DISPATCH)
        if marker:
            Path(marker).write_text(str(os.getpid()))
            await asyncio.Event().wait()  # the test hook: the test kills the worker here

    # ---- attempts --------------------------------------------------------------------------

    @activity.defn(name=WebhookActivity.DELIVER_DUE)
    async def deliver_due(self, params: DeliverDueInput) -> DeliverDueResult:
        endpoint_id = params.endpoint_id
        if activity.info().attempt > 1:
            # The last run of this activity was lost (its worker died, or it stopped
            # heartbeating): what it had in flight is due again at once, under the same ids.
            lost = await store.release_orphans(self._pool, endpoint_id)
            if lost:
                log.warning(
                    "webhook endpoint %s: %d attempt(s) lost with a worker", endpoint_id, lost
                )
        target = await store.target(self._pool, endpoint_id)
        if target is None or not target.enabled:
            return DeliverDueResult(active=False)
        settings = self._settings
        limit = settings.webhook_max_in_flight
        url = URL(target.url)
        resolver = WebhookResolver(url, settings.webhook_networks)
        connector = aiohttp.TCPConnector(resolver=resolver, use_dns_cache=False, limit=limit)
        result = DeliverDueResult(active=True)
        loop = asyncio.get_running_loop()
        stop_taking = loop.time() + ROUND_SECONDS
        inflight: set[asyncio.Task[store.Outcome]] = set()
        drained = False
        async with aiohttp.ClientSession(
            connector=connector, trust_env=False, auto_decompress=False
        ) as session:
            try:
                while True:
                    activity.heartbeat()
                    room = limit - len(inflight)
                    if not drained and room >= max(1, limit // 2):
                        if loop.time() >= stop_taking:
                            drained = True
                        else:
                            target = await store.target(self._pool, endpoint_id)
                            if target is None or not target.enabled:
                                drained = True
                                result.active = False
                            else:
                                claimed = await store.claim(
                                    self._pool,
                                    endpoint_id,
                                    room,
                                    settings.webhook_timeout_seconds + 10,
                                )
                                drained = not claimed
                                for row in claimed:
                                    inflight.add(
                                        asyncio.create_task(self._attempt(session, target, row))
                                    )
                    if not inflight:
                        break
                    done, inflight = await asyncio.wait(inflight, timeout=0.05)
                    if done:
                        outcomes = [task.result() for task in done]
                        for outcome in outcomes:
                            if outcome.state == "delivered":
                                result.delivered += 1
                            elif outcome.state == "failed":
                                result.failed += 1
                            else:
                                result.retrying += 1
                        reason = await self._settle(endpoint_id, outcomes)
                        if reason:
                            log.warning("webhook endpoint %s %s", endpoint_id, reason)
                            drained = True
                            result.active = False
                    if drained and not inflight:
                        break
            finally:
                for task in inflight:
                    task.cancel()
        if result.active:
            result.next_due_at = await store.next_due(self._pool, endpoint_id)
        return result

    async def _settle(self, endpoint_id: str, outcomes: list[store.Outcome]) -> str | None:
        """Write outcomes, trying again on a passing database failure: failing the activity
        would lose them and send those deliveries again (under their ids, but needlessly)."""
        for attempt in range(SETTLE_ATTEMPTS):
            try:
                return await store.settle(
                    self._pool,
                    endpoint_id,
                    outcomes,
                    disable_after=self._settings.webhook_disable_after,
                )
            except TRANSIENT_DATABASE_ERRORS as error:
                if attempt + 1 == SETTLE_ATTEMPTS:
                    raise
                log.warning(
                    "webhook endpoint %s: writing outcomes failed (%s); again", endpoint_id, error
                )
                activity.heartbeat()
                await asyncio.sleep(0.1 * 2**attempt)
        return None

    async def _attempt(
        self, session: aiohttp.ClientSession, target: store.Target, row: store.Claimed
    ) -> store.Outcome:
        settings = self._settings
        url = URL(target.url)
        body = body_of(row.event_id, row.created_at, row.data)
        stamp = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": row.event_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": signature_header(target.secrets, row.event_id, stamp, body),
        }
        started = datetime.now(UTC)
        clock = time.monotonic()
        status: int | None = None
        error: str | None = None
        address: str | None = None
        refusal = literal_refusal(url, settings.webhook_networks)
        if refusal:
            error = f"refused: {refusal}"
        else:
            try:
                async with session.post(
                    url,
                    data=body.encode(),
                    headers=headers,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=settings.webhook_timeout_seconds),
                ) as response:
                    status = response.status
                    address = _peer(response)
                    await _read_some(response)
                    if 300 <= status < 400:
                        where = response.headers.get("Location", "")[:200]
                        error = f"HTTP {status}: a redirect (to {where!r}), never followed"
                    elif not 200 <= status < 300:
                        error = f"HTTP {status}"
            except WebhookRefused as refused:
                error = f"refused: {refused}"
            except TimeoutError:
                error = f"no answer within {settings.webhook_timeout_seconds:g} s"
            except (aiohttp.ClientError, OSError, ValueError) as failure:
                error = f"{type(failure).__name__}: {failure}"[:1000]
        latency_ms = (time.monotonic() - clock) * 1000
        if error is None:
            return store.Outcome(
                row.id, row.number, started, latency_ms, status, None, address, "delivered", None
            )
        state = "pending"
        next_at = retry_at(
            self._settings, row.round_attempts, row.round_started_at, datetime.now(UTC)
        )
        if next_at is None:
            state = "failed"
        return store.Outcome(
            row.id, row.number, started, latency_ms, status, error, address, state, next_at
        )


def retry_at(
    settings: Settings, attempts: int, round_started_at: datetime, now: datetime
) -> datetime | None:
    """When to try again after the `attempts`-th failed attempt of a round: exponential backoff
    (REVERIE_WEBHOOK_BACKOFF_SECONDS, doubling, at most REVERIE_WEBHOOK_MAX_BACKOFF_SECONDS)
    with +-20% jitter; None once that would be past the round's retry window
    (REVERIE_WEBHOOK_RETRY_SECONDS from its start): the delivery has failed."""
    delay = min(
        settings.webhook_backoff_seconds * 2 ** min(attempts - 1, 40),
        settings.webhook_max_backoff_seconds,
    ) * random.uniform(0.8, 1.2)
    at = now + timedelta(seconds=delay)
    if at > round_started_at + timedelta(seconds=settings.webhook_retry_seconds):
        return None
    return at


def _peer(response: aiohttp.ClientResponse) -> str | None:
    """The address the answer came from (the connection may already be back in the pool when
    the whole answer arrived with its headers, so it is read from the protocol)."""
    protocol = getattr(response, "_protocol", None)
    transport = getattr(protocol, "transport", None)
    peer = transport.get_extra_info("peername") if transport is not None else None
    return str(peer[0]) if peer else None


async def _read_some(response: aiohttp.ClientResponse) -> None:
    """Read at most ANSWER_LIMIT bytes of the answer (a huge answer costs no more)."""
    read = 0
    async for chunk in response.content.iter_chunked(16384):
        read += len(chunk)
        if read >= ANSWER_LIMIT:
            response.close()
            return
