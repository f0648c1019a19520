"""What the webhook tests share: a stack of their own (a fresh database, a task queue and a worker
with the webhook workflows), and a real receiver on loopback.

Each webhook test stack has its own database, so that its dispatcher sees only its own
deliveries (the dispatcher of a task queue reads the whole outbox of its database). Receivers
listen on 127.0.0.2, the one non-public address the stack's settings opt webhooks into; the rest
of loopback (127.0.0.1, where Temporal and PostgreSQL listen) stays refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
from aiohttp import web
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from reverie.activities.webhook import WebhookActivities
from reverie.models.webhooks import DispatcherInput
from reverie.settings import Settings
from reverie.starter.client import ReverieClient
from reverie.store.pool import Pool, connect
from reverie.worker import ReverieWorker, build_worker
from reverie.workflows.webhooks import WORKFLOWS, ensure_dispatcher

RECEIVER_HOST = "127.0.0.2"
ALLOWED = "127.0.0.2/32"
# Heartbeats of the dispatcher and the delivering activity time out this soon in tests, so a
# killed worker's work moves on within seconds.
TEST_HEARTBEAT_SECONDS = 3.0


def with_database(url: str, name: str) -> str:
    head, _, query = url.partition("?")
    head = head.rsplit("/", 1)[0] + "/" + name
    return f"{head}?{query}" if query else head


async def fresh_database(base_url: str) -> str:
    name = f"reverie_hooks_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(base_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return with_database(base_url, name)


async def hook_settings(settings: Settings, **overrides: Any) -> Settings:
    """The run's settings with a database and task queue of their own, webhooks allowed to
    127.0.0.2, and retries fast enough for tests."""
    update: dict[str, Any] = {
        "database_url": await fresh_database(settings.database_url or ""),
        "task_queue": f"hooks-{uuid.uuid4().hex[:6]}",
        "webhook_allow_networks": ALLOWED,
        "webhook_backoff_seconds": 0.2,
        "webhook_max_backoff_seconds": 1.0,
        "webhook_retry_seconds": 60.0,
        "webhook_timeout_seconds": 3.0,
    }
    update.update(overrides)
    return settings.model_copy(update=update)


def webhook_worker(client: Client, pool: Pool, settings: Settings, *, sessions: bool) -> Worker:
    """A worker with the webhook workflows and activities (and, with `sessions`, everything
    `reverie.worker.build_worker` registers)."""
    hooks = WebhookActivities(pool, settings, client)
    mine = {"workflows": WORKFLOWS, "activities": [hooks.dispatch, hooks.deliver_due]}
    if not sessions:
        return Worker(
            client,
            task_queue=settings.task_queue,
            max_heartbeat_throttle_interval=timedelta(seconds=1),
            default_heartbeat_throttle_interval=timedelta(seconds=1),
            **mine,
        )
    # Built for a queue no one polls (a second worker for the same queue cannot be made in one
    # process), then given this one: only its configuration is used.
    scratch = settings.model_copy(update={"task_queue": f"{settings.task_queue}-unused"})
    built = build_worker(client, pool, scratch)
    config = built.config()
    config["task_queue"] = settings.task_queue
    registered = {getattr(a, "__temporal_activity_definition").name for a in config["activities"]}
    if "webhook_deliver_due" not in registered:  # reverie.worker registers them already
        config["workflows"] = [*config["workflows"], *mine["workflows"]]
        config["activities"] = [*config["activities"], *mine["activities"]]
    # The model client its activities share is closed when this worker stops.
    return ReverieWorker(model=built.model, **config)


@dataclass
class HookStack:
    settings: Settings
    client: ReverieClient
    temporal: Client

    @property
    def pool(self) -> Pool:
        return self.client.pool

    async def start_dispatcher(self, params: DispatcherInput | None = None) -> None:
        await ensure_dispatcher(
            self.temporal,
            self.settings.task_queue,
            params or DispatcherInput(heartbeat_timeout_seconds=TEST_HEARTBEAT_SECONDS),
        )


@contextlib.asynccontextmanager
async def hook_stack(
    settings: Settings,
    *,
    worker: bool = True,
    sessions: bool = False,
    dispatcher: DispatcherInput | None = None,
    **overrides: Any,
) -> AsyncIterator[HookStack]:
    """A stack of the test's own; with `worker`, an in-process worker serves it."""
    own = await hook_settings(settings, **overrides)
    client = await ReverieClient.connect(own)
    temporal = await Client.connect(
        own.temporal_address or "", data_converter=pydantic_data_converter
    )
    stack = HookStack(settings=own, client=client, temporal=temporal)
    await stack.start_dispatcher(dispatcher)
    try:
        if worker:
            pool = await connect(own.database_url or "")
            try:
                async with webhook_worker(temporal, pool, own, sessions=sessions):
                    yield stack
            finally:
                await pool.close()
        else:
            yield stack
    finally:
        await _stop_workflows(temporal, own.task_queue)
        await client.close()


