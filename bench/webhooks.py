"""Webhook delivery throughput and latency, and what the outbox costs a session without endpoints.

Starts its own stack: a Temporal dev server (with the embedded stack's flags, printed), a fresh
PostgreSQL database (embedded `pgserver`, or a fresh database in DATABASE_URL's server), one
worker in this process with the webhook workflows and activities (tuned as `reverie worker`),
and three receivers on 127.0.0.2 (opted in with REVERIE_WEBHOOK_ALLOW_NETWORKS), which answer
204 at once and note when each request arrived.

(a) The outbox's price on the hot path: appends of one `session.status_idle` event each (the
    kind the outbox trigger acts on) to a session while no endpoint exists, each in its own
    transaction as the recording activity writes them, interleaved with appends of the same
    event under a type no webhook announces (the trigger's WHEN clause skips it, as it skips
    most of a session's log). Printed: the median append of each, and the difference: what
    the outbox costs a status change in a deployment without endpoints.
(b) Three endpoints subscribed to `session.status_idled`; N events (default 1,000) appended to a
    session as fast as one writer appends them (a burst; `--rate R` paces them at R events/s
    instead), each in its own transaction. Latency of a delivery = (the receiver got it) - (its event's append had
    committed). Throughput = deliveries / (last arrival - first commit). Checked: every event
    reached every endpoint exactly once (one webhook-id each), and every delivery row ends
    `delivered`. Target: at least 200 deliveries/s with p99 under 1 s.

Run with `.venv/bin/python bench/webhooks.py [--quick] [--events N] [--rate R] [--endpoints K]`
(`--rate 100`: 100 events/s offered, 300 deliveries/s). Prints a table and writes every figure to
bench/results/webhooks.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Running as `python bench/webhooks.py` puts bench/ first on sys.path, not the repo root.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if shutil.which("temporal") is None:  # `make bench` runs the venv's python without activating
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"

from aiohttp import web  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.worker import Worker  # noqa: E402

from bench.event_feed import start_database  # noqa: E402
from bench.session_overhead import (  # noqa: E402
    machine,
    percentile,
    run_main,
    summary_ms,
    table,
)
from reverie.activities.webhook import WebhookActivities  # noqa: E402
from reverie.models.agents import AgentCreate  # noqa: E402
from reverie.models.sessions import DEFAULT_ENVIRONMENT_ID  # noqa: E402
from reverie.models.webhooks import announcement_id  # noqa: E402
from reverie.service.client import ReverieClient  # noqa: E402
from reverie.settings import Settings  # noqa: E402
from reverie.starter.stack import TemporalDevServer, free_port  # noqa: E402
from reverie.store import agents, events, sessions  # noqa: E402
from reverie.store.pool import connect  # noqa: E402
from reverie.worker import worker_tuning  # noqa: E402
from reverie.workflows.webhooks import WORKFLOWS, ensure_dispatcher  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "webhooks.json"
RECEIVER_HOST = "127.0.0.2"
WEBHOOK_TYPE = "session.status_idled"
IDLE = {"stop_reason": {"type": "end_turn"}}
TARGET_RATE = 200.0
TARGET_P99_MS = 1000.0


class Receivers:
    """K receivers; `arrivals[webhook_id]` lists (receiver index, arrival time)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.arrivals: dict[str, list[tuple[int, float]]] = {}
        self.total = 0
        self.news = asyncio.Event()
        self.runners: list[web.AppRunner] = []
        self.urls: list[str] = []

    async def start(self) -> None:
        for index in range(self.count):

            async def handle(request: web.Request, index: int = index) -> web.Response:
                await request.read()
                arrived = time.time()
                self.arrivals.setdefault(request.headers["webhook-id"], []).append((index, arrived))
                self.total += 1
                self.news.set()
                return web.Response(status=204)

            app = web.Application()
            app.router.add_post("/hook", handle)
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            await runner.setup()
            await web.TCPSite(runner, RECEIVER_HOST, 0).start()
            self.runners.append(runner)
            self.urls.append(f"http://{RECEIVER_HOST}:{runner.addresses[0][1]}/hook")

    async def stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()

    async def wait_total(self, total: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.total < total:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.news.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.news.wait(), min(left, 1.0))
        return True


async def new_session(pool: Any) -> str:
    agent = await agents.create(pool, AgentCreate(name="bench", model="none"))
    session_id = f"sesn_bench_{uuid.uuid4().hex}"
    await sessions.create(
        pool,
        session_id,
        agent,
        environment_id=DEFAULT_ENVIRONMENT_ID,
        title=None,
        metadata={},
        resources=[],
    )
    return session_id


