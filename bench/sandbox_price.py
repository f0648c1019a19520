"""The price of the hardened sandbox: a bash call and a file-tool call, before and after.

"Before" is the tools as they were at a baseline commit (default: the last commit before the
sandbox was hardened, `d9e0d7f`; override with `--baseline REV`), checked out into a temporary
git worktree; "after" is this checkout. Both run the same calls in-process through
`run_builtin_tool` (no Temporal, no database), alternating round by round in one run so that the
machine's noise hits both alike; compare the ratios, not the absolute times.

  bash       `true` in the sandbox (bubblewrap start-up, identity, filesystem, seccomp)
  bash+net   `true` with `unrestricted` networking (adds the egress proxy and its bridge;
             before, the host's network was simply shared)
  read       `read` of a small file (before: the SDK's path checks; after: openat2 beneath the
             workspace, off the event loop)

Run with `make bench` or `.venv/bin/python bench/sandbox_price.py [--quick]`. Prints a table and
writes every figure to bench/results/sandbox_price.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "sandbox_price.json"
BASELINE = "d9e0d7f"
KINDS = ("bash", "bash+net", "read")

# Runs inside each tree's own interpreter path: times `rounds` calls of one kind, as JSON.
_PROBE = r"""
import asyncio, json, sys, time, tempfile
from pathlib import Path
from reverie.activities import tools

kind, rounds = sys.argv[1], int(sys.argv[2])
ws = tools.Workspace.for_session(Path(tempfile.mkdtemp()), "sesn_bench")
(ws.work_dir / "small.txt").write_text("hello\n" * 20)
net = "unrestricted" if kind == "bash+net" else "limited"
if Path("reverie/egress.py").exists():  # this tree has the egress policy
    from reverie.egress import EgressPolicy
    policy = EgressPolicy.for_networking(net, [])
else:
    policy = tools.Networking(type=net)
name, args = ("read", {"file_path": "small.txt"}) if kind == "read" else ("bash", {"command": "true"})

async def main():
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        out = await tools.run_builtin_tool(name, args, ws, policy, sandbox="bwrap")
        times.append(time.perf_counter() - start)
        assert not out.is_error, out
    print(json.dumps(times))

asyncio.run(main())
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _measure(tree: Path, kind: str, rounds: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, kind, str(rounds)],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"{kind} in {tree} failed:\n{out.stderr}")
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--baseline", default=BASELINE, help="git revision of 'before'")
    args = parser.parse_args()
    batches, per_batch = (3, 10) if args.quick else (6, 25)
    with tempfile.TemporaryDirectory(prefix="reverie-baseline-") as folder:
        before = Path(folder) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(before), args.baseline],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        try:
            times: dict[str, dict[str, list[float]]] = {
                "before": {k: [] for k in KINDS},
                "after": {k: [] for k in KINDS},
            }
            for _ in range(batches):
                for kind in KINDS:
                    times["before"][kind] += _measure(before, kind, per_batch)
                    times["after"][kind] += _measure(ROOT, kind, per_batch)
        finally:
            subprocess.run(
                ["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False
            )
    report: dict[str, Any] = {"baseline": args.baseline, "rounds": batches * per_batch}
    rows = []
    for kind in KINDS:
        entry: dict[str, float] = {}
        for side in ("before", "after"):
            for q, label in ((0.5, "p50"), (0.99, "p99")):
                entry[f"{side}_{label}_ms"] = percentile(times[side][kind], q) * 1000
        entry["p50_ratio"] = entry["after_p50_ms"] / entry["before_p50_ms"]
        report[kind] = entry
        rows.append(
            f"{kind:<9} {entry['before_p50_ms']:>8.1f} {entry['before_p99_ms']:>8.1f} "
            f"{entry['after_p50_ms']:>8.1f} {entry['after_p99_ms']:>8.1f} "
            f"{entry['p50_ratio']:>7.2f}x"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"sandbox price ({report['rounds']} calls per kind and side; baseline {args.baseline})")
    print(f"{'call':<9} {'before':>8} {'p99':>8} {'after':>8} {'p99':>8} {'p50 x':>8}")
    print(f"{'':<9} {'p50 ms':>8} {'ms':>8} {'p50 ms':>8} {'ms':>8}")
    print("\n".join(rows))
    print(f"written to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
