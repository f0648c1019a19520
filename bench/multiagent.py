"""What fanning out to subagent threads buys (issue 18), and where it bends.

Starts the stack of bench/session_overhead.py (its `Bench`: a headless Temporal dev server, an
embedded PostgreSQL unless DATABASE_URL is set, one in-process worker) with a scripted model
(tests.fake_model.FakeModelServer). A coordinator has one roster agent, `worker`, whose every
answer takes `--answer-seconds` (1 s) at the model. Measured, from the message that starts the
coordinator's turn until the session is idle again:

  fan-out     the coordinator starts N threads in one answer, then waits for all of them;
  sequential  the same N tasks one after another (start one thread, wait for it, start the next);
  many        M threads (200) in rounds of at most 25 running at once (the limit): start 25,
              wait, start the next 25, ...

The ideal of fan-out is one answer's time; of sequential N of them; of many ceil(M/25). The
table shows wall times, the speed-up of fan-out over sequential, and the overhead per thread
above the ideal. Run with `make bench` or `.venv/bin/python bench/multiagent.py [--quick]`;
writes bench/results/multiagent.json.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.session_overhead import Bench, header_rows, machine, run_main, table  # noqa: E402
from reverie.models.threads import MAX_RUNNING_THREADS  # noqa: E402
from reverie.starter.client import ReverieClient  # noqa: E402
from tests.fake_model import FakeModelServer, Reply  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "multiagent.json"
LEAD = "fake-multiagent-lead"
WORKER = "fake-multiagent-worker"


def start(n: int) -> tuple[str, dict[str, Any]]:
    return ("start_thread", {"agent": "worker", "task": f"inspect build {n}"})


def fan_out_script(threads: int) -> list[Reply]:
    return [
        Reply.tool_uses([start(n) for n in range(threads)]),
        Reply.tool_use("wait_for_threads", {}),
        Reply.text("all in"),
    ]


def sequential_script(threads: int) -> list[Reply]:
    script: list[Reply] = []
    for n in range(threads):
        script += [Reply.tool_use(*start(n)), Reply.tool_use("wait_for_threads", {})]
    return [*script, Reply.text("all in")]


def rounds_script(threads: int) -> list[Reply]:
    script: list[Reply] = []
    for first in range(0, threads, MAX_RUNNING_THREADS):
        batch = range(first, min(first + MAX_RUNNING_THREADS, threads))
        script += [
            Reply.tool_uses([start(n) for n in batch]),
            Reply.tool_use("wait_for_threads", {}),
        ]
    return [*script, Reply.text("all in")]


async def one_run(
    reverie: ReverieClient,
    fake: FakeModelServer,
    lead_id: str,
    script: list[Reply],
    threads: int,
    answer_seconds: float,
) -> dict[str, Any]:
    fake.script(LEAD, script)
    fake.script(WORKER, [Reply.text("a finding", delay=answer_seconds)] * threads)
    session = await reverie.create_session({"agent": lead_id})
    started = time.perf_counter()
    await reverie.send_message(session.id, "go")
    await reverie.wait_until_settled(session.id, timeout=3600)
    wall = time.perf_counter() - started
    events = await reverie.list_events(session.id, limit=10_000)
    replies = sum(e.type == "agent.thread_message_received" for e in events)
    if replies != threads or fake.remaining(LEAD) or fake.remaining(WORKER):
        raise RuntimeError(f"{replies} replies of {threads}; the script was not used up")
    return {"threads": threads, "wall_seconds": round(wall, 3)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    began = time.perf_counter()
    report: dict[str, Any] = {
        "started_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "answer_seconds": args.answer_seconds,
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }
    threads = 5 if args.quick else args.threads
    many = 50 if args.quick else args.many
    async with contextlib.AsyncExitStack() as exits:
        bench = Bench(exits)
        fake = FakeModelServer()
        bench.sim = fake
        report["dev_server_flags"] = bench.temporal_server.flags()
        await bench.start()
        report["database"] = bench.database_source
        report["startup_seconds"] = round(bench.startup_seconds, 2)
        reverie = bench.reverie
        assert reverie is not None
        worker = await reverie.create_agent({"name": "worker", "model": WORKER})
        lead = await reverie.create_agent(
            {
                "name": "lead",
                "model": LEAD,
                "multiagent": {"type": "coordinator", "agents": [worker.id]},
            }
        )
        seconds = args.answer_seconds
        print(f"fan-out to {threads} threads ...", file=sys.stderr, flush=True)
        report["fan_out"] = await one_run(
            reverie, fake, lead.id, fan_out_script(threads), threads, seconds
        )
        report["fan_out"]["ideal_seconds"] = seconds
        print(f"the same {threads} tasks one after another ...", file=sys.stderr, flush=True)
        report["sequential"] = await one_run(
            reverie, fake, lead.id, sequential_script(threads), threads, seconds
        )
        report["sequential"]["ideal_seconds"] = threads * seconds
        print(f"{many} threads, {MAX_RUNNING_THREADS} at a time ...", file=sys.stderr, flush=True)
        report["many"] = await one_run(reverie, fake, lead.id, rounds_script(many), many, seconds)
        report["many"]["ideal_seconds"] = math.ceil(many / MAX_RUNNING_THREADS) * seconds
    for key in ("fan_out", "sequential", "many"):
        part = report[key]
        part["overhead_per_thread_ms"] = round(
            1000 * (part["wall_seconds"] - part["ideal_seconds"]) / part["threads"], 1
        )
    report["speedup"] = round(
        report["sequential"]["wall_seconds"] / report["fan_out"]["wall_seconds"], 2
    )
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    report["total_seconds"] = round(time.perf_counter() - began, 2)
    return report


def render(report: dict[str, Any]) -> str:
    rows = header_rows(report)
    rows.append(("model answer", f"{report['answer_seconds']} s per subagent answer"))
    for key, label in (
        ("fan_out", "fan-out"),
        ("sequential", "sequential"),
        ("many", f"many ({MAX_RUNNING_THREADS} at a time)"),
    ):
        part = report[key]
        rows.append(
            (
                f"{label}, {part['threads']} threads",
                f"{part['wall_seconds']:8.2f} s wall (ideal {part['ideal_seconds']:.0f} s), "
                f"{part['overhead_per_thread_ms']:7.1f} ms over the ideal per thread",
            )
        )
    rows.append(("fan-out speed-up over sequential", f"{report['speedup']}x"))
    return table("Multi-agent threads (bench/multiagent.py)", rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 and 50 threads")
    parser.add_argument("--threads", type=int, default=20, help="fan-out and sequential")
    parser.add_argument("--many", type=int, default=200, help="threads in rounds of 25")
    parser.add_argument("--answer-seconds", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    run_main(parse_args(argv), run, render)


if __name__ == "__main__":
    main()
