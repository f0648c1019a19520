"""How soon a follower hears of a commit through the event feed (store/event_feed.py).

Needs only PostgreSQL: an embedded one (`pgserver`) in a temp dir, or, when DATABASE_URL is set,
a fresh database in that server, dropped afterwards. One session row; one `EventFeed` (its own
LISTEN connection); N subscriptions on the session, each a task that waits on its
`Subscription` and notes the time it woke. Then, one at a time, appends of one event, each in
its own transaction through a pooled connection (not the listening one):

  latency = (subscriber woke) - (just before COMMIT was sent)

measured for every subscriber of every append; the next append starts only once every
subscriber woke, so no ring is coalesced into another. Printed: p50, p99 and max over all
(append, subscriber) pairs, p50 and p99 of the last subscriber to wake per append (what "all N
woken" costs), and the commit's own round trip for scale, with N = 1 and N = 1000 (`--fanout`).

Writer, feed and subscribers share one process and one event loop (as an API server's streams
and its feed do), so with 1000 subscribers the figures include scheduling 1000 tasks per
append. For comparison: the polling this replaces (every 100 ms per follower) woke a follower
~50 ms after a commit on average and cost 10 queries per second per follower.

Run with `.venv/bin/python bench/event_feed.py [--quick] [--appends N] [--fanout 1 1000]`.
Prints a table and writes every figure to bench/results/event_feed.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Running as `python bench/event_feed.py` puts bench/ first on sys.path, not the repo root.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402

from bench.session_overhead import (  # noqa: E402
    machine,
    percentile,
    run_main,
    summary_ms,
    table,
)
from reverie.models.agents import AgentCreate  # noqa: E402
from reverie.models.sessions import DEFAULT_ENVIRONMENT_ID  # noqa: E402
from reverie.starter.stack import EmbeddedPostgres  # noqa: E402
from reverie.store import agents, events, sessions  # noqa: E402
from reverie.store.event_feed import EventFeed  # noqa: E402
from reverie.store.pool import connect  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "event_feed.json"
WAKE_TIMEOUT = 10.0  # an append whose subscribers are not all awake by then is a failure


def _with_database(url: str, name: str) -> str:
    head, _, query = url.partition("?")
    head = head.rsplit("/", 1)[0] + "/" + name
    return f"{head}?{query}" if query else head


async def start_database(exits: contextlib.AsyncExitStack) -> tuple[str, str]:
    """A fresh database (url, where it runs), torn down by `exits`."""
    base = os.environ.get("DATABASE_URL")
    if base:
        source = "DATABASE_URL (fresh database, dropped afterwards)"
    else:
        tmp = Path(tempfile.mkdtemp(prefix="reverie-bench-feed-"))
        exits.callback(shutil.rmtree, tmp, True)
        embedded = EmbeddedPostgres(tmp / "pg")
        exits.callback(embedded.stop)
        base = await asyncio.to_thread(embedded.start)
        source = "embedded (pgserver, temp dir)"
    name = f"reverie_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(base)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()

    async def drop() -> None:
        with contextlib.suppress(Exception):
            admin = await asyncpg.connect(base)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()

    exits.push_async_callback(drop)
    return _with_database(base, name), source


async def new_session(pool: asyncpg.Pool) -> str:
    agent = await agents.create(pool, AgentCreate(name="bench", model="simulated-bench"))
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


async def measure(
    url: str, pool: asyncpg.Pool, fanout: int, appends: int, warmup: int
) -> dict[str, Any]:
    """Latencies of `appends` appends to a session `fanout` subscribers follow."""
    session_id = await new_session(pool)
    feed = EventFeed(url)
    woke: list[float] = []
    everyone = asyncio.Event()
    entered = 0
    all_in = asyncio.Event()

    async def subscriber() -> None:
        nonlocal entered
        async with feed.subscribe(session_id) as news:
            entered += 1
            if entered == fanout:
                all_in.set()
            while True:
                await news.wait()
                woke.append(time.perf_counter())
                if len(woke) == fanout:
                    everyone.set()

    tasks = [asyncio.create_task(subscriber()) for _ in range(fanout)]
    each: list[float] = []
    last: list[float] = []
    commits: list[float] = []
    try:
        await asyncio.wait_for(all_in.wait(), WAKE_TIMEOUT)
        for index in range(warmup + appends):
            woke.clear()
            everyone.clear()
            row = (f"sevt_bench_{uuid.uuid4().hex}", "agent.message", {"n": index})
            async with pool.acquire() as conn:
                transaction = conn.transaction()
                await transaction.start()
                await events.append(conn, session_id, [(*row, datetime.now(UTC))])
                sent = time.perf_counter()
                await transaction.commit()
                committed = time.perf_counter()
            await asyncio.wait_for(everyone.wait(), WAKE_TIMEOUT)
            if index < warmup:
                continue
            each += [t - sent for t in woke]
            last.append(max(woke) - sent)
            commits.append(committed - sent)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        left = feed.subscriber_count()
        await feed.close()
    return {
        "subscribers": fanout,
        "appends": appends,
        "each_subscriber": summary_ms(each),
        "all_subscribers_woken": summary_ms(last),
        "commit_round_trip": summary_ms(commits),
        "p99_each_ms": round(percentile([t * 1000 for t in each], 99), 3),
        "subscriptions_left_after": left,
        "notifications_received": feed.notifications,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--appends", type=int, help="appends measured per fan-out (1000)")
    parser.add_argument(
        "--fanout", type=int, nargs="+", default=[1, 1000], help="subscriber counts (1 1000)"
    )
    parser.add_argument("--quick", action="store_true", help="100 appends per fan-out")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes")
    args = parser.parse_args(argv)
    args.appends = args.appends or (100 if args.quick else 1000)
    args.warmup = 10 if args.quick else 50
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    began = time.perf_counter()
    report: dict[str, Any] = {
        "started_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "warmup_appends": args.warmup,
    }
    async with contextlib.AsyncExitStack() as exits:
        url, report["database"] = await start_database(exits)
        pool = await connect(url)
        exits.push_async_callback(pool.close)
        report["postgres"] = await pool.fetchval("SHOW server_version")
        report["runs"] = []
        for fanout in args.fanout:
            print(f"measuring {fanout} subscriber(s) ...", file=sys.stderr, flush=True)
            report["runs"].append(await measure(url, pool, fanout, args.appends, args.warmup))
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    report["total_seconds"] = round(time.perf_counter() - began, 2)
    return report


def render(report: dict[str, Any]) -> str:
    m = report["machine"]
    head = [
        ("when", report["started_at"]),
        ("mode", report["mode"]),
        ("machine", f"{m['cpu_count']} cores, {m['platform']}, Python {m['python']}"),
        ("database", f"{report['database']}; PostgreSQL {report['postgres']}"),
        (
            "load average 1/5/15 min",
            f"{report['load_average_start']} at start, {report['load_average_end']} at end",
        ),
        ("appends per row", f"{report['runs'][0]['appends']} (after {report['warmup_appends']})"),
    ]
    title = "Commit to wake-up: from just before COMMIT is sent to the subscriber waking"
    lines = [
        title,
        "-" * len(title),
        f"  {'subscribers':>11}  {'each p50':>9} {'each p99':>9} {'each max':>9}"
        f"  {'all woken p50':>13} {'p99':>9}  {'COMMIT p50':>10}  {'left':>4}",
    ]
    for run in report["runs"]:
        each, last = run["each_subscriber"], run["all_subscribers_woken"]
        lines.append(
            f"  {run['subscribers']:>11}  {each['median_ms']:>6.2f} ms {run['p99_each_ms']:>6.2f} ms"
            f" {each['max_ms']:>6.2f} ms  {last['median_ms']:>10.2f} ms {last['p99_ms']:>6.2f} ms"
            f"  {run['commit_round_trip']['median_ms']:>7.2f} ms  {run['subscriptions_left_after']:>4}"
        )
    lines.append(
        "  (each: every subscriber of every append; all woken: the last subscriber per append;"
    )
    lines.append("   COMMIT: the writer's own round trip; left: subscriptions left after the run)")
    return "\n\n".join([table("Reverie event feed benchmark", head), "\n".join(lines)])


def main(argv: list[str] | None = None) -> None:
    run_main(parse_args(argv), run, render)


if __name__ == "__main__":
    main()
