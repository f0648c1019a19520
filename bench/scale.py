"""Scale: sessions per second and turn latency with 1, 2 and 4 worker processes (issue 21).

Starts a headless Temporal dev server (the embedded stack's flags), PostgreSQL (embedded, or a
fresh database in DATABASE_URL's server) and the simulated model (answers at once, so every
millisecond is Reverie's, Temporal's, PostgreSQL's or the machine's). For each worker count W
it starts W `python -m reverie.worker` processes on a task queue of their own, then creates N
sessions at once, each running T turns (message -> answer) back to back, and measures:

- sessions/s: N / the wall time from the first creation to the last session's last answer;
- turn latency: message sent -> session idle with the answer, p50/p95/p99 over all turns;
- CPU seconds per turn spent in the workers, in Temporal and in PostgreSQL (psutil), the figures
  the projection in deploy/README.md scales from; and Temporal history events per turn.

All of it shares this machine's cores: with more worker processes than cores, the figures show
the contention, not a cluster's scaling (the per-turn CPU is what carries over).

    .venv/bin/python bench/scale.py             # 1, 2, 4 workers x 100 sessions x 2 turns
    .venv/bin/python bench/scale.py --quick     # 1, 2 workers x 20 sessions x 1 turn
    .venv/bin/python bench/scale.py --workers 1,2,4 --sessions 200 --turns 3 --out /tmp/s.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import psutil  # noqa: E402

from reverie import event_loop  # noqa: E402
from reverie.settings import Settings  # noqa: E402
from reverie.simulated_model import SimulatedModelServer  # noqa: E402
from reverie.starter.client import ReverieClient  # noqa: E402
from reverie.starter.stack import EmbeddedPostgres, TemporalDevServer, free_port  # noqa: E402
from tests.helpers import stop as stop_process  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            total += times.user + times.system
            for child in process.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    child_times = child.cpu_times()
                    total += child_times.user + child_times.system
    return total


async def start_workers(settings: Settings, count: int, logs: Path) -> list[Any]:
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": settings.temporal_address or "",
        "DATABASE_URL": settings.database_url or "",
        "ANTHROPIC_API_KEY": "bench",
        "ANTHROPIC_BASE_URL": settings.anthropic_base_url or "",
        "REVERIE_TASK_QUEUE": settings.task_queue,
        "REVERIE_SANDBOX": "none",
    }
    processes = []
    for n in range(count):
        home = logs / f"home-{settings.task_queue}-{n}"
        log = logs / f"worker-{settings.task_queue}-{n}.log"
        with log.open("wb") as out:
            processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "reverie.worker",
                    env={**env, "REVERIE_HOME": str(home)},
                    stdout=out,
                    stderr=out,
                )
            )
    deadline = time.monotonic() + 60
    for n in range(count):
        log = logs / f"worker-{settings.task_queue}-{n}.log"
        while "worker on task queue" not in log.read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker {n} did not start: {log.read_text()[-2000:]}")
            await asyncio.sleep(0.1)
    return processes


async def one_session(client: ReverieClient, agent_id: str, turns: int) -> list[float]:
    session = await client.create_session({"agent": agent_id})
    latencies = []
    for turn in range(turns):
        started = time.perf_counter()
        await client.send_message(session.id, f"turn {turn}: hello")
        done = await client.wait_until_settled(session.id, timeout=300)
        if done.status != "idle":
            raise RuntimeError(f"{session.id} ended {done.status}")
        latencies.append(time.perf_counter() - started)
    return latencies


async def run_phase(
    base: Settings, workers: int, sessions: int, turns: int, logs: Path, others: list[Any]
) -> dict[str, Any]:
    settings = base.model_copy(update={"task_queue": f"scale-{workers}-{uuid.uuid4().hex[:4]}"})
    processes = await start_workers(settings, workers, logs)
    client = await ReverieClient.connect(settings)
    try:
        agent = await client.create_agent({"name": "scale", "model": "claude-sonnet-4-5"})
        # One session first: the workers' first workflow tasks warm their caches.
        await one_session(client, agent.id, 1)
        worker_procs = [psutil.Process(p.pid) for p in processes]
        before = (cpu_seconds(worker_procs), cpu_seconds(others[:1]), cpu_seconds(others[1:]))
        started = time.perf_counter()
        results = await asyncio.gather(
            *(one_session(client, agent.id, turns) for _ in range(sessions))
        )
        wall = time.perf_counter() - started
        after = (cpu_seconds(worker_procs), cpu_seconds(others[:1]), cpu_seconds(others[1:]))
        latencies = [x for r in results for x in r]
        done_turns = len(latencies)
        sample = await client.list_sessions(limit=1)
        history = await client.temporal.get_workflow_handle(sample.data[0].id).fetch_history()
        return {
            "workers": workers,
            "sessions": sessions,
            "turns_per_session": turns,
            "wall_seconds": round(wall, 3),
            "sessions_per_second": round(sessions / wall, 2),
            "turns_per_second": round(done_turns / wall, 2),
            "turn_latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
            "turn_latency_p95_ms": round(percentile(latencies, 0.95) * 1000, 1),
            "turn_latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
            "worker_cpu_ms_per_turn": round((after[0] - before[0]) / done_turns * 1000, 2),
            "temporal_cpu_ms_per_turn": round((after[1] - before[1]) / done_turns * 1000, 2),
            "postgres_cpu_ms_per_turn": round((after[2] - before[2]) / done_turns * 1000, 2),
            "history_events_per_turn_sample": round(len(history.events) / max(1, turns), 1),
        }
    finally:
        await client.close()
        await asyncio.gather(*(stop_process(p) for p in processes))


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'workers':>7} {'sess/s':>7} {'turns/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
        f" {'wkr CPU ms/turn':>16} {'tmprl ms/turn':>14} {'pg ms/turn':>11}"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['workers']:>7} {r['sessions_per_second']:>7} {r['turns_per_second']:>8}"
            f" {r['turn_latency_p50_ms']:>8} {r['turn_latency_p95_ms']:>8}"
            f" {r['turn_latency_p99_ms']:>8} {r['worker_cpu_ms_per_turn']:>16}"
            f" {r['temporal_cpu_ms_per_turn']:>14} {r['postgres_cpu_ms_per_turn']:>11}"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--turns", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args()
    if args.quick:
        args.workers, args.sessions, args.turns = "1,2", 20, 1
    counts = [int(w) for w in args.workers.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="reverie-scale-"))
    async with contextlib.AsyncExitStack() as exits:
        exits.callback(shutil.rmtree, tmp, True)
        server = TemporalDevServer(
            db_file=None, port=free_port(), ui_port=None, log_file=tmp / "t.log", choose_ports=True
        )
        exits.callback(server.stop)
        await asyncio.to_thread(server.start)
        url = os.environ.get("DATABASE_URL")
        postgres = None
        if not url:
            postgres = EmbeddedPostgres(tmp / "pg")
            exits.callback(postgres.stop)
            url = await asyncio.to_thread(postgres.start)
        name = f"reverie_scale_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(url)
        await admin.execute(f'CREATE DATABASE "{name}"')
        await admin.close()
        head, _, query = url.partition("?")
        database = head.rsplit("/", 1)[0] + "/" + name + (f"?{query}" if query else "")
        model = SimulatedModelServer()
        await model.start()
        exits.push_async_callback(model.stop)
        base = Settings(
            TEMPORAL_ADDRESS=server.address,
            DATABASE_URL=database,
            ANTHROPIC_API_KEY="bench",
            ANTHROPIC_BASE_URL=model.base_url,
            REVERIE_HOME=tmp / "home",
        )
        others = [psutil.Process(server.process.pid)]  # type: ignore[union-attr]
        if postgres is not None and postgres.process is not None:
            others.append(psutil.Process(postgres.process.pid))
        rows = []
        for count in counts:
            row = await run_phase(base, count, args.sessions, args.turns, tmp, others)
            rows.append(row)
            print(table([row]).splitlines()[-1] if len(rows) > 1 else table([row]), flush=True)
    report = {
        "when": datetime.now(UTC).isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "model": "simulated (answers at once)",
        "database": "DATABASE_URL" if os.environ.get("DATABASE_URL") else "embedded pgserver",
        "temporal_flags": server.flags(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    event_loop.run(main())
