"""What a Reverie session costs on top of calling the model directly.

Starts its own stack (a headless Temporal dev server, an embedded PostgreSQL unless
DATABASE_URL is set, a simulated Messages API that answers at once, one in-process worker) and
measures:

  (a) wall time per turn of a session, against the same conversation driven directly with the
      anthropic SDK (interleaved turn by turn, so drift hits both alike);
  (b) Temporal history bytes and events added per turn over a long session with large user
      messages (the bytes must not grow with the transcript: content lives in Postgres);
  (c) throughput: many sessions at once on one worker, one turn each.

Run with `make bench` (or `.venv/bin/python bench/session_overhead.py [--quick]`). Prints a
table and writes every figure to bench/results/session_overhead.json (or --out).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

# Running as `python bench/session_overhead.py` puts bench/ first on sys.path, not the repo root.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import anthropic  # noqa: E402
import asyncpg  # noqa: E402
import temporalio  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402

from reverie.settings import Settings  # noqa: E402
from reverie.simulated_model import SimulatedModelServer  # noqa: E402
from reverie.starter.client import ReverieClient  # noqa: E402
from reverie.starter.stack import EmbeddedPostgres, TemporalDevServer, free_port  # noqa: E402
from reverie.store import events as event_store  # noqa: E402
from reverie.store.pool import connect  # noqa: E402
from reverie.worker import build_worker  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "session_overhead.json"
SYSTEM_PROMPT = "You are a terse assistant used for benchmarking. Answer in one line."
MODEL = "simulated-bench"
GOAL_OVERHEAD_MS = 25.0
HISTORY_BAR = 0.10  # bytes added per turn, late vs early: within 10%
POLL_SECONDS = 0.002  # how often a waiter looks for the turn's session.status_idle
THROUGHPUT_POLL_SECONDS = 0.005  # one poller watches every pending session of (c)
TURN_TIMEOUT = 60.0
IDLE = "session.status_idle"
EPHEMERAL = {"type": "ephemeral"}
# The events of one turn, in order; their `processed_at` gives an approximate breakdown.
PHASE_EVENTS = (
    "user.message",
    "session.status_running",
    "span.model_request_start",
    "span.model_request_end",
    IDLE,
)


# ---- small statistics ------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); q in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "median_ms": round(percentile(ms, 50), 2),
        "p90_ms": round(percentile(ms, 90), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "mean_ms": round(statistics.fmean(ms), 2) if ms else math.nan,
        "min_ms": round(min(ms), 2) if ms else math.nan,
        "max_ms": round(max(ms), 2) if ms else math.nan,
    }


def mean_or_nan(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else math.nan


# ---- the stack -------------------------------------------------------------------------------


def _with_database(url: str, name: str) -> str:
    head, _, query = url.partition("?")
    head = head.rsplit("/", 1)[0] + "/" + name
    return f"{head}?{query}" if query else head


class Bench:
    """Everything the benchmarks run against; `start` pushes each part's teardown on a stack."""

    def __init__(self, exits: contextlib.AsyncExitStack) -> None:
        self.exits = exits
        self.tmp = Path(tempfile.mkdtemp(prefix="reverie-bench-"))
        exits.callback(shutil.rmtree, self.tmp, True)
        self.temporal_server = TemporalDevServer(
            db_file=None,
            port=free_port(),
            ui_port=None,
            log_file=self.tmp / "temporal.log",
            choose_ports=True,
        )
        self.database: str = ""
        self.database_source = ""
        self.sim = SimulatedModelServer()
        self.settings: Settings | None = None
        self.reverie: ReverieClient | None = None
        self.worker_pool: asyncpg.Pool | None = None

    async def start(self) -> None:
        started = time.perf_counter()
        # The dev server boots in a subprocess while Postgres starts here.
        self.exits.callback(self.temporal_server.stop)
        temporal_boot = asyncio.to_thread(self.temporal_server.start)
        # Both finish (or fail) before anything unwinds, so every teardown is registered.
        booted = await asyncio.gather(temporal_boot, self._start_database(), return_exceptions=True)
        for outcome in booted:
            if isinstance(outcome, BaseException):
                raise outcome
        self.database = booted[1]
        await self.sim.start()
        self.exits.push_async_callback(self.sim.stop)
        self.settings = Settings(
            TEMPORAL_ADDRESS=self.temporal_server.address,
            TEMPORAL_NAMESPACE="default",
            DATABASE_URL=self.database,
            ANTHROPIC_API_KEY="x",
            ANTHROPIC_BASE_URL=self.sim.base_url,
            REVERIE_HOME=self.tmp / "home",
            REVERIE_TASK_QUEUE=f"reverie-bench-{uuid.uuid4().hex[:6]}",
        )
        worker_client = await Client.connect(
            self.temporal_server.address, data_converter=pydantic_data_converter
        )
        self.worker_pool = await connect(self.database)
        self.exits.push_async_callback(self.worker_pool.close)
        # Entered after its pool, so the worker stops (and drains) before the pool closes.
        await self.exits.enter_async_context(
            build_worker(worker_client, self.worker_pool, self.settings)
        )
        self.reverie = await ReverieClient.connect(self.settings)
        self.exits.push_async_callback(self.reverie.close)
        self.startup_seconds = time.perf_counter() - started

    async def _start_database(self) -> str:
        base = os.environ.get("DATABASE_URL")
        if base:
            self.database_source = "DATABASE_URL (fresh database, dropped afterwards)"
        else:
            embedded = EmbeddedPostgres(self.tmp / "pg")
            self.exits.callback(embedded.stop)
            base = await asyncio.to_thread(embedded.start)
            self.database_source = "embedded (pgserver, temp dir)"
        name = f"reverie_bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(base)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        self.exits.push_async_callback(self._drop_database, base, name)
        return _with_database(base, name)

    @staticmethod
    async def _drop_database(base: str, name: str) -> None:
        with contextlib.suppress(Exception):
            admin = await asyncpg.connect(base)
            try:
                await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await admin.close()