async def outbox_price(pool: Any, appends: int) -> dict[str, Any]:
    """(a): appends the outbox trigger acts on and appends it skips, no endpoint existing."""
    session_id = await new_session(pool)
    with_outbox: list[float] = []
    without: list[float] = []
    for n in range(appends):
        for kind, into in (("session.status_idle", with_outbox), ("bench.unannounced", without)):
            row = (f"sevt_{uuid.uuid4().hex}", kind, IDLE, datetime.now(UTC))
            started = time.perf_counter()
            await events.append(pool, session_id, [row])
            if n >= 20:  # warm-up
                into.append(time.perf_counter() - started)
    owed = await pool.fetchval("SELECT count(*) FROM webhook_deliveries")
    median_with = percentile(with_outbox, 50) * 1e6
    median_without = percentile(without, 50) * 1e6
    return {
        "appends_each": len(with_outbox),
        "with_outbox_median_us": round(median_with, 1),
        "without_outbox_median_us": round(median_without, 1),
        "difference_median_us": round(median_with - median_without, 1),
        "with_outbox_mean_us": round(statistics.fmean(with_outbox) * 1e6, 1),
        "without_outbox_mean_us": round(statistics.fmean(without) * 1e6, 1),
        "deliveries_written": owed,
    }


async def deliveries(
    client: ReverieClient, receivers: Receivers, count: int, rate: float
) -> dict[str, Any]:
    """(b): `count` events to every endpoint at `rate` events/s (0: as fast as possible)."""
    pool = client.pool
    for url in receivers.urls:
        await client.create_webhook({"url": url, "enabled_events": [WEBHOOK_TYPE]})
    session_id = await new_session(pool)
    # Warm-up: connections, workflow caches.
    for _ in range(20):
        row = (f"sevt_{uuid.uuid4().hex}", "session.status_idle", IDLE, datetime.now(UTC))
        await events.append(pool, session_id, [row])
    if not await receivers.wait_total(20 * receivers.count, 60):
        raise RuntimeError("the warm-up deliveries did not all arrive")
    await asyncio.sleep(0.5)
    receivers.arrivals.clear()
    receivers.total = 0
    committed: dict[str, float] = {}
    loop = asyncio.get_running_loop()
    began = loop.time()
    for n in range(count):
        if rate > 0:
            wait = began + n / rate - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
        event_id = f"sevt_{uuid.uuid4().hex}"
        row = (event_id, "session.status_idle", IDLE, datetime.now(UTC))
        await events.append(pool, session_id, [row])
        committed[announcement_id(event_id, WEBHOOK_TYPE)] = time.time()
    appended_in = loop.time() - began
    expected = count * receivers.count
    complete = await receivers.wait_total(expected, 300)
    latencies = [
        arrived - committed[webhook_id]
        for webhook_id, got in receivers.arrivals.items()
        if webhook_id in committed
        for _, arrived in got
    ]
    first = min(committed.values())
    last = max(at for got in receivers.arrivals.values() for _, at in got)
    per_endpoint = [
        {index for index, _ in got} == set(range(receivers.count)) and len(got) == receivers.count
        for webhook_id, got in receivers.arrivals.items()
        if webhook_id in committed
    ]
    await asyncio.sleep(1.0)  # the last outcomes are written
    states = dict(
        await pool.fetch(
            "SELECT state, count(*) FROM webhook_deliveries WHERE event_type = $1 GROUP BY state",
            WEBHOOK_TYPE,
        )
    )
    retried = dict(
        await pool.fetch(
            """SELECT coalesce(error, 'answered ' || status), count(*) FROM webhook_attempts
               WHERE error IS NOT NULL OR status NOT BETWEEN 200 AND 299 GROUP BY 1"""
        )
    )
    throughput = len(latencies) / (last - first) if last > first else float("nan")
    stats = summary_ms(latencies)
    return {
        "events": count,
        "endpoints": receivers.count,
        "offered_events_per_s": rate or None,
        "append_seconds": round(appended_in, 2),
        "deliveries_expected": expected,
        "deliveries_received": receivers.total,
        "complete": complete,
        "each_event_once_to_each_endpoint": all(per_endpoint) and len(per_endpoint) == count,
        "rows_by_state": states,
        "failed_attempts_by_error": retried,
        "deliveries_per_s": round(throughput, 1),
        "latency": stats,
        "meets_target": throughput >= TARGET_RATE and stats["p99_ms"] < TARGET_P99_MS,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "mode": "quick" if args.quick else "full",
    }
    async with contextlib.AsyncExitStack() as exits:
        tmp = Path(tempfile.mkdtemp(prefix="reverie-bench-hooks-"))
        exits.callback(shutil.rmtree, tmp, True)
        server = TemporalDevServer(
            db_file=None,
            port=free_port(),
            ui_port=None,
            log_file=tmp / "temporal.log",
            choose_ports=True,
        )
        exits.callback(server.stop)
        booted = await asyncio.gather(
            asyncio.to_thread(server.start), start_database(exits), return_exceptions=True
        )
        for outcome in booted:
            if isinstance(outcome, BaseException):
                raise outcome
        database, source = booted[1]  # type: ignore[misc]
        report["dev_server_flags"] = server.flags()
        report["database"] = source
        settings = Settings(
            TEMPORAL_ADDRESS=server.address,
            TEMPORAL_NAMESPACE="default",
            DATABASE_URL=database,
            REVERIE_HOME=tmp / "home",
            REVERIE_TASK_QUEUE=f"reverie-bench-{uuid.uuid4().hex[:6]}",
            REVERIE_WEBHOOK_ALLOW_NETWORKS=f"{RECEIVER_HOST}/32",
        )
        temporal = await Client.connect(server.address, data_converter=pydantic_data_converter)
        pool = await connect(database)
        exits.push_async_callback(pool.close)
        hooks = WebhookActivities(pool, settings, temporal)
        await exits.enter_async_context(
            Worker(
                temporal,
                task_queue=settings.task_queue,
                workflows=WORKFLOWS,
                activities=[hooks.dispatch, hooks.deliver_due],
                **worker_tuning(settings),
            )
        )
        client = ReverieClient(temporal, await connect(database), settings)
        exits.push_async_callback(client.close)
        await ensure_dispatcher(temporal, settings.task_queue)
        receivers = Receivers(args.endpoints)
        await receivers.start()
        exits.push_async_callback(receivers.stop)
        report["outbox_price"] = await outbox_price(client.pool, args.price_appends)
        report["deliveries"] = await deliveries(client, receivers, args.events, args.rate)
    return report


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    price = report["outbox_price"]
    got = report["deliveries"]
    lat = got["latency"]
    rate = got["offered_events_per_s"]
    rows = [
        ("when", report["started_at"]),
        ("mode", report["mode"]),
        ("machine", f"{m['cpu_count']} cores, {m['platform']}, Python {m['python']}"),
        ("temporal", f"{m['temporal_cli']}; temporalio {m['temporalio']}"),
        ("dev server flags", " ".join(report["dev_server_flags"])),
        ("database", report["database"]),
        ("", ""),
        ("(a) append of a status event, no endpoint", ""),
        ("  a status event (the trigger acts)", f"median {price['with_outbox_median_us']:.0f} µs"),
        ("  an unannounced one (skipped)", f"median {price['without_outbox_median_us']:.0f} µs"),
        (
            "  difference",
            f"{price['difference_median_us']:+.0f} µs per append "
            f"({price['appends_each']} each, interleaved; deliveries written: "
            f"{price['deliveries_written']})",
        ),
        ("", ""),
        (f"(b) {got['events']} events to {got['endpoints']} loopback endpoints", ""),
        (
            "  offered",
            f"{rate:g} events/s ({rate * got['endpoints']:g} deliveries/s)"
            if rate
            else "as fast as appends go (a burst)",
        ),
        ("  appended in", f"{got['append_seconds']:.2f} s"),
        (
            "  received",
            f"{got['deliveries_received']} of {got['deliveries_expected']}; each event once "
            f"to each endpoint: {got['each_event_once_to_each_endpoint']}; rows "
            f"{got['rows_by_state']}",
        ),
        ("  failed attempts", str(got["failed_attempts_by_error"] or "none")),
        ("  deliveries/s", f"{got['deliveries_per_s']:.1f} (target >= {TARGET_RATE:.0f})"),
        (
            "  recording -> delivery",
            f"p50 {lat['median_ms']:.1f} ms, p90 {lat['p90_ms']:.1f} ms, p99 "
            f"{lat['p99_ms']:.1f} ms, max {lat['max_ms']:.1f} ms (target p99 < "
            f"{TARGET_P99_MS:.0f} ms)",
        ),
        ("  meets the target", str(got["meets_target"])),
    ]
    return table("Webhooks (bench/webhooks.py)", rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=3)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="events per second offered (default 0: a burst)"
    )
    parser.add_argument("--price-appends", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="200 events, 100 price appends")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.quick:
        args.events, args.price_appends = 200, 100
    return args


def main(argv: list[str] | None = None) -> None:
    run_main(parse_args(argv), run, render)


if __name__ == "__main__":
    main()
