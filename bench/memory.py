"""Memory stores at the hosted API's size limit: 10,000 memories (about 20 MB) in one store.

Needs only PostgreSQL (an embedded one in a temp dir, or a fresh database in DATABASE_URL's
server, dropped afterwards) and a temp folder for session workspaces: the service client's
memory methods and the session mount code (`activities/memory.py`) are called directly, as the
API and the tool activity call them.

Measured:
- create: each of the 10,000 creates that fill the store (100 folders of 100 memories of
  ~2 KB), one at a time;
- read: `get_memory` (full view) of random memories; `get_memory_by_path`;
- write: `update_memory` of random memories with a `content_sha256` precondition;
- list: a page of 100 (basic view) at a random point of the store, the first page of the
  depth-1 roll-up (100 folders), a folder's 100 memories with their content (full view, 20 a
  page, 5 pages);
- mount: materialising the whole store into a fresh session workspace (every memory fetched,
  written as a file, the mount's 10,000 bases recorded), several times;
- sync of one changed file: after `write`/`edit` (the write-back looks at that one file), and
  after `bash`, two ways in the same run: a whole scan (the write-back walks the mount and reads
  only files whose stat signature changed: how every such sync ran before the watches) and
  watched (the mount's inotify watch names what changed, `activities/memory_watch.py`); a
  `bash` write-back with nothing changed, both ways; a pull of one memory changed through the
  API (before the next tool run).

Run with `make bench` or `.venv/bin/python bench/memory.py [--quick] [--memories N]`. Prints a
table and writes every figure to bench/results/memory.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Running as `python bench/memory.py` puts bench/ first on sys.path, not the repo root.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.event_feed import start_database  # noqa: E402
from reverie import event_loop  # noqa: E402
from reverie.activities.memory import SessionMemory  # noqa: E402
from reverie.models.memory import MemoryStoreResource  # noqa: E402
from reverie.service.memory import MemoryMethods  # noqa: E402
from reverie.settings import Settings  # noqa: E402
from reverie.store.pool import Pool, connect  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "memory.json"
FOLDERS = 100
LINE = "A remembered fact about the project, kept for the next session to read. "


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summary(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3) if ms else math.nan,
    }


class Memories(MemoryMethods):
    """The service client's memory methods on a bare pool (no Temporal needed)."""

    def __init__(self, pool: Pool, settings: Settings) -> None:
        self.pool = pool
        self.settings = settings


def content_for(index: int) -> str:
    text = f"# note {index}\n" + LINE * 28  # ~2 KB
    return text[:2000] + f"\n{index}\n"


async def timed(call: Callable[[], Awaitable[Any]]) -> float:
    started = time.perf_counter()
    await call()
    return time.perf_counter() - started