# ---- waiting for a turn to end ---------------------------------------------------------------


async def wait_for_idle(
    pool: asyncpg.Pool, session_id: str, after: int, *, poll: float = POLL_SECONDS
) -> int:
    """Poll the event log (what `ReverieClient.list_events` reads) for the next
    `session.status_idle` after position `after`; returns its position."""
    deadline = time.monotonic() + TURN_TIMEOUT
    while True:
        found, last = await event_store.list_events(
            pool, session_id, after_position=after, limit=1, types=[IDLE]
        )
        if found:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"session {session_id} did not idle within {TURN_TIMEOUT:.0f}s")
        await asyncio.sleep(poll)


async def turn_events(pool: asyncpg.Pool, session_id: str, after: int, until: int) -> list[Any]:
    found, _ = await event_store.list_events(
        pool, session_id, after_position=after, limit=max(1, until - after)
    )
    return found


def phases(found: list[Any], sent_at: float, seen_at: float) -> dict[str, float] | None:
    """Approximate split of one turn (seconds), from the events' `processed_at` stamps."""
    stamps: dict[str, float] = {}
    for event in found:
        if event.type in PHASE_EVENTS and event.type not in stamps:
            stamps[event.type] = event.processed_at.timestamp()
    if len(stamps) != len(PHASE_EVENTS):
        return None
    message, running, start, end, idle = (stamps[t] for t in PHASE_EVENTS)
    return {
        "send -> input accepted": message - sent_at,
        "accepted -> status_running": running - message,
        "running -> model request start": start - running,
        "model request (HTTP + commit)": end - start,
        "model end -> idle decided": idle - end,
        "idle decided -> seen by client": seen_at - idle,
    }


# ---- the baseline ----------------------------------------------------------------------------


