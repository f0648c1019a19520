"""What one HTTP API process serves: events sent and listed per second, and SSE latency.

Starts its own stack, each serving part in a process of its own so that the benchmark client's
CPU is not the server's (a headless Temporal dev server, an embedded PostgreSQL unless
DATABASE_URL is set, the simulated model, one `python -m reverie.worker`, and ONE API process,
`python -m bench.api_throughput serve`, which runs `reverie.api.app.start_api`), then measures:

  (1) events sent per second through `POST /v1/sessions/{id}/events` (the official
      `anthropic.AsyncAnthropic` client, one user.message to each of many sessions at once; the
      turns run too, on the instant simulated model), and events listed per second through
      `GET /v1/sessions/{id}/events` (pages of 100 over sessions holding many events, with the
      SDK and with a plain aiohttp client);
  (2) p50/p99 latency from an event's commit to its arrival on one SSE stream
      (`GET /v1/sessions/{id}/events/stream`, read with aiohttp as a plain SSE client);
  (3) the same with 1,000 streams open on the one process (10 on each of 100 sessions), one
      event at a time and in bursts (one event into every session at once), with the API
      process's RSS and its PostgreSQL connections.

Run with `make bench` or `.venv/bin/python bench/api_throughput.py [--quick]`. Prints a table
and writes every figure to bench/results/api_throughput.json (or --out). Never asserts timings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Running as `python bench/api_throughput.py` puts bench/ first on sys.path, not the repo root.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import anthropic  # noqa: E402
import asyncpg  # noqa: E402
import psutil  # noqa: E402

from bench.session_overhead import (  # noqa: E402
    Bench,
    _with_database,
    header_rows,
    machine,
    run_main,
    summary_ms,
    table,
)
from reverie import event_loop  # noqa: E402
from reverie.models.common import new_id  # noqa: E402
from reverie.service.client import ReverieClient  # noqa: E402
from reverie.settings import Settings  # noqa: E402
from reverie.starter.stack import EmbeddedPostgres, free_port  # noqa: E402
from reverie.store import events as event_store  # noqa: E402
from reverie.store import keys  # noqa: E402
from reverie.store.pool import connect  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "api_throughput.json"
MODEL = "simulated-api-bench"
SYSTEM_PROMPT = "You are a terse assistant used for benchmarking. Answer in one line."
# PostgreSQL application names, so that pg_stat_activity tells whose connection is whose.
APP_NAMES = {
    "api": "reverie-bench-api",
    "worker": "reverie-bench-worker",
    "client": "reverie-bench-client",
}
IDLE = "session.status_idle"
PROBE_TYPE = "agent.message"  # what probes and listed events are recorded as
PAGE = 100  # events per listed page
PROBE_TIMEOUT = 10.0  # a probe not seen on every stream by then counts as missing
BURST_TIMEOUT = 60.0
TURNS_TIMEOUT = 120.0
QUIET_BUSY = 0.35  # the machine is quiet when under this share of all cores is busy...
QUIET_SAMPLES = 2  # ...over this many consecutive half-second samples
# (1a) send, (1b) list, (2) one stream, (3) many streams.
PHASES = ("send", "list", "stream", "streams")


# ---- the API process: `python -m bench.api_throughput serve` ------------------------------------


# How the API's pool was used: acquisitions (one per query outside a transaction, one per
# transaction), and the time spent waiting for a free connection. Counted in the API process.
POOL_USE = {"acquires": 0, "wait_s": 0.0, "max_wait_s": 0.0}


class CountingPool(asyncpg.Pool):
    """The API's pool, counting; `serve` swaps its class in (same layout, same behaviour)."""

    __slots__ = ()

    async def _acquire(self, timeout: float | None) -> Any:
        began = time.perf_counter()
        try:
            return await super()._acquire(timeout)  # type: ignore[misc]
        finally:
            waited = time.perf_counter() - began
            POOL_USE["acquires"] += 1
            POOL_USE["wait_s"] += waited
            POOL_USE["max_wait_s"] = max(POOL_USE["max_wait_s"], waited)


def server_stats(runner: Any, client: ReverieClient) -> dict[str, Any]:
    """What only the API process knows: its feed's subscribers and its pool, for the report."""
    from reverie.api.state import FEED

    feed = runner.app[FEED]
    stats = {
        "subscribers": feed.subscriber_count(),
        "sessions_followed": feed.sessions_followed,
        "feed_notifications": feed.notifications,
        "feed_connects": feed.connects,
        "pool_size": client.pool.get_size(),
        "pool_idle": client.pool.get_idle_size(),
        "pool_max": client.pool.get_max_size(),
        "pool_acquires": POOL_USE["acquires"],
        "pool_wait_s": round(POOL_USE["wait_s"], 4),
        "pool_max_wait_s": round(POOL_USE["max_wait_s"], 4),
        "tasks": len(asyncio.all_tasks()),
    }
    POOL_USE["max_wait_s"] = 0.0  # the longest wait since the previous `stats`
    return stats


