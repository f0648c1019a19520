"""Does the outcome loop make agents succeed more often? Measured, not quoted.

A small set of realistic tasks, each with a rubric a grader can apply and an independent
programmatic check of the files the agent produces (the check, never the grader, decides
success). Every task runs `--trials` times in two modes on the same agent:

  plain     one `user.message` holding the task and its rubric; the agent works once;
  outcome   `user.define_outcome {description, rubric, max_iterations}`; the grader judges each
            attempt in its own context and the agent revises until satisfied or out of passes.

It prints each mode's success rate with a 95% Wilson confidence interval, per task and overall,
and writes the figures to bench/results/outcomes_eval.json (or --out).

With ANTHROPIC_API_KEY set (or ANTHROPIC_BASE_URL pointing at a Messages API server) it
measures that model (`--model`, `--grader-model`). Without either it says so and runs a scripted
fake model, whose first attempt is flawed and whose grader asks for the fix: that checks the
harness end to end (sessions, outcome loop, grader, checks, statistics); its rates mean nothing.

The checks of the two Python tasks import the agent's module in a subprocess of this machine
(isolated mode, empty environment, 20 s timeout), outside Reverie's sandbox: run the bench
where that is acceptable, or leave those tasks out (`--tasks`).

    .venv/bin/python bench/outcomes_eval.py                       # fake model: harness check
    ANTHROPIC_API_KEY=... .venv/bin/python bench/outcomes_eval.py --trials 10 --model claude-sonnet-4-5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402

from reverie import event_loop  # noqa: E402
from reverie.settings import Settings  # noqa: E402
from reverie.starter.client import ReverieClient  # noqa: E402
from reverie.starter.stack import EmbeddedPostgres, TemporalDevServer, free_port  # noqa: E402
from reverie.store.pool import connect  # noqa: E402
from reverie.worker import build_worker  # noqa: E402
from tests.fake_model import FakeModelServer, Reply  # noqa: E402

OUT = ROOT / "bench" / "results" / "outcomes_eval.json"
TOOLSET = {
    "type": "agent_toolset_20260401",
    "configs": [
        {"name": "web_search", "enabled": False},
        {"name": "web_fetch", "enabled": False},
    ],
}
SYSTEM = (
    "You are a careful engineer. Do the task completely, writing every deliverable as a file "
    "under /mnt/session/outputs/. When done, say briefly what you produced."
)


# ---- tasks -----------------------------------------------------------------------------------


def _python(outputs: Path, code: str, timeout: float = 20.0) -> bool:
    """Run `code` with the outputs folder importable; True when it exits 0."""
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-I",
                "-c",
                f"import sys; sys.path.insert(0, {str(outputs)!r})\n{code}",
            ],
            cwd=outputs,
            capture_output=True,
            timeout=timeout,
            env={"PATH": "/usr/bin:/bin"},
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def _read(outputs: Path, name: str) -> str | None:
    path = outputs / name
    if not path.is_file() or path.is_symlink():
        return None
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


SALES = """region,product,units,unit_price
north,widget,12,2.50
south,widget,7,2.50
north,gadget,3,10.00
east,widget,20,2.50
south,gadget,5,10.00
east,gizmo,1,99.99
north,widget,4,2.50
"""


def check_sales(outputs: Path) -> bool:
    text = _read(outputs, "summary.csv")
    if text is None:
        return False
    rows = list(csv.reader(io.StringIO(text.strip())))
    if not rows or [c.strip() for c in rows[0]] != ["region", "revenue"]:
        return False
    expected = [("east", "149.99"), ("north", "70.00"), ("south", "67.50")]
    got = [(r[0].strip(), r[1].strip()) for r in rows[1:] if r]
    return got == expected


def check_roman(outputs: Path) -> bool:
    return _python(
        outputs,
        """