class DirectConversation:
    """The same conversation without Reverie: one process, the SDK, a growing messages list.

    Requests have the shape Reverie sends (system prompt and last block marked for caching), so
    the simulated server does the same work for both.
    """

    def __init__(self, base_url: str, max_tokens: int) -> None:
        self.client = anthropic.AsyncAnthropic(base_url=base_url, api_key="x", max_retries=0)
        self.max_tokens = max_tokens
        self.system = [{"type": "text", "text": SYSTEM_PROMPT, "cache_control": EPHEMERAL}]
        self.messages: list[dict[str, Any]] = []

    async def turn(self, text: str) -> float:
        """One user message and its answer; returns the wall time in seconds."""
        started = time.perf_counter()
        if self.messages:
            self.messages[-2]["content"][-1].pop("cache_control", None)
        block = {"type": "text", "text": text, "cache_control": EPHEMERAL}
        self.messages.append({"role": "user", "content": [block]})
        reply = await self.client.messages.create(
            model=MODEL, max_tokens=self.max_tokens, system=self.system, messages=self.messages
        )
        content = [b.model_dump(mode="json", exclude_none=True) for b in reply.content]
        self.messages.append({"role": "assistant", "content": content})
        return time.perf_counter() - started

    async def close(self) -> None:
        await self.client.close()


# ---- (a) per-turn overhead -------------------------------------------------------------------


async def bench_turns(bench: Bench, turns: int, warmup: int) -> dict[str, Any]:
    reverie, settings = bench.reverie, bench.settings
    assert reverie is not None and settings is not None
    agent = await reverie.create_agent({"name": "bench", "model": MODEL, "system": SYSTEM_PROMPT})
    session = await reverie.create_session({"agent": agent.id, "title": "bench (a)"})
    direct = DirectConversation(bench.sim.base_url, settings.max_tokens)

    position = 0
    reverie_times: list[float] = []
    direct_times: list[float] = []
    send_times: list[float] = []
    breakdown: list[dict[str, float]] = []
    try:
        for index in range(warmup + turns):
            text = f"Turn {index + 1}: say something short about the number {index * 7 % 97}."
            sent_at = time.time()
            started = time.perf_counter()
            await reverie.send_message(session.id, text)
            accepted = time.perf_counter() - started
            idle_at = await wait_for_idle(reverie.pool, session.id, position)
            elapsed = time.perf_counter() - started
            seen_at = time.time()

            direct_elapsed = await direct.turn(text)

            if index >= warmup:
                reverie_times.append(elapsed)
                direct_times.append(direct_elapsed)
                send_times.append(accepted)
                split = phases(
                    await turn_events(reverie.pool, session.id, position, idle_at),
                    sent_at,
                    seen_at,
                )
                if split is not None:
                    breakdown.append(split)
            position = idle_at
    finally:
        await direct.close()

    rev, dir_ = summary_ms(reverie_times), summary_ms(direct_times)
    paired = [r - d for r, d in zip(reverie_times, direct_times, strict=True)]
    overhead = summary_ms(paired)
    return {
        "turns": turns,
        "warmup_turns": warmup,
        "poll_interval_ms": POLL_SECONDS * 1000,
        "reverie": rev,
        "direct_sdk": dir_,
        "ratio_of_medians": round(rev["median_ms"] / dir_["median_ms"], 2),
        "overhead_ms_per_turn": round(rev["median_ms"] - dir_["median_ms"], 2),
        "overhead_paired": overhead,
        "goal_overhead_ms": GOAL_OVERHEAD_MS,
        "meets_goal": rev["median_ms"] - dir_["median_ms"] < GOAL_OVERHEAD_MS,
        "send_message_ms": summary_ms(send_times),
        "breakdown_median_ms": {
            key: round(percentile([b[key] for b in breakdown], 50) * 1000, 2)
            for key in (breakdown[0] if breakdown else {})
        },
        "breakdown_turns": len(breakdown),
    }