def server_delta(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The API process's pool use and notifications heard between two `stats`."""
    acquires = after["pool_acquires"] - before["pool_acquires"]
    waited = after["pool_wait_s"] - before["pool_wait_s"]
    return {
        "pool_acquires": acquires,
        "pool_wait_ms_mean": round(waited / max(1, acquires) * 1000, 3),
        "pool_wait_ms_max": round(after["pool_max_wait_s"] * 1000, 2),
        "feed_notifications": after["feed_notifications"] - before["feed_notifications"],
    }


async def serve(keepalive: float) -> None:
    """One API process on a free port; prints {"base_url", "pid"} as a JSON line, then answers
    each `stats` line on stdin with one JSON line, and stops at end of input."""
    from reverie.api.app import start_api
    from reverie.settings import load_settings

    client = await ReverieClient.connect(load_settings())
    client.pool.__class__ = CountingPool
    runner, base_url = await start_api(client, "127.0.0.1", 0, keepalive_seconds=keepalive)
    try:
        loop = asyncio.get_running_loop()
        commands = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
        print(json.dumps({"base_url": base_url, "pid": os.getpid()}), flush=True)
        while line := await commands.readline():
            if line.strip() == b"stats":
                print(json.dumps(server_stats(runner, client)), flush=True)
    finally:
        await runner.cleanup()
        await client.close()


# ---- the machine -------------------------------------------------------------------------------


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def settle(label: str, max_wait: float) -> dict[str, Any]:
    """Wait until the machine is quiet (under QUIET_BUSY of all cores busy for QUIET_SAMPLES
    half-second samples in a row) or `max_wait` seconds pass; print and answer the load."""
    began = time.monotonic()
    quiet, busy = 0, 1.0
    before = _cpu_ticks()
    while True:
        await asyncio.sleep(0.5)
        after = _cpu_ticks()
        busy = (after[0] - before[0]) / max(1, after[1] - before[1])
        before = after
        quiet = quiet + 1 if busy < QUIET_BUSY else 0
        waited = time.monotonic() - began
        if quiet >= QUIET_SAMPLES or waited >= max_wait:
            break
    row = {
        "load_average": load_average(),
        "busy_share": round(busy, 2),
        "waited_s": round(waited, 1),
        "quiet": quiet >= QUIET_SAMPLES,
    }
    print(
        f"  {label}: load average {' '.join(map(str, row['load_average']))}, machine "
        f"{busy:.0%} busy after waiting {waited:.1f} s"
        + ("" if row["quiet"] else " (NOT quiet: figures of this phase are suspect)"),
        file=sys.stderr,
        flush=True,
    )
    return row


class CpuMeter:
    """CPU seconds each part of the stack used: sampled before and after a phase."""

    def __init__(self, groups: dict[str, Callable[[], list[psutil.Process]]]) -> None:
        self.groups = groups

    def sample(self) -> dict[str, Any]:
        out: dict[str, Any] = {"_wall": time.perf_counter()}
        for name, find in self.groups.items():
            per: dict[int, float] = {}
            for process in find():
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    per[process.pid] = times.user + times.system
            out[name] = per
        return out

    def since(self, before: dict[str, Any]) -> dict[str, float]:
        """CPU seconds per part since `before`, and the wall time as `wall`."""
        after = self.sample()
        used = {
            name: round(sum(t - before[name].get(pid, 0.0) for pid, t in after[name].items()), 3)
            for name in self.groups
        }
        used["wall"] = round(after["_wall"] - before["_wall"], 3)
        return used


def _tree(process: psutil.Process | None) -> list[psutil.Process]:
    if process is None:
        return []
    with contextlib.suppress(psutil.Error):
        return [process, *process.children(recursive=True)]
    return []


# ---- the stack ---------------------------------------------------------------------------------


def _with_app_name(url: str, name: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}application_name={name}"


class ApiStack(Bench):
    """The Temporal dev server and database of `Bench`, and the model, a worker and the API
    each in a process of their own; a `ReverieClient` and a writer pool for setting up."""

    def __init__(self, exits: contextlib.AsyncExitStack, keepalive: float) -> None:
        super().__init__(exits)
        self.keepalive = keepalive
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.base_url = ""
        self.api_key = ""
        self.writer: asyncpg.Pool | None = None
        self.embedded: EmbeddedPostgres | None = None
        self._stats_lock = asyncio.Lock()

    async def start(self) -> None:
        started = time.perf_counter()
        self.exits.callback(self.temporal_server.stop)
        temporal_boot = asyncio.to_thread(self.temporal_server.start)
        booted = await asyncio.gather(temporal_boot, self._start_database(), return_exceptions=True)
        for outcome in booted:
            if isinstance(outcome, BaseException):
                raise outcome
        self.database = booted[1]
        model_port = free_port()
        model_url = f"http://127.0.0.1:{model_port}"
        env = {
            **os.environ,
            "TEMPORAL_ADDRESS": self.temporal_server.address,
            "TEMPORAL_NAMESPACE": "default",
            "ANTHROPIC_API_KEY": "x",
            "ANTHROPIC_BASE_URL": model_url,
            "REVERIE_HOME": str(self.tmp / "home"),
            "REVERIE_TASK_QUEUE": f"reverie-api-bench-{os.getpid()}",
            "REVERIE_SANDBOX": "none",  # no tools run; spares the worker probing bubblewrap
            "PYTHONUNBUFFERED": "1",
        }
        await self._spawn(
            "model", ["-m", "reverie.simulated_model", "--port", str(model_port)], env
        )
        await self._wait_for_port(model_port, "model")
        self.settings = Settings(
            TEMPORAL_ADDRESS=env["TEMPORAL_ADDRESS"],
            TEMPORAL_NAMESPACE="default",
            DATABASE_URL=_with_app_name(self.database, APP_NAMES["client"]),
            ANTHROPIC_API_KEY="x",
            ANTHROPIC_BASE_URL=model_url,
            REVERIE_HOME=self.tmp / "home",
            REVERIE_TASK_QUEUE=env["REVERIE_TASK_QUEUE"],
        )
        # The client migrates the database before the worker and the API connect.
        self.reverie = await ReverieClient.connect(self.settings)
        self.exits.push_async_callback(self.reverie.close)
        self.writer = await connect(self.settings.database_url or "", max_size=20)
        self.exits.push_async_callback(self.writer.close)
        await self._spawn(
            "worker",
            ["-m", "reverie.worker"],
            {**env, "DATABASE_URL": _with_app_name(self.database, APP_NAMES["worker"])},
        )
        api = await self._spawn(
            "api",
            ["-m", "bench.api_throughput", "serve", "--keepalive", str(self.keepalive)],
            {**env, "DATABASE_URL": _with_app_name(self.database, APP_NAMES["api"])},
            pipe=True,
        )
        assert api.stdout is not None
        try:
            ready = json.loads(await asyncio.wait_for(api.stdout.readline(), 60))
        except (TimeoutError, ValueError) as error:
            raise RuntimeError(
                f"the API process did not start: see {self.tmp / 'api.log'}"
            ) from error
        self.base_url = ready["base_url"]
        self.api_key = (await keys.create(self.reverie.pool, "bench", "api_throughput")).key
        # One turn end to end: the worker is polling and the model answers.
        agent = await self.reverie.create_agent(
            {"name": "bench", "model": MODEL, "system": SYSTEM_PROMPT}
        )
        self.agent_id = agent.id
        warm = await self.reverie.create_session(
            {"agent": agent.id, "initial_events": [{"type": "user.message", "content": "hi"}]}
        )
        await self.reverie.wait_until_settled(warm.id, timeout=120)
        self.startup_seconds = time.perf_counter() - started

    async def _spawn(
        self, name: str, args: list[str], env: dict[str, str], *, pipe: bool = False
    ) -> asyncio.subprocess.Process:
        with open(self.tmp / f"{name}.log", "wb") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                *args,
                cwd=str(ROOT),
                env=env,
                stdin=asyncio.subprocess.PIPE if pipe else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if pipe else log,
                stderr=log,
            )
        self.processes[name] = process
        self.exits.push_async_callback(self._stop, process)
        return process

    @staticmethod
    async def _stop(process: asyncio.subprocess.Process) -> None:
        if process.returncode is not None:
            return
        if process.stdin is not None:
            process.stdin.close()  # the API process stops at end of input
        else:
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()

    async def _wait_for_port(self, port: int, name: str) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{name} did not listen: see {self.tmp / name}.log"
                    ) from None
                await asyncio.sleep(0.1)

    def pid(self, name: str) -> int:
        return self.processes[name].pid

    async def api_stats(self) -> dict[str, Any]:
        api = self.processes["api"]
        assert api.stdin is not None and api.stdout is not None
        async with self._stats_lock:
            api.stdin.write(b"stats\n")
            await api.stdin.drain()
            return json.loads(await asyncio.wait_for(api.stdout.readline(), 30))

    def api_rss_mb(self) -> float:
        return round(psutil.Process(self.pid("api")).memory_info().rss / 2**20, 1)

    def cpu_meter(self) -> CpuMeter:
        def one(name: str) -> Callable[[], list[psutil.Process]]:
            return lambda: _tree(_process(self.pid(name)))

        groups = {"api": one("api"), "worker": one("worker"), "model": one("model")}
        postmaster = None
        if self.embedded is not None and self.embedded.process is not None:
            postmaster = self.embedded.process.pid
        if postmaster is not None:
            groups["postgres"] = lambda: _tree(_process(postmaster))
        temporal = self.temporal_server.process
        if temporal is not None:
            groups["temporal"] = lambda: _tree(_process(temporal.pid))
        groups["bench client"] = lambda: [psutil.Process()]
        return CpuMeter(groups)

    async def pg_connections(self) -> dict[str, int]:
        """Connections to the benchmark's database, by application name."""
        assert self.writer is not None
        rows = await self.writer.fetch(
            """SELECT application_name, count(*) AS n FROM pg_stat_activity
               WHERE datname = current_database() GROUP BY application_name"""
        )
        by_name = {row["application_name"] or "(none)": row["n"] for row in rows}
        return {
            "api": by_name.get(APP_NAMES["api"], 0),
            "worker": by_name.get(APP_NAMES["worker"], 0),
            "bench client": by_name.get(APP_NAMES["client"], 0),
            "all": sum(by_name.values()),
        }

    async def _start_database(self) -> str:
        """As `Bench`'s, keeping the embedded server, whose processes the CPU meter reads."""
        base = os.environ.get("DATABASE_URL")
        if base:
            self.database_source = "DATABASE_URL (fresh database, dropped afterwards)"
        else:
            self.embedded = EmbeddedPostgres(self.tmp / "pg")
            self.exits.callback(self.embedded.stop)
            base = await asyncio.to_thread(self.embedded.start)
            self.database_source = "embedded (pgserver, temp dir)"
        name = f"reverie_bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(base)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        self.exits.push_async_callback(self._drop_database, base, name)
        return _with_database(base, name)


