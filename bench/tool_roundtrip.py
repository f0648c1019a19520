"""What one trivial built-in tool call costs inside a Reverie session.

Starts the same stack as bench/session_overhead.py (its `Bench`: a headless Temporal dev server,
an embedded PostgreSQL unless DATABASE_URL is set, one in-process worker), with a scripted model
(tests.fake_model.FakeModelServer) that answers at once, and an agent with the built-in toolset.
Turns of three kinds are interleaved, round by round:

  plain  the model answers with text;
  read   the model asks for one `read` of a small file in the workspace, then answers;
  bash   the model asks for one `bash` `true` (the sandbox's start-up cost), then answers.

Measured per tool call: the time from the `agent.tool_use` event's `processed_at` to the
matching `agent.tool_result` event's, and the extra wall time of a tool turn over the plain
turn of the same round (send_message until the turn's `session.status_idle` is seen). The same
tools are also called directly in-process, as the floor.

Run with `make bench` (after session_overhead) or `.venv/bin/python bench/tool_roundtrip.py
[--quick]`. Prints a table and writes every figure to bench/results/tool_roundtrip.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

# Running as `python bench/tool_roundtrip.py` puts bench/ first on sys.path, not the repo root.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.session_overhead import (  # noqa: E402
    IDLE,
    POLL_SECONDS,
    Bench,
    header_rows,
    machine,
    percentile,
    run_main,
    summary_ms,
    table,
    turn_events,
    wait_for_idle,
)
from reverie.activities.tools import (  # noqa: E402
    SandboxUnavailableError,
    Workspace,
    bwrap_unavailable_reason,
    detect_sandbox,
    run_builtin_tool,
)
from reverie.egress import EgressPolicy  # noqa: E402
from reverie.starter.client import ReverieClient  # noqa: E402
from tests.fake_model import FakeModelServer, Reply  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "tool_roundtrip.json"
MODEL = "fake-tool-bench"
SYSTEM_PROMPT = "You are a terse assistant used for benchmarking. Use the tools you are asked to."
TOOLSET = {"type": "agent_toolset_20260401", "configs": [{"name": "web_search", "enabled": False}]}
NOTE = "note.txt"  # in the session's working folder, which the agent sees as /workspace
NOTE_TEXT = "".join(f"line {i}: a small file for the benchmark to read\n" for i in range(1, 21))
KINDS = ("plain", "read", "bash")
TOOL_KINDS = ("read", "bash")
CALLS = {"read": ("read", {"file_path": NOTE}), "bash": ("bash", {"command": "true"})}
# Where a tool turn's time goes, from its events' `processed_at` (and the client's clock).
SPLIT_KEYS = (
    "send -> tool_use recorded (1st model step)",
    "tool_use -> tool_result (the round trip)",
    "tool_result -> 2nd model request start",
    "2nd model request start -> idle decided",
    "idle decided -> seen by client",
)


def script_for(kind: str) -> list[Reply]:
    if kind == "plain":
        return [Reply.text("Nothing to do.")]
    name, tool_input = CALLS[kind]
    return [Reply.tool_use(name, tool_input), Reply.text(f"Ran {name}.")]


def pick_sandbox() -> tuple[str, str]:
    """What `detect_sandbox(None)` gives here (the worker picks the same); where bubblewrap
    cannot run, REVERIE_SANDBOX=none is set for this process so bash still runs (unsandboxed)."""
    try:
        return detect_sandbox(None), "bubblewrap"
    except SandboxUnavailableError:
        os.environ["REVERIE_SANDBOX"] = "none"
        return "none", f"UNSANDBOXED: bubblewrap unavailable ({bwrap_unavailable_reason()})"


# ---- one turn --------------------------------------------------------------------------------


def stamp(event: Any) -> float:
    return event.processed_at.timestamp()


def tool_turn_figures(
    found: list[Any], name: str, sent_at: float, seen_at: float
) -> tuple[float, dict[str, float]]:
    """(tool_use -> tool_result seconds, the turn's split) from one tool turn's events."""
    uses = [e for e in found if e.type == "agent.tool_use"]
    results = [e for e in found if e.type == "agent.tool_result"]
    if len(uses) != 1 or len(results) != 1 or uses[0].payload["name"] != name:
        raise RuntimeError(f"expected one {name} tool use and one result, got {found!r}")
    use, result = uses[0], results[0]
    if result.payload["tool_use_id"] != use.id:
        raise RuntimeError(f"tool result {result.id} does not answer {use.id}")
    if result.payload["is_error"]:
        raise RuntimeError(f"{name} failed: {result.payload['content']!r}")
    after = found[found.index(result) :]
    second = next(e for e in after if e.type == "span.model_request_start")
    idle = next(e for e in reversed(found) if e.type == IDLE)
    split = dict(
        zip(
            SPLIT_KEYS,
            (
                stamp(use) - sent_at,
                stamp(result) - stamp(use),
                stamp(second) - stamp(result),
                stamp(idle) - stamp(second),
                seen_at - stamp(idle),
            ),
            strict=True,
        )
    )
    return stamp(result) - stamp(use), split


async def one_turn(
    reverie: ReverieClient, fake: FakeModelServer, session_id: str, position: int, kind: str
) -> tuple[int, dict[str, Any]]:
    """Script the model for one turn of `kind`, send a message, wait for idle; (new position,
    the turn's figures)."""
    fake.script(MODEL, script_for(kind))
    sent_at = time.time()
    started = time.perf_counter()
    await reverie.send_message(session_id, f"{kind} turn")
    accepted = time.perf_counter() - started
    idle_at = await wait_for_idle(reverie.pool, session_id, position)
    elapsed = time.perf_counter() - started
    seen_at = time.time()
    if fake.remaining(MODEL):
        raise RuntimeError(f"the {kind} turn left {fake.remaining(MODEL)} scripted replies")
    row: dict[str, Any] = {"kind": kind, "wall_s": elapsed, "send_s": accepted}
    if kind in TOOL_KINDS:
        found = await turn_events(reverie.pool, session_id, position, idle_at)
        row["tool_s"], row["split"] = tool_turn_figures(found, CALLS[kind][0], sent_at, seen_at)
    return idle_at, row


# ---- the tools called directly (the floor) ---------------------------------------------------


class DirectTools:
    """The same tool calls without Temporal or the database: `run_builtin_tool` in-process, on a
    workspace of its own, as the tool activity would call it (same sandbox, same hidden paths)."""

    def __init__(self, reverie: ReverieClient, sandbox: str) -> None:
        settings = reverie.settings
        hidden = [path for path in (settings.home, Path.home()) if path.is_dir()]
        self.workspace = Workspace.for_session(settings.workspaces, "bench-direct", hidden=hidden)
        (self.workspace.work_dir / NOTE).write_text(NOTE_TEXT)
        self.networking = EgressPolicy.for_networking("limited", [])
        self.sandbox = sandbox

    async def call(self, kind: str) -> float:
        name, tool_input = CALLS[kind]
        started = time.perf_counter()
        outcome = await run_builtin_tool(
            name, tool_input, self.workspace, self.networking, sandbox=self.sandbox
        )
        elapsed = time.perf_counter() - started
        if outcome.is_error:
            raise RuntimeError(f"direct {name} failed: {outcome.content!r}")
        return elapsed


# ---- the benchmark ---------------------------------------------------------------------------


async def new_session(reverie: ReverieClient, agent_id: str, index: int) -> str:
    session = await reverie.create_session({"agent": agent_id, "title": f"tool bench {index}"})
    # Created directly rather than by a `write` tool use, so every timed turn is alike.
    work = reverie.settings.workspaces / session.id / "work"
    work.mkdir(parents=True, exist_ok=True)
    (work / NOTE).write_text(NOTE_TEXT)
    return session.id


def p50_p99(seconds: list[float]) -> dict[str, float]:
    full = summary_ms(seconds)
    return {"p50_ms": full["median_ms"], "p99_ms": full["p99_ms"], **full}


async def bench_tools(
    bench: Bench, fake: FakeModelServer, sandbox: str, calls: int, warmup: int, per_session: int
) -> dict[str, Any]:
    reverie = bench.reverie
    assert reverie is not None
    agent = await reverie.create_agent(
        {"name": "tool-bench", "model": MODEL, "system": SYSTEM_PROMPT, "tools": [TOOLSET]}
    )
    direct = DirectTools(reverie, sandbox)
    rows: list[dict[str, Any]] = []
    sessions = 0
    session_id, position = "", 0
    started = time.perf_counter()
    for round_index in range(warmup + calls):
        if round_index % per_session == 0:
            session_id, position = await new_session(reverie, agent.id, sessions), 0
            sessions += 1
        # Rotate the order, so no kind always follows the same other kind.
        shift = round_index % len(KINDS)
        for kind in KINDS[shift:] + KINDS[:shift]:
            position, row = await one_turn(reverie, fake, session_id, position, kind)
            row.update(round=round_index, session=sessions, warmup=round_index < warmup)
            rows.append(row)
        for kind in TOOL_KINDS:
            seconds = await direct.call(kind)
            rows.append(
                {
                    "kind": f"direct {kind}",
                    "tool_s": seconds,
                    "round": round_index,
                    "warmup": round_index < warmup,
                }
            )
    elapsed = time.perf_counter() - started

    measured = [row for row in rows if not row["warmup"]]

    def of(kind: str, key: str) -> list[float]:
        return [row[key] for row in measured if row["kind"] == kind]

    def paired_extra(kind: str) -> list[float]:
        """Wall time of each `kind` turn minus the plain turn of the same round."""
        plain = {row["round"]: row["wall_s"] for row in measured if row["kind"] == "plain"}
        return [row["wall_s"] - plain[row["round"]] for row in measured if row["kind"] == kind]

    walls = {kind: p50_p99(of(kind, "wall_s")) for kind in KINDS}
    result: dict[str, Any] = {
        "calls_per_tool": calls,
        "warmup_rounds": warmup,
        "rounds_per_session": per_session,
        "sessions": sessions,
        "poll_interval_ms": POLL_SECONDS * 1000,
        "sandbox": sandbox,
        "note_bytes": len(NOTE_TEXT),
        "turn_wall": walls,
        "send_message": p50_p99([s for kind in KINDS for s in of(kind, "send_s")]),
        "seconds": round(elapsed, 2),
    }
    for kind in TOOL_KINDS:
        round_trip = p50_p99(of(kind, "tool_s"))
        itself = p50_p99(of(f"direct {kind}", "tool_s"))
        splits = [row["split"] for row in measured if row["kind"] == kind]
        result[kind] = {
            "call": CALLS[kind][1],
            "round_trip": round_trip,
            "direct_call": itself,
            "round_trip_minus_direct_p50_ms": round(round_trip["p50_ms"] - itself["p50_ms"], 2),
            "extra_turn_wall_paired": p50_p99(paired_extra(kind)),
            "extra_turn_wall_diff_of_p50_ms": round(
                walls[kind]["p50_ms"] - walls["plain"]["p50_ms"], 2
            ),
            "split_p50_ms": {
                key: round(percentile([s[key] for s in splits], 50) * 1000, 2) for key in SPLIT_KEYS
            },
        }
    result["per_turn"] = [row_in_ms(row) for row in rows]
    return result


def row_in_ms(row: dict[str, Any]) -> dict[str, Any]:
    """One row of the JSON: seconds (`*_s`, the split) turned into milliseconds."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key == "split":
            out["split_ms"] = {k: round(v * 1000, 3) for k, v in value.items()}
        elif key.endswith("_s"):
            out[key[:-2] + "_ms"] = round(value * 1000, 3)
        else:
            out[key] = value
    return out


# ---- report ----------------------------------------------------------------------------------


def p(stats: dict[str, float]) -> str:
    return f"p50 {stats['p50_ms']:8.2f} ms   p99 {stats['p99_ms']:8.2f} ms"


def render(report: dict[str, Any]) -> str:
    t = report["tools"]
    parts = [
        table(
            "Reverie tool round-trip benchmark",
            [
                *header_rows(report),
                ("sandbox (bash)", f"{t['sandbox']} ({report['sandbox_note']})"),
                (
                    "calls",
                    f"{t['calls_per_tool']} per tool (+{t['warmup_rounds']} warm-up rounds), "
                    f"{t['sessions']} sessions of <= {t['rounds_per_session']} rounds",
                ),
            ],
        )
    ]
    read, bash = t["read"], t["bash"]
    parts.append(
        table(
            "(a) tool round trip: agent.tool_use -> agent.tool_result (processed_at)",
            [
                (f"read ({NOTE}, {t['note_bytes']} B)", p(read["round_trip"])),
                ("bash `true`", p(bash["round_trip"])),
                ("read, called directly", p(read["direct_call"])),
                ("bash `true`, called directly", p(bash["direct_call"])),
                (
                    "round trip - direct (p50)",
                    f"read {read['round_trip_minus_direct_p50_ms']:.2f} ms, "
                    f"bash {bash['round_trip_minus_direct_p50_ms']:.2f} ms",
                ),
            ],
        )
    )
    walls = t["turn_wall"]
    parts.append(
        table(
            "(b) turn wall time: send_message -> session.status_idle seen",
            [
                ("plain text turn", p(walls["plain"])),
                ("turn with one read", p(walls["read"])),
                ("turn with one bash `true`", p(walls["bash"])),
                ("extra for one read (paired)", p(read["extra_turn_wall_paired"])),
                ("extra for one bash (paired)", p(bash["extra_turn_wall_paired"])),
                (
                    "extra, difference of p50s",
                    f"read {read['extra_turn_wall_diff_of_p50_ms']:.2f} ms, "
                    f"bash {bash['extra_turn_wall_diff_of_p50_ms']:.2f} ms",
                ),
            ],
        )
    )
    parts.append(
        table(
            "(c) where a tool turn's time goes (p50, ms; read / bash)",
            [
                (key, f"{read['split_p50_ms'][key]:8.2f} / {bash['split_p50_ms'][key]:8.2f}")
                for key in SPLIT_KEYS
            ],
        )
    )
    parts.append(f"total {report['total_seconds']:.1f} s")
    return "\n\n".join(parts)


# ---- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, help="measured calls per tool (default 100)")
    parser.add_argument(
        "--rounds-per-session",
        type=int,
        default=25,
        help="rounds (one turn of each kind) before a fresh session",
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run (20 calls)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where the JSON goes")
    args = parser.parse_args(argv)
    args.calls = args.calls or (20 if args.quick else 100)
    args.warmup = 2 if args.quick else 5
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    began = time.perf_counter()
    sandbox, note = pick_sandbox()
    report: dict[str, Any] = {
        "started_at": datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "machine": machine(),
        "sandbox_note": note,
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }
    async with contextlib.AsyncExitStack() as exits:
        bench = Bench(exits)
        fake = FakeModelServer()
        bench.sim = fake  # Bench starts, points the worker at, and stops whatever `sim` is.
        report["dev_server_flags"] = bench.temporal_server.flags()
        await bench.start()
        report["database"] = bench.database_source
        report["startup_seconds"] = round(bench.startup_seconds, 2)
        print("running tool round trips ...", file=sys.stderr, flush=True)
        report["tools"] = await bench_tools(
            bench, fake, sandbox, args.calls, args.warmup, args.rounds_per_session
        )
    report["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    report["total_seconds"] = round(time.perf_counter() - began, 2)
    return report


def main(argv: list[str] | None = None) -> None:
    run_main(parse_args(argv), run, render)


if __name__ == "__main__":
    main()