# ---- (b) history growth ----------------------------------------------------------------------


async def current_history(client: Client, session_id: str) -> tuple[str, int, int, int]:
    """(run id, events, bytes, server-reported history size) of the session's current run.

    Bytes are the sum of `HistoryEvent.ByteSize()` (protobuf wire size, what Temporal's history
    limits count), not the larger JSON rendering.
    """
    description = await client.get_workflow_handle(session_id).describe()
    run_id = description.run_id
    history = await client.get_workflow_handle(session_id, run_id=run_id).fetch_history()
    size = sum(event.ByteSize() for event in history.events)
    reported = description.raw_description.workflow_execution_info.history_size_bytes
    return run_id, len(history.events), size, reported


def window(turns: int, first: int, last: int) -> tuple[int, int]:
    return max(1, min(first, turns)), max(1, min(last, turns))


def window_mean(rows: list[dict[str, Any]], bounds: tuple[int, int], key: str) -> float:
    values = [
        row[key] for row in rows if bounds[0] <= row["turn"] <= bounds[1] and row[key] is not None
    ]
    return mean_or_nan(values)


def window_median(rows: list[dict[str, Any]], bounds: tuple[int, int], key: str) -> float:
    return percentile([row[key] for row in rows if bounds[0] <= row["turn"] <= bounds[1]], 50)