def _process(pid: int) -> psutil.Process | None:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(pid)
    return None


async def mark(stack: ApiStack) -> tuple[CpuMeter, dict[str, Any], dict[str, Any]]:
    meter = stack.cpu_meter()
    return meter, meter.sample(), await stack.api_stats()


async def since(
    stack: ApiStack, marked: tuple[CpuMeter, dict[str, Any], dict[str, Any]]
) -> dict[str, Any]:
    """CPU per part of the stack, and the API process's pool use, since `mark`."""
    meter, cpu, server = marked
    return {"cpu": meter.since(cpu), "server": server_delta(server, await stack.api_stats())}


def add_window(total: dict[str, Any], window: dict[str, Any]) -> None:
    """Sum windows (CPU seconds, acquisitions, notifications; mean and max waits recomputed)."""
    cpu = total.setdefault("cpu", defaultdict(float))
    for name, used in window["cpu"].items():
        cpu[name] = round(cpu[name] + used, 3)
    server = total.setdefault("server", defaultdict(float))
    waited = server["pool_wait_ms_mean"] * server["pool_acquires"]
    waited += window["server"]["pool_wait_ms_mean"] * window["server"]["pool_acquires"]
    server["pool_acquires"] += window["server"]["pool_acquires"]
    server["feed_notifications"] += window["server"]["feed_notifications"]
    server["pool_wait_ms_mean"] = round(waited / max(1, server["pool_acquires"]), 3)
    server["pool_wait_ms_max"] = max(
        server["pool_wait_ms_max"], window["server"]["pool_wait_ms_max"]
    )


# ---- sessions and events -----------------------------------------------------------------------


async def create_sessions(
    reverie: ReverieClient, agent_id: str, count: int, title: str
) -> list[str]:
    gate = asyncio.Semaphore(50)

    async def one(index: int) -> str:
        async with gate:
            session = await reverie.create_session({"agent": agent_id, "title": f"{title} {index}"})
            return session.id

    return list(await asyncio.gather(*(one(i) for i in range(count))))