async def _stop_workflows(temporal: Client, task_queue: str) -> None:
    """Terminate what the stack left running (its dispatcher, its endpoints' workflows)."""
    with contextlib.suppress(Exception):
        async for execution in temporal.list_workflows(
            f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Running'"
        ):
            with contextlib.suppress(Exception):
                await temporal.get_workflow_handle(execution.id).terminate("test over")


# ---- the receiver ------------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: str
    at: float  # time.time() when it arrived

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def json(self) -> Any:
        return json.loads(self.body)


Answer = Callable[[Received, int], Any]  # (request, its index) -> status, or an awaitable


@dataclass
class Receiver:
    """An aiohttp server on 127.0.0.2 that records every request and answers as scripted: by
    default 200; `answers` is a list of statuses (one per request, then 200) or a function."""

    host: str = RECEIVER_HOST
    answers: list[int] | Answer = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    _news: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.text()
        got = Received(
            headers={k.lower(): v for k, v in request.headers.items()}, body=body, at=time.time()
        )
        index = len(self.received)
        self.received.append(got)
        self._news.set()
        answer: Any = 200
        if callable(self.answers):
            answer = self.answers(got, index)
            if asyncio.iscoroutine(answer):
                answer = await answer
        elif index < len(self.answers):
            answer = self.answers[index]
        if isinstance(answer, web.StreamResponse):
            return answer
        return web.Response(status=int(answer), text="ok")

    async def start(self, port: int = 0) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, port or self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"{len(self.received)} request(s) arrived within {timeout} s, not {count}"
                )
            self._news.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._news.wait(), min(left, 0.5))
        return self.received


@contextlib.asynccontextmanager
async def receiver(**options: Any) -> AsyncIterator[Receiver]:
    server = await Receiver(**options).start()
    try:
        yield server
    finally:
        await server.stop()


async def wait_until(
    check: Callable[[], Any], timeout: float = 30.0, what: str = "the condition"
) -> Any:
    """Poll an async check until it answers something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not hold within {timeout} s")
        await asyncio.sleep(0.05)


# ---- `reverie worker` as a process of its own, for the tests that kill it ------------------------


def webhook_env(settings: Settings, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The stack's webhook settings, for `tests.helpers.worker_process`'s environment (which
    brings the addresses, the database and the task queue)."""
    return {
        "REVERIE_WEBHOOK_ALLOW_NETWORKS": settings.webhook_allow_networks,
        "REVERIE_WEBHOOK_BACKOFF_SECONDS": str(settings.webhook_backoff_seconds),
        "REVERIE_WEBHOOK_MAX_BACKOFF_SECONDS": str(settings.webhook_max_backoff_seconds),
        "REVERIE_WEBHOOK_RETRY_SECONDS": str(settings.webhook_retry_seconds),
        "REVERIE_WEBHOOK_TIMEOUT_SECONDS": str(settings.webhook_timeout_seconds),
        **(extra or {}),
    }