from roman import to_roman, from_roman
cases = {1: "I", 4: "IV", 9: "IX", 14: "XIV", 40: "XL", 90: "XC", 400: "CD", 1994: "MCMXCIV",
         2024: "MMXXIV", 3999: "MMMCMXCIX"}
for n, r in cases.items():
    assert to_roman(n) == r, (n, to_roman(n))
    assert from_roman(r) == n, (r, from_roman(r))
for bad in (0, 4000, -1):
    try:
        to_roman(bad)
    except ValueError:
        pass
    else:
        raise SystemExit(f"to_roman({bad}) did not raise ValueError")
for bad in ("IIII", "VV", "IC", "", "ABC"):
    try:
        from_roman(bad)
    except ValueError:
        pass
    else:
        raise SystemExit(f"from_roman({bad!r}) did not raise ValueError")
""",
    )


def check_slugify(outputs: Path) -> bool:
    return _python(
        outputs,
        """
from slug import slugify
cases = {
    "Hello, World!": "hello-world",
    "  spaces   everywhere  ": "spaces-everywhere",
    "Crème Brûlée": "creme-brulee",
    "already-a-slug": "already-a-slug",
    "multiple---dashes": "multiple-dashes",
    "123 Numbers 456": "123-numbers-456",
    "!!!": "",
}
for given, want in cases.items():
    assert slugify(given) == want, (given, slugify(given), want)