def message_payload(text: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": text}]}


FILLER = "The quick brown fox jumps over the lazy dog; " * 6  # ~270 characters per event


async def seed(pool: asyncpg.Pool, session_id: str, count: int) -> None:
    """`count` agent.message events written straight into the log, 500 per transaction."""
    now = datetime.now(UTC)
    for start in range(0, count, 500):
        rows = [
            (new_id("sevt"), PROBE_TYPE, message_payload(f"{i}: {FILLER}"), now)
            for i in range(start, min(count, start + 500))
        ]
        await event_store.append(pool, session_id, rows)


async def positions(pool: asyncpg.Pool, session_ids: Sequence[str]) -> dict[str, int]:
    rows = await pool.fetch(
        "SELECT id, event_count FROM sessions WHERE id = ANY($1::text[])", list(session_ids)
    )
    return {row["id"]: row["event_count"] for row in rows}


async def wait_all_idle(pool: asyncpg.Pool, after: dict[str, int]) -> None:
    """Until every session has a session.status_idle after the position given for it."""
    ids, starts = list(after), [after[i] for i in after]
    deadline = time.monotonic() + TURNS_TIMEOUT
    while True:
        done = await pool.fetchval(
            """SELECT count(DISTINCT e.session_id) FROM events e
               JOIN unnest($1::text[], $2::int[]) AS s(id, pos)
                 ON e.session_id = s.id AND e.position > s.pos
               WHERE e.type = $3""",
            ids,
            starts,
            IDLE,
        )
        if done >= len(ids):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(ids) - done} sessions did not idle in {TURNS_TIMEOUT:.0f} s")
        await asyncio.sleep(0.02)


# ---- (1) events sent and listed per second -----------------------------------------------------


async def bench_send(
    stack: ApiStack,
    sdk: anthropic.AsyncAnthropic,
    session_ids: list[str],
    rounds: int,
    settle_max: float,
) -> dict[str, Any]:
    assert stack.writer is not None
    latencies: list[float] = []
    errors: list[str] = []
    rows: list[dict[str, Any]] = []
    total: dict[str, Any] = {}
    for number in range(1, rounds + 1):
        load = await settle(f"(1) send, round {number}", settle_max)
        before = await positions(stack.writer, session_ids)
        marked = await mark(stack)

        async def one(session_id: str, number: int = number) -> None:
            began = time.perf_counter()
            try:
                await sdk.beta.sessions.events.send(
                    session_id,
                    events=[
                        {
                            "type": "user.message",
                            "content": [{"type": "text", "text": f"round {number}: hello"}],
                        }
                    ],
                )
            except anthropic.APIError as error:
                errors.append(repr(error))
                return
            latencies.append(time.perf_counter() - began)

        began = time.perf_counter()
        await asyncio.gather(*(one(s) for s in session_ids))
        sent = time.perf_counter() - began
        window = await since(stack, marked)
        add_window(total, window)
        await wait_all_idle(stack.writer, before)
        turns = time.perf_counter() - began
        until_idle = await since(stack, marked)
        rows.append(
            {
                "round": number,
                "load": load,
                "sends": len(session_ids),
                "sent_s": round(sent, 3),
                "events_per_second": round(len(session_ids) / sent, 1),
                "all_turns_idle_s": round(turns, 3),
                "while_sending": window,
                "until_idle": until_idle,
            }
        )
    seconds = sum(r["sent_s"] for r in rows)
    sends = sum(r["sends"] for r in rows)
    return {
        "sessions": len(session_ids),
        "rounds": rounds,
        "sends": sends,
        "errors": len(errors),
        "error_samples": errors[:5],
        "events_per_second": round(sends / seconds, 1),
        "send_latency": summary_ms(latencies),
        "api_cpu_ms_per_send": round(total["cpu"]["api"] / sends * 1000, 2),
        "pool_acquires_per_send": round(total["server"]["pool_acquires"] / sends, 2),
        "while_sending": {"cpu": dict(total["cpu"]), "server": dict(total["server"])},
        "rounds_detail": rows,
    }


async def walk_sdk(sdk: anthropic.AsyncAnthropic, session_id: str, pages: list[float]) -> int:
    listed = 0
    began = time.perf_counter()
    page = await sdk.beta.sessions.events.list(session_id, limit=PAGE)
    pages.append(time.perf_counter() - began)
    while True:
        listed += len(page.data)
        if not page.has_next_page():
            return listed
        began = time.perf_counter()
        page = await page.get_next_page()
        pages.append(time.perf_counter() - began)


async def walk_raw(
    http: aiohttp.ClientSession, stack: ApiStack, session_id: str, pages: list[float]
) -> int:
    listed = 0
    url = f"{stack.base_url}/v1/sessions/{session_id}/events"
    params = {"limit": str(PAGE)}
    headers = {"x-api-key": stack.api_key}
    while True:
        began = time.perf_counter()
        async with http.get(url, params=params, headers=headers) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"listing {session_id}: {response.status} {body[:200]!r}")
        document = json.loads(body)
        pages.append(time.perf_counter() - began)
        listed += len(document["data"])
        if not document.get("next_page"):
            return listed
        params["page"] = document["next_page"]


async def bench_list(
    stack: ApiStack,
    sdk: anthropic.AsyncAnthropic,
    http: aiohttp.ClientSession,
    session_ids: list[str],
    per_session: int,
    passes: int,
    settle_max: float,
) -> dict[str, Any]:
    """Every session walked page by page, all sessions at once; the SDK and plain aiohttp
    alternate pass by pass, so drift on the machine hits both alike."""
    out: dict[str, Any] = {
        "sessions": len(session_ids),
        "events_per_session": per_session,
        "page_size": PAGE,
        "passes": passes,
    }
    results: dict[str, dict[str, Any]] = {
        v: {"seconds": 0.0, "events": 0, "pages": [], "window": {}, "loads": []}
        for v in ("raw", "sdk")
    }
    for number in range(passes):
        for variant in ("raw", "sdk") if number % 2 == 0 else ("sdk", "raw"):
            result = results[variant]
            result["loads"].append(
                await settle(f"(1) list, {variant}, pass {number + 1}", settle_max)
            )
            marked = await mark(stack)
            began = time.perf_counter()
            if variant == "sdk":
                counts = await asyncio.gather(
                    *(walk_sdk(sdk, s, result["pages"]) for s in session_ids)
                )
            else:
                counts = await asyncio.gather(
                    *(walk_raw(http, stack, s, result["pages"]) for s in session_ids)
                )
            result["seconds"] += time.perf_counter() - began
            result["events"] += sum(counts)
            add_window(result["window"], await since(stack, marked))
            short = [c for c in counts if c < per_session]
            if short:
                raise RuntimeError(f"listing found {short} events where {per_session} were seeded")
    for variant, result in results.items():
        cpu, server = dict(result["window"]["cpu"]), dict(result["window"]["server"])
        out[variant] = {
            "events": result["events"],
            "seconds": round(result["seconds"], 3),
            "events_per_second": round(result["events"] / result["seconds"], 0),
            "page_latency": summary_ms(result["pages"]),
            "api_cpu_ms_per_page": round(cpu["api"] / len(result["pages"]) * 1000, 2),
            "api_cpu_share": round(cpu["api"] / cpu["wall"], 2),
            "pool_acquires_per_page": round(server["pool_acquires"] / len(result["pages"]), 2),
            "cpu": cpu,
            "server": server,
            "loads": result["loads"],
        }
    out["sdk_over_raw"] = round(
        out["sdk"]["events_per_second"] / out["raw"]["events_per_second"], 2
    )
    return out