async def bench_history(bench: Bench, turns: int, message_bytes: int) -> dict[str, Any]:
    reverie, settings = bench.reverie, bench.settings
    assert reverie is not None and settings is not None
    agent = await reverie.create_agent({"name": "bench", "model": MODEL, "system": SYSTEM_PROMPT})
    session = await reverie.create_session({"agent": agent.id, "title": "bench (b)"})
    client = reverie.temporal
    direct = DirectConversation(bench.sim.base_url, settings.max_tokens)
    run_id, count, size, _ = await current_history(client, session.id)
    first_run = run_id
    rows: list[dict[str, Any]] = []
    run_changes: list[dict[str, Any]] = []
    position = 0
    started = time.perf_counter()
    filler = "lorem ipsum dolor sit amet " * (message_bytes // 27 + 1)
    try:
        for turn in range(1, turns + 1):
            prefix = f"turn {turn}: "
            text = prefix + filler[: message_bytes - len(prefix)]
            turn_started = time.perf_counter()
            await reverie.send_message(session.id, text)
            position = await wait_for_idle(reverie.pool, session.id, position)
            turn_seconds = time.perf_counter() - turn_started
            new_run, new_count, new_size, reported = await current_history(client, session.id)
            same_run = new_run == run_id
            if not same_run:
                run_changes.append({"turn": turn, "events_in_previous_run": count})
            rows.append(
                {
                    "turn": turn,
                    "run": len(run_changes),
                    # No delta across a continue-as-new: the new run's start events are not
                    # this turn's.
                    "bytes_added": new_size - size if same_run else None,
                    "events_added": new_count - count if same_run else None,
                    "run_events": new_count,
                    "run_bytes": new_size,
                    "server_history_size": reported,
                    "turn_ms": round(turn_seconds * 1000, 2),
                    "direct_turn_ms": round(await direct.turn(text) * 1000, 2),
                }
            )
            run_id, count, size = new_run, new_count, new_size
    finally:
        await direct.close()
    elapsed = time.perf_counter() - started
    early = window(turns, 6, 15)
    late = window(turns, turns - 9, turns)
    early_bytes = window_mean(rows, early, "bytes_added")
    late_bytes = window_mean(rows, late, "bytes_added")
    measured = [row for row in rows if row["bytes_added"] is not None]
    stored = await reverie.pool.fetchval(
        "SELECT coalesce(sum(octet_length(content::text)), 0) FROM transcript WHERE session_id = $1",
        session.id,
    )
    ratio = late_bytes / early_bytes if early_bytes else math.nan
    return {
        "turns": turns,
        "user_message_bytes": message_bytes,
        "size_measure": "sum of HistoryEvent.ByteSize() (protobuf wire bytes) of the current run",
        "continue_as_new": "server default (suggested at 4096 events or 4 MiB)",
        "early_window": list(early),
        "late_window": list(late),
        "bytes_per_turn_early": round(early_bytes, 1),
        "bytes_per_turn_late": round(late_bytes, 1),
        "late_over_early": round(ratio, 3),
        "bar": f"within {HISTORY_BAR:.0%}",
        "meets_bar": abs(ratio - 1) <= HISTORY_BAR,
        "events_per_turn_early": round(window_mean(rows, early, "events_added"), 2),
        "events_per_turn_late": round(window_mean(rows, late, "events_added"), 2),
        "events_per_turn_mean": round(mean_or_nan([r["events_added"] for r in measured]), 2),
        "bytes_per_turn_mean": round(mean_or_nan([r["bytes_added"] for r in measured]), 1),
        "turn_ms_early": round(window_median(rows, early, "turn_ms"), 2),
        "turn_ms_late": round(window_median(rows, late, "turn_ms"), 2),
        "direct_turn_ms_early": round(window_median(rows, early, "direct_turn_ms"), 2),
        "direct_turn_ms_late": round(window_median(rows, late, "direct_turn_ms"), 2),
        "first_run_id": first_run,
        "run_changes": run_changes,
        "transcript_bytes_in_postgres": stored,
        "seconds": round(elapsed, 2),
        "per_turn": rows,
    }


# ---- (c) throughput --------------------------------------------------------------------------


async def bench_throughput(bench: Bench, sessions: int) -> dict[str, Any]:
    reverie = bench.reverie
    assert reverie is not None
    agent = await reverie.create_agent({"name": "bench", "model": MODEL, "system": SYSTEM_PROMPT})
    pending: dict[str, float] = {}
    latencies: dict[str, float] = {}
    create_times: list[float] = []
    all_created = asyncio.Event()

    async def one(index: int) -> None:
        started = time.perf_counter()
        session = await reverie.create_session(
            {
                "agent": agent.id,
                "title": f"bench (c) {index}",
                "initial_events": [{"type": "user.message", "content": f"hello {index}"}],
            }
        )
        create_times.append(time.perf_counter() - started)
        pending[session.id] = started

    async def watch() -> None:
        """One poller for every session, so waiting does not load the database 200-fold."""
        deadline = time.monotonic() + TURN_TIMEOUT * 3
        while not (all_created.is_set() and not pending):
            if pending:
                rows = await reverie.pool.fetch(
                    "SELECT DISTINCT session_id FROM events"
                    " WHERE session_id = ANY($1::text[]) AND type = $2",
                    list(pending),
                    IDLE,
                )
                now = time.perf_counter()
                for row in rows:
                    latencies[row["session_id"]] = now - pending.pop(row["session_id"])
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} sessions did not idle in time")
            await asyncio.sleep(THROUGHPUT_POLL_SECONDS)

    started = time.perf_counter()
    watcher = asyncio.create_task(watch())
    try:
        await asyncio.gather(*(one(i) for i in range(sessions)))
        all_created.set()
        await watcher
    finally:
        if not watcher.done():
            watcher.cancel()
            with contextlib.suppress(BaseException):
                await watcher
    elapsed = time.perf_counter() - started
    latency = summary_ms(list(latencies.values()))
    return {
        "sessions": sessions,
        "seconds": round(elapsed, 3),
        "sessions_per_second": round(sessions / elapsed, 2),
        "latency": latency,
        "create_session": summary_ms(create_times),
        "poll_interval_ms": THROUGHPUT_POLL_SECONDS * 1000,
        "worker": "one in-process worker, max_concurrent_activities=200, db pools of 10",
    }


