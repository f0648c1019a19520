"""Dreams over 10, 50 and 100 sessions with a fake model that takes 1 s per call.

A real stack (Temporal dev server, PostgreSQL, an in-process worker) and the tests' fake
Messages API server, answering every call after `--delay` seconds: each session's read is one
call (findings on one of three topics), each topic's consolidation one more. Measured per size:
the dream's wall time (create to completed: what parallel, bounded extraction buys; the target
is 100 sessions in under 15 s) and the model tokens per session (input + output from the dream's
`usage`, which should stay flat as the count grows: a dream costs what its new sessions hold,
not the size of anything else).

Run with `make bench` or `.venv/bin/python bench/dreams.py [--sizes 10 50 100] [--delay 1]`.
Prints a table and writes the figures to bench/results/dreams.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402

from bench.event_feed import start_database  # noqa: E402
from reverie import event_loop  # noqa: E402
from reverie.models.dreams import EXTRACT_CONCURRENCY  # noqa: E402
from reverie.settings import Settings  # noqa: E402
from reverie.starter.client import ReverieClient  # noqa: E402
from reverie.starter.stack import TemporalDevServer, free_port  # noqa: E402
from reverie.store.pool import connect  # noqa: E402
from reverie.worker import build_worker  # noqa: E402
from tests.dream_support import findings, operations, session_with, store_with  # noqa: E402
from tests.fake_model import FakeModelServer, Reply  # noqa: E402

OUT = ROOT / "bench" / "results" / "dreams.json"
TOPICS = ("testing", "deployment", "style")


def _delayed(reply: Reply, delay: float) -> Reply:
    reply.delay = delay
    return reply


async def one_dream(
    client: ReverieClient, fake: FakeModelServer, sessions: int, delay: float
) -> dict[str, Any]:
    model = f"bench-dream-{sessions}-{uuid.uuid4().hex[:6]}"
    agent = (await client.create_agent({"name": "bench", "model": model})).id
    store = await store_with(client, f"bench {sessions}", {f"/{t}/notes.md": "old" for t in TOPICS})
    ids = [
        await session_with(
            client, agent, store, f"Session {n}: we prefer {TOPICS[n % 3]} rule {n}."
        )
        for n in range(sessions)
    ]
    replies = [
        _delayed(findings((TOPICS[n % 3], f"Rule {n} about {TOPICS[n % 3]}", "we prefer")), delay)
        for n in range(sessions)
    ]
    replies += [
        _delayed(
            operations(
                {
                    "op": "update",
                    "path": f"/{topic}/notes.md",
                    "content": f"The {topic} rules, consolidated.",
                    "supporting_sessions": ids,
                }
            ),
            delay,
        )
        for topic in sorted(TOPICS)
    ]
    fake.script(model, replies)
    started = time.perf_counter()
    dream = await client.create_dream(
        {
            "inputs": [
                {"type": "memory_store", "memory_store_id": store},
                {"type": "sessions", "session_ids": ids},
            ],
            "model": model,
        }
    )
    done = await client.wait_for_dream(dream.id, timeout=600)
    wall = time.perf_counter() - started
    assert done.status == "completed", done.error
    tokens = done.usage.input_tokens + done.usage.output_tokens
    return {
        "sessions": sessions,
        "model_calls": len(fake.requests(model)),
        "wall_seconds": round(wall, 2),
        "tokens": tokens,
        "tokens_per_session": round(tokens / sessions, 1),
        "input_tokens": done.usage.input_tokens,
        "output_tokens": done.usage.output_tokens,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as exits:
        tmp = Path(tempfile.mkdtemp(prefix="reverie-bench-dreams-"))
        server = TemporalDevServer(
            db_file=None,
            port=free_port(),
            ui_port=None,
            choose_ports=True,
            log_file=tmp / "temporal.log",
        )
        exits.callback(server.stop)
        await asyncio.to_thread(server.start)
        database, source = await start_database(exits)
        fake = FakeModelServer()
        await fake.start()
        exits.push_async_callback(fake.stop)
        settings = Settings(
            TEMPORAL_ADDRESS=server.address,
            TEMPORAL_NAMESPACE="default",
            DATABASE_URL=database,
            ANTHROPIC_API_KEY="bench",
            ANTHROPIC_BASE_URL=fake.base_url,
            REVERIE_HOME=tmp / "home",
            REVERIE_TASK_QUEUE=f"bench-dreams-{uuid.uuid4().hex[:6]}",
            REVERIE_SANDBOX="none",
        )
        temporal = await Client.connect(server.address, data_converter=pydantic_data_converter)
        pool = await connect(database)
        exits.push_async_callback(pool.close)
        worker = build_worker(temporal, pool, settings)
        await exits.enter_async_context(worker)
        client = await ReverieClient.connect(settings)
        exits.push_async_callback(client.close)
        rows = [await one_dream(client, fake, n, args.delay) for n in args.sizes]
    return {
        "benchmark": "dreams",
        "model_delay_seconds": args.delay,
        "extract_concurrency": EXTRACT_CONCURRENCY,
        "topics": len(TOPICS),
        "database": source,
        "target": "100 sessions in under 15 s; tokens per session flat",
        "results": rows,
    }


def table(report: dict[str, Any]) -> str:
    head = f"{'sessions':>8}  {'calls':>5}  {'wall s':>7}  {'tokens/session':>14}"
    lines = [
        f"dreams, fake model {report['model_delay_seconds']} s per call, "
        f"{report['extract_concurrency']} sessions read at once",
        head,
    ]
    for row in report["results"]:
        lines.append(
            f"{row['sessions']:>8}  {row['model_calls']:>5}  {row['wall_seconds']:>7.2f}  "
            f"{row['tokens_per_session']:>14.1f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--delay", type=float, default=1.0, help="seconds per model call")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    report = event_loop.run(run(args))
    print(table(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