# ---- SSE streams -------------------------------------------------------------------------------


class Streams:
    """Many SSE streams read as a plain client would, each frame's arrival timed by its `id:`."""

    def __init__(self, stack: ApiStack) -> None:
        self.stack = stack
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=None),
        )
        self.readers: list[asyncio.Task[None]] = []
        self.responses: list[aiohttp.ClientResponse] = []
        self.arrivals: dict[str, list[float]] = defaultdict(list)
        self.waiters: dict[str, tuple[int, asyncio.Future[None]]] = {}
        self.frames = 0
        self.pings = 0
        self.ended = 0

    async def open(self, session_ids: Sequence[str], concurrency: int = 100) -> float:
        """One stream per id given (ids may repeat); answers the seconds it took."""
        gate = asyncio.Semaphore(concurrency)
        headers = {"x-api-key": self.stack.api_key, "accept": "text/event-stream"}

        async def one(session_id: str) -> None:
            async with gate:
                url = f"{self.stack.base_url}/v1/sessions/{session_id}/events/stream"
                response = await self.http.get(url, headers=headers)
                if response.status != 200:
                    text = await response.text()
                    response.release()
                    raise RuntimeError(f"stream of {session_id}: {response.status} {text[:200]}")
                self.responses.append(response)
                self.readers.append(asyncio.create_task(self._read(response)))

        began = time.perf_counter()
        await asyncio.gather(*(one(s) for s in session_ids))
        return time.perf_counter() - began

    async def _read(self, response: aiohttp.ClientResponse) -> None:
        with contextlib.suppress(aiohttp.ClientError, ConnectionError):
            async for line in response.content:
                if line.startswith(b"id:"):
                    self._arrived(line[3:].strip().decode(), time.perf_counter())
                elif line.startswith(b"event: ping"):
                    self.pings += 1
        self.ended += 1

    def _arrived(self, event_id: str, at: float) -> None:
        self.frames += 1
        seen = self.arrivals[event_id]
        seen.append(at)
        waiter = self.waiters.get(event_id)
        if waiter is not None and len(seen) >= waiter[0] and not waiter[1].done():
            waiter[1].set_result(None)

    def expect(self, event_id: str, count: int) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self.waiters[event_id] = (count, future)
        return future

    def take(self, event_id: str) -> list[float]:
        self.waiters.pop(event_id, None)
        return self.arrivals.pop(event_id, [])

    async def close(self) -> None:
        for response in self.responses:
            response.close()
        for reader in self.readers:
            reader.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        self.readers.clear()
        self.responses.clear()
        await self.http.close()


async def probes(
    stack: ApiStack, streams: Streams, targets: dict[str, int], count: int
) -> dict[str, Any]:
    """`count` events one at a time, round-robin over the sessions of `targets` (session id ->
    streams open on it), each awaited on every stream of its session before the next."""
    assert stack.writer is not None
    from_commit: list[float] = []
    from_stamp: list[float] = []
    first: list[float] = []  # the first of a session's streams to see the event
    missing = 0
    order = list(targets)
    for index in range(count):
        session_id = order[index % len(order)]
        expected = targets[session_id]
        event_id = new_id("sevt")
        done = streams.expect(event_id, expected)  # before the write: it may arrive at once
        # Stamped, then one transaction that commits with its NOTIFY, as activities record.
        stamped_wall = datetime.now(UTC)
        stamped = time.perf_counter()
        await event_store.append(
            stack.writer,
            session_id,
            [(event_id, PROBE_TYPE, message_payload(f"probe {index}"), stamped_wall)],
        )
        committed = time.perf_counter()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done, PROBE_TIMEOUT)
        seen = streams.take(event_id)
        missing += expected - len(seen)
        from_commit += [at - committed for at in seen]
        from_stamp += [at - stamped for at in seen]
        if seen:
            first.append(min(seen) - committed)
        await asyncio.sleep(random.uniform(0.005, 0.015))
    return {
        "probes": count,
        "deliveries": len(from_commit),
        "missing": missing,
        "from_commit": summary_ms(from_commit),
        "from_processed_at": summary_ms(from_stamp),
        "first_stream_from_commit": summary_ms(first),
    }


async def write(
    pool: asyncpg.Pool, session_id: str, event_id: str, text: str, stamp: datetime
) -> float:
    """One event appended in a transaction of its own; answers when the commit came back."""
    await event_store.append(
        pool, session_id, [(event_id, PROBE_TYPE, message_payload(text), stamp)]
    )
    return time.perf_counter()


async def bursts(
    stack: ApiStack, streams: Streams, targets: dict[str, int], count: int, settle_max: float
) -> dict[str, Any]:
    """`count` times, one event into every session of `targets` at once."""
    assert stack.writer is not None
    latencies: list[float] = []
    drains: list[float] = []
    writes: list[float] = []
    missing = 0
    total: dict[str, Any] = {}
    loads = []
    for number in range(count):
        loads.append(await settle(f"(3) burst {number + 1}", min(settle_max, 3.0)))
        marked = await mark(stack)
        ids = {s: new_id("sevt") for s in targets}
        done = [streams.expect(ids[s], n) for s, n in targets.items()]
        stamp = datetime.now(UTC)
        began = time.perf_counter()
        commits = await asyncio.gather(
            *(write(stack.writer, s, ids[s], f"burst {number}", stamp) for s in targets)
        )
        committed = dict(zip(targets, commits, strict=True))
        writes.append(time.perf_counter() - began)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*done), BURST_TIMEOUT)
        last = began
        for session_id, event_id in ids.items():
            seen = streams.take(event_id)
            missing += targets[session_id] - len(seen)
            latencies += [at - committed[session_id] for at in seen]
            last = max([last, *seen])
        drains.append(last - began)
        add_window(total, await since(stack, marked))
    frames = sum(targets.values())
    return {
        "bursts": count,
        "events_per_burst": len(targets),
        "frames_per_burst": frames,
        "missing": missing,
        "from_commit": summary_ms(latencies),
        "read_before_commit_seen": sum(1 for x in latencies if x < 0),
        "writes_ms": summary_ms(writes),
        "drain_ms": summary_ms(drains),
        "frames_per_second": round(frames / (sum(drains) / len(drains)), 0),
        "api_cpu_ms_per_frame": round(total["cpu"]["api"] / (frames * count) * 1000, 3),
        "pool_acquires_per_frame": round(total["server"]["pool_acquires"] / (frames * count), 2),
        "cpu": dict(total["cpu"]),
        "server": dict(total["server"]),
        "loads": loads,
    }