# ---- report ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    try:
        cli = subprocess.run(
            ["temporal", "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        cli = "unknown"
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "temporalio": temporalio.__version__,
        "anthropic": anthropic.__version__,
        "temporal_cli": cli,
    }


def table(title: str, rows: list[tuple[str, str]]) -> str:
    width = max(len(label) for label, _ in rows)
    lines = [title, "-" * len(title)]
    lines += [f"  {label.ljust(width)}  {value}" for label, value in rows]
    return "\n".join(lines)


def ms(stats: dict[str, float]) -> str:
    return f"median {stats['median_ms']:8.2f} ms   p90 {stats['p90_ms']:8.2f} ms"


def header_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """What every benchmark table opens with: when, where, and with which server flags."""
    m = report["machine"]
    return [
        ("when", report["started_at"]),
        ("mode", report["mode"]),
        ("machine", f"{m['cpu_count']} cores, {m['platform']}, Python {m['python']}"),
        ("temporal", f"{m['temporal_cli']}; temporalio {m['temporalio']}"),
        ("dev server flags", " ".join(report["dev_server_flags"])),
        (
            "load average 1/5/15 min",
            f"{report['load_average_start']} at start, {report['load_average_end']} at end",
        ),
        ("database", report["database"]),
        ("stack startup", f"{report['startup_seconds']:.1f} s"),
    ]


def render(report: dict[str, Any]) -> str:
    parts = [table("Reverie session overhead benchmark", header_rows(report))]
    a = report.get("turn_overhead")
    if a:
        rows = [
            ("turns (after warm-up)", f"{a['turns']} (+{a['warmup_turns']} warm-up)"),
            ("Reverie turn", ms(a["reverie"])),
            ("direct SDK turn", ms(a["direct_sdk"])),
            ("ratio of medians", f"{a['ratio_of_medians']:.2f}x"),
            (
                "overhead per turn",
                f"{a['overhead_ms_per_turn']:.2f} ms (difference of medians); "
                f"paired {ms(a['overhead_paired'])}",
            ),
            (
                "goal (not asserted)",
                f"< {a['goal_overhead_ms']:.0f} ms per turn: "
                + ("met" if a["meets_goal"] else "NOT met"),
            ),
            ("send_message returns", ms(a["send_message_ms"])),
        ]
        rows += [
            (f"  {key}", f"median {value:8.2f} ms")
            for key, value in a["breakdown_median_ms"].items()
        ]
        parts.append(table("(a) wall time per turn (send -> session.status_idle seen)", rows))
    b = report.get("history")
    if b:
        changes = ", ".join(
            f"turn {c['turn']} (after {c['events_in_previous_run']} events)"
            for c in b["run_changes"]
        )
        parts.append(
            table(
                f"(b) Temporal history per turn ({b['turns']} turns, "
                f"{b['user_message_bytes'] // 1000} kB user messages)",
                [
                    ("size measure", b["size_measure"]),
                    (
                        f"bytes/turn, turns {b['early_window'][0]}-{b['early_window'][1]}",
                        f"{b['bytes_per_turn_early']:.0f}",
                    ),
                    (
                        f"bytes/turn, turns {b['late_window'][0]}-{b['late_window'][1]}",
                        f"{b['bytes_per_turn_late']:.0f}",
                    ),
                    (
                        "late / early",
                        f"{b['late_over_early']:.3f}  (bar: {b['bar']}: "
                        + ("met" if b["meets_bar"] else "NOT met")
                        + ")",
                    ),
                    (
                        "events/turn (early, late, mean)",
                        f"{b['events_per_turn_early']}, {b['events_per_turn_late']}, "
                        f"{b['events_per_turn_mean']}",
                    ),
                    (
                        "turn time, early -> late",
                        f"Reverie {b['turn_ms_early']:.0f} -> {b['turn_ms_late']:.0f} ms, "
                        f"direct SDK {b['direct_turn_ms_early']:.0f} -> "
                        f"{b['direct_turn_ms_late']:.0f} ms (medians)",
                    ),
                    ("continue-as-new", changes or "none in this run"),
                    ("transcript in Postgres", f"{b['transcript_bytes_in_postgres'] / 1e6:.1f} MB"),
                    ("took", f"{b['seconds']:.1f} s"),
                ],
            )
        )
    c = report.get("throughput")
    if c:
        parts.append(
            table(
                f"(c) throughput: {c['sessions']} sessions at once, one turn each, one worker",
                [
                    ("sessions/second", f"{c['sessions_per_second']:.1f}"),
                    ("all done in", f"{c['seconds']:.2f} s"),
                    (
                        "latency (create -> idle)",
                        f"p50 {c['latency']['median_ms']:.0f} ms   "
                        f"p99 {c['latency']['p99_ms']:.0f} ms",
                    ),
                    (
                        "create_session returns",
                        f"p50 {c['create_session']['median_ms']:.0f} ms   "
                        f"p99 {c['create_session']['p99_ms']:.0f} ms",
                    ),
                ],
            )
        )
    parts.append(f"total {report['total_seconds']:.1f} s")
    return "\n\n".join(parts)


# ---- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, help="turns measured in (a) (default 50)")
    parser.add_argument("--sessions", type=int, help="concurrent sessions in (c) (default 200)")
    parser.add_argument("--history-turns", type=int, help="turns of (b) (default 200)")
    parser.add_argument(
        "--message-bytes", type=int, default=20_000, help="user message size in (b)"
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run (well under 1 min)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes")
    args = parser.parse_args(argv)
    quick = args.quick
    args.turns = args.turns or (10 if quick else 50)
    args.sessions = args.sessions or (20 if quick else 200)
    args.history_turns = args.history_turns or (20 if quick else 200)
    args.warmup = 2 if quick else 5
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    began = time.perf_counter()
    report: dict[str, Any] = {
        "started_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }
    async with contextlib.AsyncExitStack() as exits:
        bench = Bench(exits)
        report["dev_server_flags"] = bench.temporal_server.flags()
        await bench.start()
        report["database"] = bench.database_source
        report["startup_seconds"] = round(bench.startup_seconds, 2)
        steps: list[tuple[str, str, Callable[[], Awaitable[dict[str, Any]]]]] = [
            ("turn_overhead", "(a)", lambda: bench_turns(bench, args.turns, args.warmup)),
            (
                "history",
                "(b)",
                lambda: bench_history(bench, args.history_turns, args.message_bytes),
            ),
            ("throughput", "(c)", lambda: bench_throughput(bench, args.sessions)),
        ]
        for key, label, step in steps:
            print(f"running {label} ...", file=sys.stderr, flush=True)
            report[key] = await step()
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    report["total_seconds"] = round(time.perf_counter() - began, 2)
    return report


def run_main(
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace], Awaitable[dict[str, Any]]],
    render: Callable[[dict[str, Any]], str],
) -> None:
    """Run a benchmark, print its table and write its JSON; Ctrl-C stops all it started (130)."""
    # pgserver asks platformdirs for a runtime dir, which warns when XDG_RUNTIME_DIR is unset.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    interrupted = False

    async def guarded() -> dict[str, Any]:
        # Ctrl-C cancels the run; whatever a cancelled call raises then, the stack unwinds.
        task = asyncio.current_task()
        assert task is not None

        def stop() -> None:
            nonlocal interrupted
            interrupted = True
            task.cancel()

        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop)
        return await run(args)

    try:
        report = asyncio.run(guarded())
    except BaseException:
        if not interrupted:
            raise
        print("interrupted; everything started was stopped", file=sys.stderr)
        sys.exit(130)
    print(render(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nwrote {args.out}")


def main(argv: list[str] | None = None) -> None:
    run_main(parse_args(argv), run, render)


if __name__ == "__main__":
    main()