assert len(slugify("a" * 200)) <= 60
assert not slugify("word " * 30).endswith("-")
""",
    )


def check_config(outputs: Path) -> bool:
    text = _read(outputs, "config.json")
    if text is None:
        return False
    try:
        config = json.loads(text)
    except ValueError:
        return False
    try:
        services = config["services"]
        names = [s["name"] for s in services]
        ports = [s["port"] for s in services]
        return (
            set(config) == {"version", "services"}
            and config["version"] == 2
            and names == sorted(names)
            and set(names) == {"api", "web", "worker"}
            and all(isinstance(p, int) and 8000 <= p <= 8999 for p in ports)
            and len(set(ports)) == len(ports)
            and all(s.get("replicas", 0) >= 2 for s in services if s["name"] != "worker")
            and next(s for s in services if s["name"] == "worker").get("replicas") == 1
        )
    except (KeyError, TypeError, StopIteration):
        return False


def check_report(outputs: Path) -> bool:
    text = _read(outputs, "incident.md")
    if text is None:
        return False
    lines = text.splitlines()
    headings = [line[3:].strip().lower() for line in lines if line.startswith("## ")]
    if headings != ["summary", "timeline", "root cause", "action items"]:
        return False
    sections: dict[str, list[str]] = {}
    current = None
    for line in lines:
        if line.startswith("## "):
            current = line[3:].strip().lower()
            sections[current] = []
        elif current:
            sections[current].append(line)
    summary_words = len(" ".join(sections["summary"]).split())
    timeline = [line for line in sections["timeline"] if line.strip().startswith("- ")]
    actions = [line for line in sections["action items"] if line.strip().startswith("- [ ]")]
    return (
        0 < summary_words <= 60
        and len(timeline) >= 4
        and all(line.strip()[2:7].count(":") == 1 for line in timeline)
        and len(actions) >= 3
        and "14:05" in text
    )


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    rubric: str
    check: Callable[[Path], bool]
    # For the fake model: a flawed first attempt and the fixed one, as (path, content).
    flawed: tuple[str, str]
    fixed: tuple[str, str]


TASKS = [
    Task(
        "sales_summary",
        "From this CSV of sales, write /mnt/session/outputs/summary.csv with the revenue "
        "(units x unit_price) per region.\n\n" + SALES,
        "- The file /mnt/session/outputs/summary.csv exists\n"
        "- Its header is exactly `region,revenue`\n"
        "- One row per region, sorted by region name, ascending\n"
        "- Revenue is written with exactly two decimals and is correct for every region",
        check_sales,
        ("summary.csv", "region,revenue\nnorth,70\nsouth,67.5\neast,149.99\n"),
        ("summary.csv", "region,revenue\neast,149.99\nnorth,70.00\nsouth,67.50\n"),
    ),
    Task(
        "roman_numerals",
        "Write a Python module /mnt/session/outputs/roman.py with `to_roman(n: int) -> str` and "
        "`from_roman(s: str) -> int` for 1..3999.",
        "- /mnt/session/outputs/roman.py defines to_roman and from_roman\n"
        "- Both use subtractive notation (IV, IX, XL, XC, CD, CM) and round-trip for 1..3999\n"
        "- to_roman raises ValueError outside 1..3999\n"
        "- from_roman raises ValueError for anything that is not a canonical numeral "
        "(e.g. IIII, VV, IC, the empty string)",
        check_roman,
        (
            "roman.py",
            "V = [(1000,'M'),(500,'D'),(100,'C'),(50,'L'),(10,'X'),(5,'V'),(1,'I')]\n"
            "def to_roman(n):\n    out=''\n    for v,s in V:\n        while n>=v: out+=s; n-=v\n"
            "    return out\n"
            "def from_roman(s):\n    d=dict((b,a) for a,b in V)\n    return sum(d[c] for c in s)\n",
        ),
        (
            "roman.py",
            "V = [(1000,'M'),(900,'CM'),(500,'D'),(400,'CD'),(100,'C'),(90,'XC'),(50,'L'),"
            "(40,'XL'),(10,'X'),(9,'IX'),(5,'V'),(4,'IV'),(1,'I')]\n"
            "def to_roman(n):\n"
            "    if not isinstance(n, int) or not 1 <= n <= 3999: raise ValueError(n)\n"
            "    out=''\n    for v,s in V:\n        while n>=v: out+=s; n-=v\n    return out\n"
            "def from_roman(s):\n"
            "    for n in range(1, 4000):\n"
            "        if to_roman(n) == s: return n\n"
            "    raise ValueError(s)\n",
        ),
    ),
    Task(
        "slugify",
        "Write /mnt/session/outputs/slug.py with `slugify(text: str) -> str` for URL slugs.",
        "- /mnt/session/outputs/slug.py defines slugify\n"
        "- Lower-case ASCII letters, digits and single hyphens only; accents are folded "
        "(Crème Brûlée -> creme-brulee)\n"
        "- No leading, trailing or repeated hyphens; text with no letters or digits gives ''\n"
        "- At most 60 characters, never ending in a hyphen after truncation",
        check_slugify,
        (
            "slug.py",
            "import re\ndef slugify(text):\n"
            "    return re.sub('[^a-z0-9]+', '-', text.lower()).strip('-')\n",
        ),
        (
            "slug.py",
            "import re, unicodedata\ndef slugify(text):\n"
            "    text = unicodedata.normalize('NFKD', text).encode('ascii','ignore').decode()\n"
            "    text = re.sub('[^a-z0-9]+', '-', text.lower()).strip('-')\n"
            "    return text[:60].rstrip('-')\n",
        ),
    ),
    Task(
        "service_config",
        "Write /mnt/session/outputs/config.json describing three services (api, web, worker) "
        "for our deployment tool.",
        "- /mnt/session/outputs/config.json is valid JSON with exactly the keys version and "
        "services\n"
        "- version is the integer 2\n"
        "- services lists api, web and worker, sorted by name, each with a name and a port\n"
        "- Ports are distinct integers between 8000 and 8999\n"
        "- api and web have replicas of at least 2; worker has replicas 1",
        check_config,
        (
            "config.json",
            '{"version": "2", "services": [{"name": "web", "port": 80}, '
            '{"name": "api", "port": 8080}, {"name": "worker", "port": 8080}]}',
        ),
        (
            "config.json",
            '{"version": 2, "services": [{"name": "api", "port": 8080, "replicas": 2}, '
            '{"name": "web", "port": 8081, "replicas": 3}, '
            '{"name": "worker", "port": 8082, "replicas": 1}]}',
        ),
    ),
    Task(
        "incident_report",
        "Write an incident report to /mnt/session/outputs/incident.md about this outage: at "
        "13:50 a config push raised the DB pool size to 5,000; at 13:58 the database hit its "
        "connection limit; at 14:05 on-call rolled the config back; at 14:20 error rates were "
        "normal. Users saw errors for 30 minutes.",
        "- /mnt/session/outputs/incident.md has exactly the sections (as `## ` headings, in "
        "this order) Summary, Timeline, Root cause, Action items\n"
        "- The summary is at most 60 words\n"
        "- The timeline has at least four `- HH:MM ...` bullets, including the 14:05 rollback\n"
        "- Action items has at least three unchecked checkboxes (`- [ ] ...`)",
        check_report,
        ("incident.md", "# Outage\nThe database ran out of connections. We rolled back.\n"),
        (
            "incident.md",
            "## Summary\nA config push exhausted database connections; users saw errors for "
            "30 minutes until a rollback.\n\n## Timeline\n- 13:50 config push\n- 13:58 DB "
            "connection limit hit\n- 14:05 rollback\n- 14:20 errors normal\n\n## Root cause\n"
            "Pool size raised to 5,000.\n\n## Action items\n- [ ] Validate pool sizes\n"
            "- [ ] Canary config pushes\n- [ ] Alert on connection use\n",
        ),
    ),
]


# ---- statistics ------------------------------------------------------------------------------


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a success rate (sound for small n and 0% or 100%)."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def rate(successes: int, n: int) -> str:
    low, high = wilson(successes, n)
    share = successes / n if n else 0.0
    return f"{share:6.1%} [{low:5.1%}, {high:5.1%}] ({successes}/{n})"


# ---- the stack -------------------------------------------------------------------------------


class Stack:
    def __init__(self, exits: contextlib.AsyncExitStack, model_url: str | None) -> None:
        self.exits = exits
        self.tmp = Path(tempfile.mkdtemp(prefix="reverie-outcomes-"))
        exits.callback(shutil.rmtree, self.tmp, True)
        self.model_url = model_url
        self.settings: Settings | None = None
        self.reverie: ReverieClient | None = None

    async def start(self, api_key: str) -> None:
        server = TemporalDevServer(
            db_file=None,
            port=free_port(),
            ui_port=None,
            choose_ports=True,
            log_file=self.tmp / "temporal.log",
        )
        self.exits.callback(server.stop)
        await asyncio.to_thread(server.start)
        database = await self._database()
        self.settings = Settings(
            TEMPORAL_ADDRESS=server.address,
            TEMPORAL_NAMESPACE="default",
            DATABASE_URL=database,
            ANTHROPIC_API_KEY=api_key,
            ANTHROPIC_BASE_URL=self.model_url,
            REVERIE_HOME=self.tmp / "home",
            REVERIE_TASK_QUEUE=f"outcomes-eval-{uuid.uuid4().hex[:6]}",
            REVERIE_SANDBOX=os.environ.get("REVERIE_SANDBOX"),
        )
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        pool = await connect(database)
        self.exits.push_async_callback(pool.close)
        await self.exits.enter_async_context(build_worker(client, pool, self.settings))
        self.reverie = await ReverieClient.connect(self.settings)
        self.exits.push_async_callback(self.reverie.close)

    async def _database(self) -> str:
        base = os.environ.get("DATABASE_URL")
        if not base:
            embedded = EmbeddedPostgres(self.tmp / "pg")
            self.exits.callback(embedded.stop)
            base = await asyncio.to_thread(embedded.start)
        name = f"reverie_outcomes_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(base)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        head, _, query = base.partition("?")
        head = head.rsplit("/", 1)[0] + "/" + name
        return f"{head}?{query}" if query else head


# ---- one run ---------------------------------------------------------------------------------


def _verdict(ok: bool, task: Task) -> dict[str, Any]:
    lines = [line[2:] for line in task.rubric.splitlines() if line.startswith("- ")]
    criteria = [
        {
            "id": f"C{n}",
            "met": ok or n > 1,
            "evidence": "checked",
            "gap": "" if ok or n > 1 else "the file does not meet this yet; see the other criteria",
        }
        for n in range(1, len(lines) + 1)
    ]
    for item in criteria:
        if item["met"]:
            item.pop("gap")
        else:
            item.pop("evidence")
    return {
        "result": "satisfied" if ok else "needs_revision",
        "explanation": "All criteria are met." if ok else "The file falls short of the rubric.",
        "criteria": criteria,
    }


def script_fake(
    fake: FakeModelServer, agent_model: str, grader_model: str, task: Task, outcome: bool
) -> None:
    """The fake agent writes the flawed file first; with an outcome, the grader asks for a
    revision and the agent writes the fixed one."""
    path, content = task.flawed
    replies = [
        Reply.tool_use("write", {"file_path": f"/mnt/session/outputs/{path}", "content": content}),
        Reply.text(f"Wrote {path}."),
    ]
    if outcome:
        fixed_path, fixed = task.fixed
        replies += [
            Reply.tool_use(
                "write", {"file_path": f"/mnt/session/outputs/{fixed_path}", "content": fixed}
            ),
            Reply.text(f"Fixed {fixed_path}."),
        ]
        fake.script(
            grader_model,
            [
                Reply.tool_use("submit_verdict", _verdict(False, task)),
                Reply.tool_use("submit_verdict", _verdict(True, task)),
            ],
        )
    fake.script(agent_model, replies)


async def run_one(
    stack: Stack,
    task: Task,
    outcome: bool,
    args: argparse.Namespace,
    fake: FakeModelServer | None,
) -> dict[str, Any]:
    assert stack.reverie is not None and stack.settings is not None
    reverie = stack.reverie
    model, grader_model = args.model, args.grader_model
    if fake is not None:
        model = f"fake-{uuid.uuid4().hex[:8]}"
        grader_model = f"{model}-grader"
        script_fake(fake, model, grader_model, task, outcome)
    agent = await reverie.create_agent(
        {"name": f"eval-{task.name}", "model": model, "system": SYSTEM, "tools": [TOOLSET]}
    )
    if outcome:
        event: dict[str, Any] = {
            "type": "user.define_outcome",
            "description": task.description,
            "rubric": {"type": "text", "content": task.rubric},
            "max_iterations": args.max_iterations,
        }
        if grader_model:
            event["grader"] = {"model": grader_model}
    else:
        event = {
            "type": "user.message",
            "content": f"{task.description}\n\nYour work will be judged by this rubric:\n"
            f"{task.rubric}",
        }
    started = time.perf_counter()
    session = await reverie.create_session({"agent": agent.id, "initial_events": [event]})
    try:
        done = await reverie.wait_until_settled(session.id, timeout=args.timeout)
        settled = True
    except TimeoutError:
        done, settled = await reverie.get_session(session.id), False
    seconds = time.perf_counter() - started
    outputs = stack.settings.workspaces / session.id / "outputs"
    success = settled and await asyncio.to_thread(task.check, outputs)
    evaluations = done.outcome_evaluations
    return {
        "task": task.name,
        "mode": "outcome" if outcome else "plain",
        "session_id": session.id,
        "success": success,
        "settled": settled,
        "seconds": round(seconds, 2),
        "outcome_result": evaluations[-1].result if evaluations else None,
        "iterations": evaluations[-1].iteration + 1 if evaluations else None,
        "input_tokens": done.usage.input_tokens,
        "output_tokens": done.usage.output_tokens,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    api_key = os.environ.get("ANTHROPIC_API_KEY")
    base_url = os.environ.get("ANTHROPIC_BASE_URL")
    real = bool(api_key or base_url)
    tasks = [t for t in TASKS if not args.tasks or t.name in args.tasks.split(",")]
    if not real:
        print(
            "No ANTHROPIC_API_KEY or ANTHROPIC_BASE_URL: running a scripted fake model to check "
            "the harness only. Its success rates are scripted and measure nothing; set "
            "ANTHROPIC_API_KEY (or ANTHROPIC_BASE_URL) to measure a real model.\n"
        )
    async with contextlib.AsyncExitStack() as exits:
        fake = None
        if not real:
            fake = FakeModelServer()
            await fake.start()
            exits.push_async_callback(fake.stop)
            base_url = fake.base_url
        stack = Stack(exits, base_url)
        await stack.start(api_key or "fake")
        gate = asyncio.Semaphore(args.concurrency)

        async def limited(task: Task, outcome: bool) -> dict[str, Any]:
            async with gate:
                return await run_one(stack, task, outcome, args, fake)

        runs = await asyncio.gather(
            *(
                limited(task, outcome)
                for _ in range(args.trials)
                for task in tasks
                for outcome in (False, True)
            )
        )
    return {
        "real_model": real,
        "model": args.model if real else "scripted fake",
        "grader_model": (args.grader_model or args.model) if real else "scripted fake",
        "trials": args.trials,
        "max_iterations": args.max_iterations,
        "runs": runs,
    }


def render(report: dict[str, Any]) -> str:
    runs = report["runs"]
    names = sorted({r["task"] for r in runs}, key=[t.name for t in TASKS].index)
    width = max(len(n) for n in [*names, "all tasks"]) + 2
    lines = [
        f"model: {report['model']} · grader: {report['grader_model']} · trials per task and "
        f"mode: {report['trials']} · max_iterations: {report['max_iterations']}",
        "success rate [95% Wilson interval] (successes/runs), by an independent check of the files",
        "",
        f"{'task':<{width}}{'plain':<36}{'with outcome':<36}",
    ]
    for name in [*names, "all tasks"]:
        row = f"{name:<{width}}"
        for mode in ("plain", "outcome"):
            chosen = [r for r in runs if r["mode"] == mode and name in (r["task"], "all tasks")]
            row += f"{rate(sum(r['success'] for r in chosen), len(chosen)):<36}"
        lines.append(row)
    outcome_runs = [r for r in runs if r["mode"] == "outcome"]
    results: dict[str, int] = {}
    for r in outcome_runs:
        results[str(r["outcome_result"])] = results.get(str(r["outcome_result"]), 0) + 1
    lines += [
        "",
        "outcome results: " + ", ".join(f"{k} {v}" for k, v in sorted(results.items())),
        "mean seconds per run: plain "
        + f"{_mean([r['seconds'] for r in runs if r['mode'] == 'plain']):.1f}, with outcome "
        + f"{_mean([r['seconds'] for r in outcome_runs]):.1f}",
        "mean output tokens per run: plain "
        + f"{_mean([r['output_tokens'] for r in runs if r['mode'] == 'plain']):.0f}, with "
        + f"outcome {_mean([r['output_tokens'] for r in outcome_runs]):.0f}",
    ]
    if not report["real_model"]:
        lines.append("(scripted fake model: a harness check, not a measurement)")
    return "\n".join(lines)


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=None, help="runs per task and mode")
    parser.add_argument("--tasks", default="", help="comma-separated task names (default all)")
    parser.add_argument(
        "--model", default=os.environ.get("REVERIE_EVAL_MODEL", "claude-sonnet-4-5")
    )
    parser.add_argument("--grader-model", default=None, help="default: the agent's model")
    parser.add_argument("--max-iterations", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per session")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.trials is None:
        real = os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_BASE_URL")
        args.trials = 5 if real else 2
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = event_loop.run(run(args))
    print(render(report))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