def spread(session_ids: Sequence[str], streams: int) -> tuple[list[str], dict[str, int]]:
    """Stream j on session j mod len(sessions): the ids to open, and streams per session."""
    chosen = [session_ids[j % len(session_ids)] for j in range(streams)]
    per: dict[str, int] = defaultdict(int)
    for session_id in chosen:
        per[session_id] += 1
    return chosen, dict(per)


async def nudge(stack: ApiStack, session_ids: Sequence[str]) -> int:
    """One event into each session, so that streams whose clients went away try to write and
    end (until then they stay subscribed); answers the API's subscribers half a second later."""
    assert stack.writer is not None
    stamp = datetime.now(UTC)
    await asyncio.gather(
        *(write(stack.writer, s, new_id("sevt"), "nudge", stamp) for s in session_ids)
    )
    await asyncio.sleep(0.5)
    return (await stack.api_stats())["subscribers"]


async def bench_one_stream(
    stack: ApiStack, session_id: str, count: int, settle_max: float
) -> dict[str, Any]:
    load = await settle("(2) one stream", settle_max)
    streams = Streams(stack)
    try:
        await streams.open([session_id])
        marked = await mark(stack)
        result = await probes(stack, streams, {session_id: 1}, count)
        result.update(await since(stack, marked))
    finally:
        await streams.close()
    result["api_cpu_ms_per_frame"] = round(
        result["cpu"]["api"] / max(1, result["deliveries"]) * 1000, 3
    )
    result["pool_acquires_per_frame"] = round(
        result["server"]["pool_acquires"] / max(1, result["deliveries"]), 2
    )
    result["load"] = load
    result["subscribers_after_close_and_nudge"] = await nudge(stack, [session_id])
    return result


async def bench_many_streams(
    stack: ApiStack,
    session_ids: list[str],
    streams_open: int,
    count: int,
    burst_count: int,
    settle_max: float,
    linger_wait: float,
) -> dict[str, Any]:
    out: dict[str, Any] = {"streams": streams_open, "sessions": len(session_ids)}
    out["load_before_open"] = await settle("(3) before opening streams", settle_max)
    out["rss_mb_before"] = stack.api_rss_mb()
    out["pg_connections_before"] = await stack.pg_connections()
    out["server_before"] = await stack.api_stats()
    chosen, targets = spread(session_ids, streams_open)
    out["streams_per_session"] = sorted(set(targets.values()))
    streams = Streams(stack)
    try:
        marked = await mark(stack)
        opened = await streams.open(chosen)
        out["open_seconds"] = round(opened, 2)
        out["opened_per_second"] = round(streams_open / opened, 0)
        out["opening"] = await since(stack, marked)
        out["load_open"] = await settle("(3) streams open", settle_max)
        out["rss_mb_open"] = stack.api_rss_mb()
        out["pg_connections_open"] = await stack.pg_connections()
        out["server_open"] = await stack.api_stats()
        out["rss_kb_per_stream"] = round(
            (out["rss_mb_open"] - out["rss_mb_before"]) * 1024 / streams_open, 1
        )
        marked = await mark(stack)
        await asyncio.sleep(3.0)
        out["idle_3s"] = await since(stack, marked)
        marked = await mark(stack)
        out["probes"] = await probes(stack, streams, targets, count)
        out["probes"].update(await since(stack, marked))
        deliveries = max(1, out["probes"]["deliveries"])
        out["probes"]["api_cpu_ms_per_frame"] = round(
            out["probes"]["cpu"]["api"] / deliveries * 1000, 3
        )
        out["probes"]["pool_acquires_per_frame"] = round(
            out["probes"]["server"]["pool_acquires"] / deliveries, 2
        )
        out["bursts"] = await bursts(stack, streams, targets, burst_count, settle_max)
        out["rss_mb_after_bursts"] = stack.api_rss_mb()
        out["pg_connections_after_bursts"] = await stack.pg_connections()
        out["server_after_bursts"] = await stack.api_stats()
        out["pings_seen"] = streams.pings
    finally:
        await streams.close()
    # A stream whose client went away is noticed when the server next writes to it: at the
    # next event of its session or the next keep-alive ping. Until then it stays subscribed.
    await asyncio.sleep(1.0)
    out["subscribers_1s_after_close"] = (await stack.api_stats())["subscribers"]
    if linger_wait > 0:
        await asyncio.sleep(linger_wait)
        out["subscribers_after_linger_wait"] = (await stack.api_stats())["subscribers"]
        out["linger_wait_s"] = linger_wait
    out["subscribers_after_nudge"] = await nudge(stack, list(targets))
    await asyncio.sleep(0.5)
    out["rss_mb_after_close"] = stack.api_rss_mb()
    return out


# ---- report ------------------------------------------------------------------------------------


def p50_p99(stats: dict[str, float]) -> str:
    return f"p50 {stats['median_ms']:7.2f} ms   p99 {stats['p99_ms']:7.2f} ms"


def cpu_line(cpu: dict[str, float]) -> str:
    """CPU seconds per part over a window, and the API process's share of one core."""
    wall = cpu.get("wall") or 1.0
    parts = ", ".join(f"{k} {v:.2f}" for k, v in cpu.items() if k != "wall")
    return f"CPU s in {wall:.2f} s: {parts} (API at {cpu.get('api', 0) / wall:.0%} of a core)"