async def run(args: argparse.Namespace) -> dict[str, Any]:
    async with contextlib.AsyncExitStack() as exits:
        url, source = await start_database(exits)
        pool = await connect(url, max_size=10)
        exits.push_async_callback(pool.close)
        tmp = Path(tempfile.mkdtemp(prefix="reverie-bench-memory-"))
        exits.callback(shutil.rmtree, tmp, True)
        settings = Settings(
            DATABASE_URL=url, REVERIE_HOME=tmp / "home", REVERIE_WORKSPACE_ROOT=tmp / "ws"
        )
        client = Memories(pool, settings)
        rng = random.Random(17)
        n = args.memories
        store = await client.create_memory_store({"name": "bench", "description": "10k notes"})
        paths = [f"/topic-{i % FOLDERS:02}/note-{i:05}.md" for i in range(n)]
        creates: list[float] = []
        filled = time.perf_counter()
        for index, path in enumerate(paths):
            body = {"path": path, "content": content_for(index)}
            creates.append(await timed(lambda b=body: client.create_memory(store.id, b)))
        fill_seconds = time.perf_counter() - filled
        size = await pool.fetchval(
            "SELECT sum(content_size_bytes) FROM memories WHERE memory_store_id = $1", store.id
        )
        ids = [
            r["id"]
            for r in await pool.fetch(
                "SELECT id FROM memories WHERE memory_store_id = $1", store.id
            )
        ]

        reads, by_path = [], []
        for _ in range(args.samples):
            memory_id, path = rng.choice(ids), rng.choice(paths)
            reads.append(await timed(lambda m=memory_id: client.get_memory(store.id, m)))
            by_path.append(await timed(lambda p=path: client.get_memory_by_path(store.id, p)))

        async def update(memory_id: str) -> None:
            current = await client.get_memory(store.id, memory_id, view="basic")
            await client.update_memory(
                store.id,
                memory_id,
                {
                    "content": content_for(rng.randrange(10**6)),
                    "precondition": {
                        "type": "content_sha256",
                        "content_sha256": current.content_sha256,
                    },
                },
            )

        writes = []
        for _ in range(args.samples):
            memory_id = rng.choice(ids)
            current = await client.get_memory(store.id, memory_id, view="basic")
            body = {
                "content": content_for(rng.randrange(10**6)),
                "precondition": {
                    "type": "content_sha256",
                    "content_sha256": current.content_sha256,
                },
            }
            writes.append(
                await timed(lambda m=memory_id, b=body: client.update_memory(store.id, m, b))
            )

        pages = []
        for _ in range(args.samples // 5):
            start = rng.randrange(FOLDERS)
            first = await client.list_memories(store.id, path_prefix=f"/topic-{start:02}/", limit=1)
            cursor = first.next_page
            pages.append(
                await timed(lambda c=cursor: client.list_memories(store.id, limit=100, page=c))
            )
        rollups = [
            await timed(lambda: client.list_memories(store.id, depth=1, limit=100))
            for _ in range(args.samples // 10)
        ]

        async def folder_full() -> None:
            page = None
            prefix = f"/topic-{rng.randrange(FOLDERS):02}/"
            while True:
                listed = await client.list_memories(
                    store.id, path_prefix=prefix, view="full", limit=20, page=page
                )
                if not listed.next_page:
                    return
                page = listed.next_page

        full_folders = [await timed(folder_full) for _ in range(args.samples // 20)]

        # ---- mounts --------------------------------------------------------------------------
        resource = MemoryStoreResource(
            memory_store_id=store.id, name="bench", mount_path="/mnt/memory/bench"
        )

        def session() -> SessionMemory:
            return SessionMemory(pool, settings, f"sesn_bench{uuid.uuid4().hex}", [resource])

        mounts = []
        sessions = []
        for _ in range(args.mounts):
            mounted = session()
            mounts.append(await timed(mounted.prepare))
            sessions.append(mounted)
        files = sum(1 for p in mounted.host_dir(resource).rglob("*") if p.is_file())

        # Before (a scan of the whole mount, stat signatures against the cache) and after (the
        # mount's inotify watch names what changed), in the same run, on two mounts of the
        # store: `scanned` never uses its watch.
        scanned = SessionMemory(pool, settings, sessions[-2].session_id, [resource], watch=False)
        scanned_folder = scanned.host_dir(resource)
        folder = mounted.host_dir(resource)
        for each in (mounted, scanned):
            await each.write_back({store.id: None})  # settles the signatures of the newest files
        await asyncio.sleep(0.3)
        targeted, whole, idle_scans, pulls = [], [], [], []
        watched, idle_watched = [], []
        for round_ in range(args.syncs):
            rel = paths[rng.randrange(n)][1:]
            (folder / rel).write_text(f"edited by the file tools, round {round_}\n")
            targeted.append(await timed(lambda r=rel: mounted.write_back({store.id: [r]})))
            rel = paths[rng.randrange(n)][1:]
            (scanned_folder / rel).write_text(f"edited by bash, round {round_}\n")
            whole.append(await timed(lambda: scanned.write_back({store.id: None})))
            rel = paths[rng.randrange(n)][1:]
            (folder / rel).write_text(f"edited by bash, round {round_}\n")
            watched.append(await timed(lambda: mounted.write_back({store.id: None})))
            await asyncio.sleep(0.25)  # past the racy window, as between two tool calls
            idle_scans.append(await timed(lambda: scanned.write_back({store.id: None})))
            idle_watched.append(await timed(lambda: mounted.write_back({store.id: None})))
            await update(rng.choice(ids))
            pulls.append(await timed(mounted.prepare))
        for each, expected in ((mounted, 2 * args.syncs), (scanned, args.syncs)):
            versions = await pool.fetchval(
                "SELECT count(*) FROM memory_versions WHERE session_id = $1", each.session_id
            )
            if versions != expected:
                raise RuntimeError(f"expected {expected} versions from the syncs, got {versions}")

        return {
            "started_at": datetime.now(UTC).isoformat(),
            "mode": "quick" if args.quick else "full",
            "machine": {
                "cpu_count": os.cpu_count(),
                "platform": platform.platform(),
                "python": platform.python_version(),
            },
            "database": source,
            "store": {
                "memories": n,
                "content_bytes": int(size),
                "fill_seconds": round(fill_seconds, 2),
            },
            "create": summary(creates),
            "read_by_id_full": summary(reads),
            "read_by_path_full": summary(by_path),
            "update_with_precondition": summary(writes),
            "list_page_100_basic": summary(pages),
            "list_depth_1_rollup": summary(rollups),
            "list_folder_of_100_full_5_pages": summary(full_folders),
            "mount_whole_store": summary(mounts),
            "mounted_files": files,
            "sync_one_file_after_write_or_edit": summary(targeted),
            "sync_one_file_after_bash_whole_mount": summary(whole),
            "sync_nothing_changed_after_bash": summary(idle_scans),
            "sync_one_file_after_bash_watched": summary(watched),
            "sync_nothing_changed_after_bash_watched": summary(idle_watched),
            "pull_one_remote_change": summary(pulls),
        }


def render(report: dict[str, Any]) -> str:
    store = report["store"]
    title = (
        f"Memory store of {store['memories']:,} memories ({store['content_bytes'] / 1e6:.1f} MB), "
        f"{report['machine']['cpu_count']} cores, {report['database']}"
    )
    rows = [
        ("create (filling the store)", "create"),
        ("read by id (full view)", "read_by_id_full"),
        ("read by path (full view)", "read_by_path_full"),
        ("update with precondition", "update_with_precondition"),
        ("list a page of 100 (basic)", "list_page_100_basic"),
        ("list depth=1 roll-up (100 folders)", "list_depth_1_rollup"),
        ("list a folder of 100 (full, 5 pages)", "list_folder_of_100_full_5_pages"),
        ("mount the whole store in a session", "mount_whole_store"),
        ("sync 1 changed file after write/edit", "sync_one_file_after_write_or_edit"),
        ("sync 1 file after bash: whole scan (before)", "sync_one_file_after_bash_whole_mount"),
        ("sync after bash, nothing: whole scan (before)", "sync_nothing_changed_after_bash"),
        ("sync 1 file after bash: watched (after)", "sync_one_file_after_bash_watched"),
        ("sync after bash, nothing: watched (after)", "sync_nothing_changed_after_bash_watched"),
        ("pull 1 change made through the API", "pull_one_remote_change"),
    ]
    width = max(len(label) for label, _ in rows)
    lines = [title, "-" * len(title), f"  {'':{width}}  {'n':>6}  {'p50 ms':>10}  {'p99 ms':>10}"]
    for label, key in rows:
        s = report[key]
        lines.append(f"  {label:{width}}  {s['n']:>6}  {s['p50_ms']:>10.2f}  {s['p99_ms']:>10.2f}")
    lines.append(
        f"  filled in {store['fill_seconds']} s; {report['mounted_files']:,} files mounted"
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 memories, fewer samples")
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.quick:
        args.memories = min(args.memories, 1_000)
    args.samples = 200 if args.quick else 1_000
    args.mounts = 2 if args.quick else 5
    args.syncs = 10 if args.quick else 30
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = event_loop.run(run(args))
    print(render(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