def pool_line(server: dict[str, Any], per: float, unit: str) -> str:
    acquires = server["pool_acquires"]
    return (
        f"{acquires / max(1, per):.2f} per {unit}; waited for a connection "
        f"{server['pool_wait_ms_mean']:.2f} ms on average, {server['pool_wait_ms_max']:.1f} ms at most"
    )


def render(report: dict[str, Any]) -> str:
    head = header_rows(report)
    head.insert(
        2,
        (
            "processes",
            "ONE API process (`python -m bench.api_throughput serve`: start_api, keep-alive "
            f"{report['keepalive_seconds']:g} s, pool max 10); worker, model, bench client apart",
        ),
    )
    parts = [table("Reverie HTTP API throughput benchmark", head)]
    send = report.get("send")
    if send:
        rows = [
            (
                "sends",
                f"{send['sends']} ({send['sessions']} sessions x {send['rounds']} rounds), "
                f"{send['errors']} errors",
            ),
            ("events sent / second", f"{send['events_per_second']:.1f}"),
            ("send returns", p50_p99(send["send_latency"])),
            ("API CPU per send", f"{send['api_cpu_ms_per_send']:.2f} ms"),
            (
                "API pool acquisitions",
                pool_line(send["while_sending"]["server"], send["sends"], "send"),
            ),
        ]
        for r in send["rounds_detail"]:
            rows.append(
                (
                    f"  round {r['round']}",
                    f"{r['events_per_second']:.1f}/s, sent in {r['sent_s']:.2f} s, every turn "
                    f"idle after {r['all_turns_idle_s']:.2f} s; "
                    + cpu_line(r["while_sending"]["cpu"]),
                )
            )
        parts.append(table("(1a) POST /v1/sessions/{id}/events (AsyncAnthropic), at once", rows))
    listing = report.get("list")
    if listing:
        rows = []
        for variant, label in (("raw", "aiohttp+json"), ("sdk", "AsyncAnthropic")):
            v = listing[variant]
            pages = v["page_latency"]["n"]
            rows += [
                (
                    f"{label}: events / second",
                    f"{v['events_per_second']:.0f}  ({v['events']} in {v['seconds']:.2f} s)",
                ),
                (f"{label}: page", p50_p99(v["page_latency"])),
                (f"{label}: API CPU per page", f"{v['api_cpu_ms_per_page']:.2f} ms"),
                (f"{label}: API pool", pool_line(v["server"], pages, "page")),
                (f"{label}: CPU", cpu_line(v["cpu"])),
            ]
        rows.append(("SDK / raw (events per second)", f"{listing['sdk_over_raw']:.2f}x"))
        parts.append(
            table(
                f"(1b) GET /v1/sessions/{{id}}/events, pages of {listing['page_size']}, "
                f"{listing['sessions']} sessions of {listing['events_per_session']} events at once",
                rows,
            )
        )
    one = report.get("one_stream")
    if one:
        parts.append(
            table(
                f"(2) commit -> arrival on ONE SSE stream ({one['probes']} events, one at a time)",
                [
                    ("from the commit", p50_p99(one["from_commit"])),
                    ("from processed_at", p50_p99(one["from_processed_at"])),
                    ("missing", str(one["missing"])),
                    ("API CPU per frame", f"{one['api_cpu_ms_per_frame']:.3f} ms"),
                    ("API pool", pool_line(one["server"], one["deliveries"], "frame")),
                ],
            )
        )
    many = report.get("many_streams")
    if many:
        p, b = many["probes"], many["bursts"]
        conns = many["pg_connections_open"]
        per = "/".join(map(str, many["streams_per_session"]))
        rows = [
            ("streams", f"{many['streams']} on {many['sessions']} sessions ({per} per session)"),
            (
                "opened in",
                f"{many['open_seconds']:.2f} s ({many['opened_per_second']:.0f}/s); "
                + cpu_line(many["opening"]["cpu"]),
            ),
            (
                "API RSS",
                f"{many['rss_mb_before']:.1f} MB before, {many['rss_mb_open']:.1f} MB open "
                f"({many['rss_kb_per_stream']:.1f} kB per stream), "
                f"{many['rss_mb_after_bursts']:.1f} MB after the bursts, "
                f"{many['rss_mb_after_close']:.1f} MB after closing",
            ),
            (
                "PostgreSQL connections",
                f"API process {conns['api']} with the streams open "
                f"({many['pg_connections_before']['api']} before, "
                f"{many['pg_connections_after_bursts']['api']} after the bursts); "
                f"the database, all clients: {conns['all']}",
            ),
            (
                "API feed",
                f"{many['server_open']['subscribers']} subscriptions on "
                f"{many['server_open']['sessions_followed']} sessions, one LISTEN connection",
            ),
            ("idle 3 s with streams open", cpu_line(many["idle_3s"]["cpu"])),
            (
                "one at a time: from the commit",
                p50_p99(p["from_commit"])
                + f"   ({p['deliveries']} deliveries, {p['missing']} missing)",
            ),
            ("one at a time: from processed_at", p50_p99(p["from_processed_at"])),
            ("one at a time: first stream of its session", p50_p99(p["first_stream_from_commit"])),
            ("one at a time: API CPU per frame", f"{p['api_cpu_ms_per_frame']:.3f} ms"),
            ("one at a time: API pool", pool_line(p["server"], p["deliveries"], "frame")),
            (
                f"burst ({b['events_per_burst']} events -> {b['frames_per_burst']} frames)",
                p50_p99(b["from_commit"]) + f"   ({b['bursts']} bursts, {b['missing']} missing)",
            ),
            (
                "burst: last frame",
                f"p50 {b['drain_ms']['median_ms']:.0f} ms after the first write (the writes took "
                f"{b['writes_ms']['median_ms']:.0f} ms): {b['frames_per_second']:.0f} frames/s",
            ),
            ("burst: API CPU per frame", f"{b['api_cpu_ms_per_frame']:.3f} ms"),
            (
                "burst: API pool",
                pool_line(b["server"], b["frames_per_burst"] * b["bursts"], "frame"),
            ),
            ("burst: CPU", cpu_line(b["cpu"])),
        ]
        if b["read_before_commit_seen"]:
            rows.append(
                (
                    "burst: NOTE",
                    f"{b['read_before_commit_seen']} of {b['frames_per_burst'] * b['bursts']} "
                    "frames were read before the benchmark saw its own commit return (its many "
                    "writes queue in its one event loop): the commit stamps run late",
                )
            )
        rows += [
            (
                "subscriptions left after closing",
                f"{many['subscribers_1s_after_close']} 1 s after"
                + (
                    f", {many['subscribers_after_linger_wait']} "
                    f"{many['linger_wait_s'] + 1:.0f} s after"
                    if "subscribers_after_linger_wait" in many
                    else ""
                )
                + f"; {many['subscribers_after_nudge']} once each session had one more event",
            ),
        ]
        if one:
            base = one["from_commit"]["median_ms"]
            rows.append(
                (
                    "p50 over one stream's p50",
                    f"one at a time {p['from_commit']['median_ms'] / base:.2f}x, "
                    f"burst {b['from_commit']['median_ms'] / base:.2f}x",
                )
            )
        parts.append(table(f"(3) {many['streams']} SSE streams open on the one API process", rows))
    parts.append(f"total {report['total_seconds']:.1f} s")
    return "\n\n".join(parts)


# ---- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--send-sessions", type=int, help="sessions sent to at once (default 100)")
    parser.add_argument("--send-rounds", type=int, help="user.message rounds (default 3)")
    parser.add_argument("--list-sessions", type=int, help="sessions listed at once (default 10)")
    parser.add_argument("--list-events", type=int, help="events per listed session (default 2000)")
    parser.add_argument("--list-passes", type=int, help="passes per client kind (default 2)")
    parser.add_argument("--probes", type=int, help="events timed one at a time in (2), (3) (200)")
    parser.add_argument("--streams", type=int, help="streams open in (3) (default 1000)")
    parser.add_argument("--stream-sessions", type=int, help="sessions they watch (default 100)")
    parser.add_argument("--bursts", type=int, help="bursts in (3) (default 5)")
    parser.add_argument(
        "--keepalive", type=float, default=15.0, help="the API's ping interval (its default 15)"
    )
    parser.add_argument(
        "--settle-max", type=float, default=10.0, help="longest wait for a quiet machine (s)"
    )
    parser.add_argument(
        "--linger-wait",
        type=float,
        default=0.0,
        help="after closing (3)'s streams, wait this long and count subscribers again (try the "
        "keep-alive + 1: the pings end what the client left)",
    )
    parser.add_argument(
        "--phases",
        type=lambda v: [p for p in v.split(",") if p],
        default=list(PHASES),
        help=f"which to run, comma-separated (default all: {','.join(PHASES)})",
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run (about 45 s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes")
    args = parser.parse_args(argv)
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        parser.error(f"unknown phases {sorted(unknown)}; choose from {','.join(PHASES)}")
    quick = args.quick
    defaults = {
        "send_sessions": (20, 100),
        "send_rounds": (2, 3),
        "list_sessions": (4, 10),
        "list_events": (500, 2000),
        "list_passes": (1, 2),
        "probes": (50, 200),
        "streams": (100, 1000),
        "stream_sessions": (10, 100),
        "bursts": (2, 5),
    }
    for name, (small, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    began = time.perf_counter()
    report: dict[str, Any] = {
        "started_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "load_average_start": load_average(),
        "keepalive_seconds": args.keepalive,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    async with contextlib.AsyncExitStack() as exits:
        stack = ApiStack(exits, args.keepalive)
        report["dev_server_flags"] = stack.temporal_server.flags()
        print("starting the stack ...", file=sys.stderr, flush=True)
        await stack.start()
        assert stack.reverie is not None and stack.writer is not None
        report["database"] = stack.database_source
        report["startup_seconds"] = round(stack.startup_seconds, 2)
        report["rss_mb_at_start"] = stack.api_rss_mb()
        report["pg_connections_at_start"] = await stack.pg_connections()
        sdk = anthropic.AsyncAnthropic(
            base_url=stack.base_url, api_key=stack.api_key, max_retries=0
        )
        exits.push_async_callback(sdk.close)
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        exits.push_async_callback(http.close)

        phases = set(args.phases)
        print("creating sessions ...", file=sys.stderr, flush=True)
        count = max(
            args.send_sessions if "send" in phases else 0,
            args.stream_sessions if "streams" in phases else 0,
        )
        sessions = await create_sessions(stack.reverie, stack.agent_id, count, "api bench")
        probe_session = (await create_sessions(stack.reverie, stack.agent_id, 1, "probe"))[0]

        if "send" in phases:
            print("(1) sending events ...", file=sys.stderr, flush=True)
            report["send"] = await bench_send(
                stack, sdk, sessions[: args.send_sessions], args.send_rounds, args.settle_max
            )
        if "list" in phases:
            print("(1) listing events ...", file=sys.stderr, flush=True)
            listed = await create_sessions(
                stack.reverie, stack.agent_id, args.list_sessions, "listed"
            )
            await asyncio.gather(*(seed(stack.writer, s, args.list_events) for s in listed))
            report["list"] = await bench_list(
                stack, sdk, http, listed, args.list_events, args.list_passes, args.settle_max
            )
        if "stream" in phases:
            print("(2) one stream ...", file=sys.stderr, flush=True)
            report["one_stream"] = await bench_one_stream(
                stack, probe_session, args.probes, args.settle_max
            )
        if "streams" in phases:
            print(f"(3) {args.streams} streams ...", file=sys.stderr, flush=True)
            report["many_streams"] = await bench_many_streams(
                stack,
                sessions[: args.stream_sessions],
                args.streams,
                args.probes,
                args.bursts,
                args.settle_max,
                args.linger_wait,
            )
    report["load_average_end"] = load_average()
    report["total_seconds"] = round(time.perf_counter() - began, 2)
    return report


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        parser = argparse.ArgumentParser(prog="api_throughput serve")
        parser.add_argument("--keepalive", type=float, default=15.0)
        options = parser.parse_args(argv[1:])
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
        event_loop.run(serve(options.keepalive))
        return
    run_main(parse_args(argv), run, render)


if __name__ == "__main__":
    main()
