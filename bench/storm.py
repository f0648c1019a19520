"""Durability storm: many sessions at once while their workers are SIGKILLed at random.

Starts the stack the way the tests do (a headless Temporal dev server with the tests' low
continue-as-new threshold, an embedded PostgreSQL in a temp folder, the fake Messages API of
`tests/fake_model.py`), then runs N sessions concurrently on a task queue of their own, served
by two `python -m reverie.worker` processes that a killer SIGKILLs every few seconds and
restarts soon after. One worker slot sometimes comes back with the test hook
`REVERIE_TEST_HOOK_FREEZE_AFTER_COMMIT`, so model steps freeze between their commit and telling
Temporal, and are then timed out or killed there.

Each session runs several scripted turns: plain answers, `bash` echo, `write` then `read`, two
tools in one step, 429/529 storms (fewer errors in a row than the session's model budget) and
slow answers. The fake model answers by (turn, step), read from the request itself, so a reply
lost with a killed worker is served again to the next attempt instead of shifting the script.

Then every session must settle, and its event log in PostgreSQL is checked: no event recorded
twice, none lost (each message sent is recorded and reaches the model, each tool use has one
result, each span its end), none stuck, no `retries_exhausted` within budget, a sane order, and
every request the model saw agrees with the log; also that the row, the workflow and the search
attribute agree, what the tools returned, and whether `send_message` was refused meanwhile.
Prints a verdict table and every violation with the events around it; writes
bench/results/storm.json (or --out), with the Temporal history of every session that broke a
check and the timelines of the slowest turns. Worker and Temporal logs are copied to
bench/results/storm-logs/. Exit status 1 when any check fails.

    .venv/bin/python bench/storm.py                  # 30 sessions x 4 turns, ~1.5-2 min on 2 cores
    .venv/bin/python bench/storm.py --quick          # 8 sessions x 3 turns, ~40 s
    .venv/bin/python bench/storm.py --sessions 90    # heavier: ~5 min on 2 cores
    .venv/bin/python bench/storm.py --pause-share 0.6 --p-slow 0.6   # also SIGSTOP stalls
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import json
import os
import platform
import random
import re
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Running as `python bench/storm.py` puts bench/ first on sys.path, not the repo root.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from aiohttp import web  # noqa: E402
from temporalio.api.enums.v1 import EventType  # noqa: E402

from reverie.activities.model import TEST_HOOK_FREEZE_AFTER_COMMIT  # noqa: E402
from reverie.activities.tool_run import INTERRUPTED  # noqa: E402
from reverie.activities.transcript import INTERRUPTED_TOOL_RESULT  # noqa: E402
from reverie.models.events import Event  # noqa: E402
from reverie.models.workflow_io import SessionOptions  # noqa: E402
from reverie.settings import Settings  # noqa: E402
from reverie.simulated_model import (  # noqa: E402
    build_message,
    compute_usage,
    output_length,
)
from reverie.starter.client import ReverieClient  # noqa: E402
from reverie.starter.stack import EmbeddedPostgres, TemporalDevServer, free_port  # noqa: E402
from reverie.workflows.session import SESSION_STATUS, SessionWorkflow  # noqa: E402
from tests.fake_model import FakeModelServer, Reply  # noqa: E402
from tests.helpers import stop as stop_worker  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "storm.json"
LOG_COPY = ROOT / "bench" / "results" / "storm-logs"
# As tests/conftest.py: low enough that sessions continue as new during the storm.
CONTINUE_AS_NEW_EVENTS = 200
TOOLSET = {
    "type": "agent_toolset_20260401",
    "configs": [{"name": "web_search", "enabled": False}],
}
TURN_MARK = re.compile(r"^\[storm turn (\d+)\]")
IDLE = "session.status_idle"
# A send that waits this long is given up (the client then unstages it) and sent again.
SEND_TIMEOUT = 90.0
SEND_DEADLINE = 120.0
RUNNING = "session.status_running"
RESCHEDULED = "session.status_rescheduled"
SPAN_START = "span.model_request_start"
SPAN_END = "span.model_request_end"
ERROR_TYPES = {429: "model_rate_limited_error", 529: "model_overloaded_error"}
CHECKS = {
    "duplicate": "0 recorded twice (same id, or the same answer/result/status again)",
    "lost": "0 lost (messages logged and seen by the model, results, span ends)",
    "stuck": "0 stuck (every session idle by the deadline)",
    "exhausted": "0 retries_exhausted with scripted errors within budget",
    "order": "sane order (running before answers, idle last, spans closed)",
    "transcript": "every model request agrees with the event log",
    "status": "row, workflow, search attribute, status events agree (idle)",
    "tool_output": "tool results carry what the tools did",
    "unexpected": "nothing unplanned (terminated, unknown step, message never sent)",
    "send": "send_message accepted at the first try while workers churn",
}
# Which worker requests came through: the frozen site is given only to hooked workers.
VIA_FROZEN: contextvars.ContextVar[bool] = contextvars.ContextVar("via_frozen", default=False)


# ---- the script of each session ----------------------------------------------------------------


@dataclass
class Step:
    """One model step: the errors served first (in a row), then the answer."""

    answer: Reply
    errors: list[Reply] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    tools: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


@dataclass
class Turn:
    index: int
    kind: str
    message: str
    steps: list[Step]
    marker: str
    slow: bool = False


def _tool_id(model: str, turn: int, step: int, n: int) -> str:
    return f"toolu_{uuid.uuid5(uuid.NAMESPACE_URL, f'{model}/{turn}/{step}/{n}').hex[:24]}"


def plan_session(
    rng: random.Random, model: str, number: int, turns: int, budget: int, args: argparse.Namespace
) -> list[Turn]:
    kinds = ["plain", "bash", "write_read", "parallel"]
    weights = [3, 3, 2, 2]
    plan: list[Turn] = []
    for t in range(turns):
        kind = rng.choices(kinds, weights)[0]
        marker = f"storm-{number}-{t}-{rng.getrandbits(32):08x}"
        name = f"storm_{t}.txt"
        calls: list[list[tuple[str, dict[str, Any]]]]
        if kind == "plain":
            calls = []
        elif kind == "bash":
            calls = [[("bash", {"command": f"echo {marker}"})]]
        elif kind == "write_read":
            calls = [
                [("write", {"file_path": name, "content": f"{marker}\n"})],
                [("read", {"file_path": name})],
            ]
        else:
            calls = [
                [
                    ("bash", {"command": f"echo {marker}"}),
                    ("write", {"file_path": name, "content": f"{marker}\n"}),
                ]
            ]
        steps: list[Step] = []
        slow_turn = False
        for s, step_calls in enumerate([*calls, None]):
            slow = rng.random() < args.p_slow
            slow_turn |= slow
            delay = round(rng.uniform(1.0, 2.5), 2) if slow else 0.0
            texts: list[str] = []
            if step_calls is None:
                texts = [f"[storm answer {t}] {kind} done ({marker})"]
                answer = Reply([{"type": "text", "text": texts[0]}], "end_turn", delay=delay)
            else:
                if rng.random() < 0.5:
                    texts = [f"[storm step {t}.{s}] running {len(step_calls)} tool(s)"]
                blocks = [{"type": "text", "text": x} for x in texts] + [
                    {"type": "tool_use", "id": _tool_id(model, t, s, n), "name": tool, "input": i}
                    for n, (tool, i) in enumerate(step_calls)
                ]
                answer = Reply(blocks, "tool_use", delay=delay)
            errors: list[Reply] = []
            if rng.random() < args.p_error:
                # A storm: at most budget - 1 errors in a row, so the answer is still allowed.
                for _ in range(rng.randint(1, budget - 1)):
                    status = rng.choice([429, 529])
                    errors.append(
                        Reply.error(
                            status,
                            retry_after=rng.choice([0, 0.2, 0.5, None]),
                            message=f"storm {status}",
                            delay=rng.choice([0.0, 0.0, 0.3]),
                        )
                    )
            steps.append(Step(answer, errors, texts, list(step_calls or [])))
        message = f"[storm turn {t}] {kind}: please do it ({marker})"
        plan.append(Turn(t, kind, message, steps, marker, slow_turn))
    return plan


# ---- the fake model ----------------------------------------------------------------------------


def locate(messages: list[dict[str, Any]]) -> tuple[int | None, int]:
    """(turn, step) of a request: the newest user text with a turn mark, and the assistant
    answers after it."""
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        content = message.get("content")
        if message.get("role") != "user" or not isinstance(content, list):
            continue
        for block in reversed(content):
            if isinstance(block, dict) and block.get("type") == "text":
                found = TURN_MARK.match(block.get("text") or "")
                if found:
                    after = messages[i + 1 :]
                    return int(found.group(1)), sum(1 for m in after if m["role"] == "assistant")
    return None, 0


@dataclass
class Call:
    turn: int | None
    step: int
    status: int
    frozen: bool
    messages: list[dict[str, Any]]
    at: float


class StormModel(FakeModelServer):
    """The fake Messages API, answering each session by (turn, step) from its plan: the step's
    scripted errors first, then its answer for every later attempt (so an answer lost with a
    worker is given again, never skipped)."""

    def __init__(self) -> None:
        super().__init__()
        self.plans: dict[str, list[Turn]] = {}
        self.errors_served: Counter[tuple[str, int | None, int]] = Counter()
        self.answers_served: Counter[tuple[str, int | None, int]] = Counter()
        self.frozen_answers: Counter[tuple[str, int | None, int]] = Counter()
        self.calls: defaultdict[str, list[Call]] = defaultdict(list)
        self.unplanned: list[tuple[str, int | None, int]] = []
        self.frozen_url = ""
        self._frozen_port = 0

    async def start_frozen_site(self) -> None:
        """A second listener for hooked workers, so answers they got can be counted."""
        assert self._runner is not None
        self._frozen_port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self._frozen_port).start()
        self.frozen_url = f"http://127.0.0.1:{self._frozen_port}"

    async def _handle(self, request: web.Request) -> web.Response:
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        token = VIA_FROZEN.set(bool(sock) and sock[1] == self._frozen_port)
        try:
            return await super()._handle(request)
        finally:
            VIA_FROZEN.reset(token)

    def step_of(self, model: str, turn: int | None, step: int) -> Step | None:
        plan = self.plans.get(model)
        if plan is None or turn is None or not 0 <= turn < len(plan):
            return None
        steps = plan[turn].steps
        return steps[step] if 0 <= step < len(steps) else None

    async def answer(self, body: dict[str, Any]) -> web.Response:
        model = body["model"]
        if model not in self.plans:
            return await super().answer(body)
        messages = body.get("messages") or []
        turn, step = locate(messages)
        key = (model, turn, step)
        planned = self.step_of(model, turn, step)
        frozen = VIA_FROZEN.get()
        if planned is None:
            self.unplanned.append(key)
            reply = Reply.text(f"unplanned step {turn}/{step}")
        elif self.errors_served[key] < len(planned.errors):
            reply = planned.errors[self.errors_served[key]]
            self.errors_served[key] += 1
        else:
            reply = planned.answer
        self.calls[model].append(Call(turn, step, reply.status, frozen, messages, time.time()))
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.status != 200:
            return reply.error_response()
        self.answers_served[key] += 1
        if frozen:
            self.frozen_answers[key] += 1
        content = list(reply.content)
        usage = compute_usage(body, self.seen_prefixes, output_length(content))
        return web.json_response(build_message(model, content, reply.stop_reason, usage))


# ---- the workers and their killer --------------------------------------------------------------


@dataclass
class Incarnation:
    slot: str
    number: int
    hooked: bool
    log: str
    started: float
    process: asyncio.subprocess.Process | None = None
    pid: int = 0
    ended: float | None = None
    how: str = ""
    paused: bool = False


class Workers:
    """Two worker slots, each a `python -m reverie.worker` process at a time (as
    `tests.helpers.worker_process` starts them, with its output kept in a log file)."""

    def __init__(self, settings: Settings, model: StormModel, logs: Path, t0: float) -> None:
        self.settings = settings
        self.model = model
        self.logs = logs
        self.t0 = t0
        self.live: dict[str, Incarnation] = {}
        self.history: list[Incarnation] = []
        self.kills = 0
        self.pauses = 0

    def _env(self, hooked: bool) -> dict[str, str]:
        env = {
            **os.environ,
            "TEMPORAL_ADDRESS": self.settings.temporal_address or "",
            "DATABASE_URL": self.settings.database_url or "",
            "ANTHROPIC_API_KEY": "test-key",
            "ANTHROPIC_BASE_URL": self.model.frozen_url if hooked else self.model.base_url,
            "REVERIE_TASK_QUEUE": self.settings.task_queue,
            "REVERIE_HOME": str(self.settings.reverie_home),
            "REVERIE_WORKER_STICKY_TIMEOUT_SECONDS": "1",
            "REVERIE_SANDBOX": "none",
            "REVERIE_MODEL_MAX_ATTEMPTS": str(self.settings.model_max_attempts),
            "REVERIE_MODEL_MAX_BACKOFF_SECONDS": str(self.settings.model_max_backoff_seconds),
            "REVERIE_MODEL_TIMEOUT_SECONDS": str(self.settings.model_timeout_seconds),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop(TEST_HOOK_FREEZE_AFTER_COMMIT, None)
        if hooked:
            env[TEST_HOOK_FREEZE_AFTER_COMMIT] = "1"
        return env

    async def start(self, slot: str, hooked: bool = False) -> Incarnation:
        number = sum(1 for i in self.history if i.slot == slot) + 1
        log = self.logs / f"worker-{slot}-{number:03d}{'-frozen' if hooked else ''}.log"
        incarnation = Incarnation(slot, number, hooked, str(log), time.monotonic() - self.t0)
        with open(log, "wb") as out:
            incarnation.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "reverie.worker",
                env=self._env(hooked),
                cwd=str(ROOT),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        incarnation.pid = incarnation.process.pid
        self.live[slot] = incarnation
        self.history.append(incarnation)
        return incarnation

    async def kill(self, slot: str) -> None:
        """SIGKILL: no clean-up, no graceful shutdown, as when a machine dies."""
        incarnation = self.live.pop(slot, None)
        if incarnation is None or incarnation.process is None:
            return
        if incarnation.process.returncode is None:
            incarnation.process.send_signal(signal.SIGKILL)
        await incarnation.process.wait()
        incarnation.ended = time.monotonic() - self.t0
        incarnation.how = "SIGKILL"
        self.kills += 1

    async def pause(self, slot: str, seconds: float) -> None:
        incarnation = self.live.get(slot)
        if incarnation is None or incarnation.process is None:
            return
        process = incarnation.process
        if process.returncode is not None or incarnation.paused:
            return
        process.send_signal(signal.SIGSTOP)
        incarnation.paused = True
        self.pauses += 1
        try:
            await asyncio.sleep(seconds)
        finally:
            incarnation.paused = False
            if process.returncode is None:
                process.send_signal(signal.SIGCONT)

    async def stop_all(self) -> None:
        for slot in list(self.live):
            incarnation = self.live.pop(slot)
            process = incarnation.process
            if process is None:
                continue
            if process.returncode is None:
                process.send_signal(signal.SIGCONT)
                await stop_worker(process)
            incarnation.ended = time.monotonic() - self.t0
            incarnation.how = incarnation.how or "SIGTERM"


async def killer(
    workers: Workers, stop: asyncio.Event, rng: random.Random, args: argparse.Namespace
) -> list[asyncio.Task[Any]]:
    """Every `--kill-every` seconds, SIGKILL one live worker at random and start it again
    soon after; slot B sometimes comes back with the freeze-after-commit hook."""
    restarts: list[asyncio.Task[Any]] = []

    async def restart_later(slot: str, delay: float, hooked: bool) -> None:
        await asyncio.sleep(delay)
        await workers.start(slot, hooked)

    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), rng.uniform(args.kill_min, args.kill_max))
        if stop.is_set():
            break
        live = sorted(workers.live)
        if not live:
            continue
        slot = rng.choice(live)
        if rng.random() < args.pause_share:
            # A stall instead of a death (a VM pause, a long GC): SIGSTOP past the heartbeat
            # timeout, so Temporal retries its work elsewhere while it lives on, then SIGCONT.
            seconds = args.heartbeat + rng.uniform(0.3, 1.5)
            restarts.append(asyncio.create_task(workers.pause(slot, seconds)))
            continue
        await workers.kill(slot)
        hooked = slot == "B" and rng.random() < args.freeze_share
        delay = rng.uniform(args.restart_min, args.restart_max)
        restarts.append(asyncio.create_task(restart_later(slot, delay, hooked)))
    return restarts


# ---- driving the sessions ----------------------------------------------------------------------


@dataclass
class Run:
    number: int
    model: str
    plan: list[Turn]
    session_id: str = ""
    first_run_id: str = ""
    sent: list[str] = field(default_factory=list)
    send_errors: list[str] = field(default_factory=list)
    error: str | None = None
    turn_seconds: list[float] = field(default_factory=list)
    done_at: float | None = None
    t0: float = 0.0


async def events_of(client: ReverieClient, session_id: str, types: list[str] | None = None):
    return await client.list_events(session_id, limit=10_000, types=types)


async def send(client: ReverieClient, run: Run, text: str) -> bool:
    """Send one message. A send that fails is recorded (a finding in itself); if the message
    was not recorded anyway, it is sent again, for up to `SEND_DEADLINE` seconds."""
    deadline = time.monotonic() + SEND_DEADLINE
    while True:
        began = time.monotonic()
        try:
            await asyncio.wait_for(client.send_message(run.session_id, text), SEND_TIMEOUT)
            return True
        except Exception as error:
            run.send_errors.append(
                f"after {time.monotonic() - began:.1f} s (storm +{began - run.t0:.0f} s): "
                f"{type(error).__name__}: {error}"[:300]
            )
        await asyncio.sleep(1.0)
        found = await events_of(client, run.session_id, ["user.message"])
        if any(e.payload["content"][0]["text"] == text for e in found):
            return True
        if time.monotonic() > deadline:
            return False


async def drive(client: ReverieClient, run: Run, options: SessionOptions, args) -> None:
    try:
        agent = await client.create_agent(
            {"name": f"storm-{run.number}", "model": run.model, "tools": [TOOLSET]}
        )
        session = await client.create_session(
            {"agent": agent.id, "title": f"storm {run.number}"}, options=options
        )
        run.session_id = session.id
        run.first_run_id = (
            await client.temporal.get_workflow_handle(session.id).describe()
        ).run_id or ""
        for turn in run.plan:
            started = time.monotonic()
            if not await send(client, run, turn.message):
                run.error = f"turn {turn.index}: the message could not be sent"
                return
            run.sent.append(turn.message)
            # No limit per turn: the storm's deadline cancels drivers, and a session must then
            # settle within --settle-timeout, or it is stuck.
            while len(await events_of(client, run.session_id, [IDLE])) < turn.index + 1:
                await asyncio.sleep(0.4)
            run.turn_seconds.append(time.monotonic() - started)
    except Exception as error:
        run.error = f"{type(error).__name__}: {error}"[:500]
    finally:
        run.done_at = time.monotonic()


# ---- checking one session ----------------------------------------------------------------------


@dataclass
class Violation:
    session_id: str
    check: str
    detail: str
    context: list[str] = field(default_factory=list)


def _short(value: Any, n: int = 70) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = text.replace("\n", "\\n")
    return text if len(text) <= n else text[: n - 1] + "…"


def _text(event: Event) -> str:
    content = event.payload.get("content") or []
    return " ".join(b.get("text", "") for b in content if isinstance(b, dict))


def describe(event: Event) -> str:
    p = event.payload
    kind = event.type
    if kind in ("user.message", "agent.message"):
        extra = _short(_text(event))
    elif kind == "agent.tool_use":
        extra = f"{p.get('name')} {_short(p.get('input'), 50)}"
    elif kind == "agent.tool_result":
        extra = f"for {p.get('tool_use_id', '')[-8:]} error={p.get('is_error')} {_short(_text(event), 40)}"
    elif kind == "session.error":
        err = p.get("error") or {}
        extra = f"{err.get('type')} {err.get('retry_status', {}).get('type')} {_short(err.get('message'), 50)}"
    elif kind == IDLE:
        extra = json.dumps(p.get("stop_reason"))
    elif kind == SPAN_END:
        extra = f"start={p.get('model_request_start_id', '')[-8:]} error={p.get('is_error')}"
    else:
        extra = ""
    return f"{kind} {event.id[-8:]} {extra}".rstrip()


def context(events: list[Event], at: int | None, radius: int = 4) -> list[str]:
    if at is None or not events:
        return []
    at = max(0, min(at, len(events) - 1))
    lines = []
    for i in range(max(0, at - radius), min(len(events), at + radius + 1)):
        lines.append(f"{'>>' if i == at else '  '} {i + 1:>4} {describe(events[i])}")
    return lines


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _normalise(items: list[tuple]) -> list[tuple]:
    """Tool results of one step may be recorded in any order: sort each run of them."""
    out: list[tuple] = []
    run: list[tuple] = []
    for item in [*items, ("end",)]:
        if item[0] == "tool_result":
            run.append(item)
            continue
        out.extend(sorted(run, key=lambda r: r[1]))
        run = []
        if item[0] != "end":
            out.append(item)
    return out


def log_projection(events: list[Event]) -> list[tuple]:
    """What the model should be shown of these events, item by item."""
    items: list[tuple] = []
    for e in events:
        p = e.payload
        if e.type == "user.message":
            items += [("user_text", b.get("text")) for b in p.get("content") or []]
        elif e.type == "agent.message":
            items += [("assistant_text", b.get("text")) for b in p.get("content") or []]
        elif e.type == "agent.tool_use":
            items.append(
                ("tool_use", e.id, p.get("name"), json.dumps(p.get("input"), sort_keys=True))
            )
        elif e.type == "agent.tool_result":
            items.append(
                (
                    "tool_result",
                    p.get("tool_use_id"),
                    bool(p.get("is_error")),
                    json.dumps(_strip(p.get("content") or []), sort_keys=True),
                )
            )
    return _normalise(items)


def request_projection(messages: list[dict[str, Any]]) -> list[tuple]:
    items: list[tuple] = []
    for m in messages:
        for b in m.get("content") or []:
            kind = b.get("type")
            if kind == "text":
                role = "user_text" if m["role"] == "user" else "assistant_text"
                items.append((role, b.get("text")))
            elif kind == "tool_use":
                items.append(
                    (
                        "tool_use",
                        b.get("id"),
                        b.get("name"),
                        json.dumps(b.get("input"), sort_keys=True),
                    )
                )
            elif kind == "tool_result":
                content = b.get("content")
                items.append(
                    (
                        "tool_result",
                        b.get("tool_use_id"),
                        bool(b.get("is_error")),
                        json.dumps(_strip(content if content is not None else []), sort_keys=True),
                    )
                )
            else:
                items.append(("other", kind))
    return _normalise(items)


def check_session(
    run: Run, events: list[Event], positions: list[int], model: StormModel, budget: int
) -> tuple[list[Violation], dict[str, Any]]:
    found: list[Violation] = []
    sid = run.session_id

    def add(check: str, detail: str, at: int | None = None) -> None:
        found.append(Violation(sid, check, detail, context(events, at)))

    index = {e.id: i for i, e in enumerate(events)}
    stats: Counter[str] = Counter()

    # Same id twice (the primary key forbids it; checked all the same), gapless positions.
    for event_id, n in Counter(e.id for e in events).items():
        if n > 1:
            add("duplicate", f"event {event_id} recorded {n} times", index[event_id])
    if positions != list(range(1, len(events) + 1)):
        add("order", f"positions are not 1..{len(events)}: {positions[:5]}...")

    # Every message sent is recorded, once, in order.
    users = [i for i, e in enumerate(events) if e.type == "user.message"]
    texts = [_text(events[i]) for i in users]
    if texts != run.sent:
        missing = Counter(run.sent) - Counter(texts)
        extra = Counter(texts) - Counter(run.sent)
        if missing:
            add("lost", f"user messages sent but not recorded: {list(missing)}")
        if extra:
            at = next(i for i in users if _text(events[i]) in extra)
            add("duplicate", f"user messages recorded more than sent: {dict(extra)}", at)
        if not missing and not extra:
            add("order", f"user messages out of order: {texts}")

    # Spans: each start exactly one end, after it.
    ends: defaultdict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(events):
        if e.type == SPAN_END:
            ends[e.payload.get("model_request_start_id", "")].append(i)
    for i, e in enumerate(events):
        if e.type != SPAN_START:
            continue
        closing = ends.pop(e.id, [])
        if not closing:
            add("lost", "span.model_request_start without its span.model_request_end", i)
        elif len(closing) > 1:
            add("duplicate", f"span closed {len(closing)} times", closing[1])
        elif closing[0] < i:
            add("order", "span ended before it started", closing[0])
    for start_id, where in ends.items():
        add("order", f"span.model_request_end for unknown start {start_id}", where[0])

    # Tool uses: each exactly one result, after it.
    results: defaultdict[str, list[int]] = defaultdict(list)
    for i, e in enumerate(events):
        if e.type == "agent.tool_result":
            results[e.payload.get("tool_use_id", "")].append(i)
    for i, e in enumerate(events):
        if e.type != "agent.tool_use":
            continue
        got = results.pop(e.id, [])
        if not got:
            add("lost", f"agent.tool_use {e.payload.get('name')} has no agent.tool_result", i)
        elif len(got) > 1:
            add("duplicate", f"agent.tool_use has {len(got)} results", got[1])
        elif got[0] < i:
            add("order", "tool result before its tool use", got[0])
        else:
            r = events[got[0]]
            if r.payload.get("is_error"):
                stats["tool_errors"] += 1
                if INTERRUPTED in _text(r):
                    stats["tools_interrupted"] += 1
    for use_id, where in results.items():
        add("order", f"agent.tool_result for unknown tool use {use_id}", where[0])

    if run.sent and (not events or events[-1].type != IDLE):
        add(
            "stuck",
            f"the log ends with {events[-1].type if events else 'nothing'}, not idle",
            len(events) - 1,
        )

    # Turn by turn.
    for t, start in enumerate(users):
        end = users[t + 1] if t + 1 < len(users) else len(events)
        if t >= len(run.plan) or texts[t] != run.plan[t].message:
            continue
        check_turn(run, run.plan[t], events, start, end, add, model, budget, stats)

    # Every request the model saw agrees with what the log held before that step began.
    check_requests(run, events, users, model, add, stats)
    return found, dict(stats)


def check_turn(run, turn: Turn, events, start, end, add, model: StormModel, budget, stats) -> None:
    seg = list(range(start, end))
    kinds = [events[i].type for i in seg]
    idles = [i for i in seg if events[i].type == IDLE]
    if not idles:
        if end < len(events):
            add("order", f"turn {turn.index} never went idle before the next message", end - 1)
        return
    if len(idles) > 1:
        add("duplicate", f"turn {turn.index} went idle {len(idles)} times", idles[1])
    if idles[-1] != end - 1:
        add(
            "order",
            f"turn {turn.index}: events after its idle: {kinds[idles[-1] - start + 1 :]}",
            idles[-1] + 1,
        )
    stop = (events[idles[-1]].payload.get("stop_reason") or {}).get("type")
    if stop == "retries_exhausted":
        errs = [events[i] for i in seg if events[i].type == "session.error"]
        last = errs[-1].payload.get("error") if errs else None
        planned = [len(s.errors) for s in turn.steps]
        add(
            "exhausted",
            f"turn {turn.index} idled retries_exhausted; scripted errors per step {planned} "
            f"(budget {budget} attempts); last error: {_short(last, 240)}",
            idles[-1],
        )
    elif stop != "end_turn":
        add("unexpected", f"turn {turn.index} idled with {stop}", idles[-1])
    if any(events[i].type == "session.status_terminated" for i in seg):
        add(
            "unexpected",
            "session terminated",
            next(i for i in seg if events[i].type == "session.status_terminated"),
        )

    running = next((i for i in seg if events[i].type == RUNNING), None)
    work = [i for i in seg if events[i].type.startswith(("agent.", "span."))]
    if running is None:
        add("order", f"turn {turn.index} has no session.status_running", start)
    elif work and work[0] < running:
        add("order", f"turn {turn.index}: {events[work[0]].type} before status_running", work[0])
    if running is not None and running != start + 1:
        add("order", f"turn {turn.index}: status_running is not right after the message", start + 1)

    # Retries: session.error (retrying) -> status_rescheduled -> status_running, nothing between.
    errors = [i for i in seg if events[i].type == "session.error"]
    for i in seg:
        if events[i].type != RESCHEDULED:
            continue
        if events[i - 1].type != "session.error":
            add("order", "status_rescheduled not led by its session.error", i)
        after = next(
            (j for j in range(i + 1, end) if events[j].type.startswith("session.status_")), None
        )
        between = [
            events[j].type
            for j in range(i + 1, after or end)
            if events[j].type.startswith(("agent.", "span."))
        ]
        if after is None or events[after].type != RUNNING:
            add("order", "status_rescheduled not followed by status_running", i)
        if between:
            add("order", f"{between} while rescheduling", i)
    for i in errors:
        err = events[i].payload.get("error") or {}
        if (err.get("retry_status") or {}).get(
            "type"
        ) != "retrying" and stop != "retries_exhausted":
            add("unexpected", f"session.error {err.get('type')} {err.get('retry_status')}", i)
    served = sum(model.errors_served[(run.model, turn.index, s)] for s in range(len(turn.steps)))
    retrying = sum(
        1
        for i in errors
        if (events[i].payload.get("error") or {}).get("retry_status", {}).get("type") == "retrying"
    )
    if retrying > served:
        add(
            "duplicate",
            f"turn {turn.index}: {retrying} retrying errors recorded, model gave {served}",
            errors[0],
        )
    allowed = {ERROR_TYPES[r.status] for s in turn.steps for r in s.errors}
    for i in errors:
        kind = (events[i].payload.get("error") or {}).get("type")
        if kind not in allowed and stop != "retries_exhausted":
            add("unexpected", f"session.error {kind} not scripted for this turn", i)
    stats["session_errors"] += len(errors)

    # The answers: each step's texts and tool uses, once each, in order.
    want_texts = [x for s in turn.steps for x in s.texts]
    got_texts = [_text(events[i]) for i in seg if events[i].type == "agent.message"]
    _compare(add, turn, "agent.message", want_texts, got_texts, seg, events, "agent.message")
    want_tools = [(n, json.dumps(i, sort_keys=True)) for s in turn.steps for n, i in s.tools]
    got_tools = [
        (events[i].payload.get("name"), json.dumps(events[i].payload.get("input"), sort_keys=True))
        for i in seg
        if events[i].type == "agent.tool_use"
    ]
    _compare(add, turn, "agent.tool_use", want_tools, got_tools, seg, events, "agent.tool_use")
    starts = [i for i in seg if events[i].type == SPAN_START]
    if len(starts) != len(turn.steps):
        check = "duplicate" if len(starts) > len(turn.steps) else "lost"
        add(
            check,
            f"turn {turn.index}: {len(starts)} model spans for {len(turn.steps)} steps",
            starts[-1] if starts else start,
        )
    for i in seg:
        if events[i].type == SPAN_END and events[i].payload.get("is_error") and stop == "end_turn":
            add(
                "order", f"turn {turn.index}: a span closed with is_error in a turn that went on", i
            )

    # Spans nest: answers inside a span; tool results between spans.
    open_span = None
    for i in seg:
        kind = events[i].type
        if kind == SPAN_START:
            if open_span is not None:
                add("order", "a span started inside another", i)
            open_span = i
        elif kind == SPAN_END:
            if open_span is None:
                add("order", "span end outside a span", i)
            open_span = None
        elif kind in ("agent.message", "agent.tool_use") and open_span is None:
            add("order", f"{kind} outside its model span", i)
        elif kind == "agent.tool_result" and open_span is not None:
            add("order", "agent.tool_result inside a model span", i)

    # What the tools did.
    uses = {events[i].id: events[i] for i in seg if events[i].type == "agent.tool_use"}
    wrote_ok = False
    for i in seg:
        e = events[i]
        if e.type != "agent.tool_result" or e.payload.get("tool_use_id") not in uses:
            continue
        use = uses[e.payload["tool_use_id"]]
        name = use.payload.get("name")
        ok = not e.payload.get("is_error")
        text = _text(e)
        if name == "write" and ok:
            wrote_ok = True
        if name == "bash" and ok and turn.marker not in text:
            add("tool_output", f"bash echo result lacks {turn.marker}: {_short(text)}", i)
        if name == "read" and ok and wrote_ok and turn.marker not in text:
            add("tool_output", f"read result lacks what write wrote: {_short(text)}", i)
        # A read may miss the file only when the write before it did not report success (an
        # interrupted run may or may not have taken effect).
        missed = name == "read" and "no such file" in text and not wrote_ok
        if not ok and INTERRUPTED not in text and not missed:
            add("tool_output", f"{name} failed: {_short(text, 200)}", i)
        if missed:
            stats["reads_after_interrupted_write"] += 1


def _compare(add, turn, what, want, got, seg, events, etype) -> None:
    if want == got:
        return
    where = [i for i in seg if events[i].type == etype]
    missing = Counter(want) - Counter(got)
    extra = Counter(got) - Counter(want)
    if extra:
        add(
            "duplicate",
            f"turn {turn.index}: {what} recorded beyond the script: {_short(list(extra), 200)}",
            where[-1] if where else seg[0],
        )
    if missing:
        add(
            "lost",
            f"turn {turn.index}: {what} missing: {_short(list(missing), 200)}",
            where[-1] if where else seg[-1],
        )
    if not extra and not missing:
        add("order", f"turn {turn.index}: {what} out of order", where[0])


def check_requests(run: Run, events, users, model: StormModel, add, stats) -> None:
    """Request (t, s) is built after step s of turn t recorded its span start: it must show
    exactly the messages, answers, tool uses and results logged before that start.

    One shape may differ: an attempt that found no committed answer, then built its request
    just after another attempt committed, sees that answer with its tool uses unanswered (the
    transcript gives them interrupted results) and is located as the next step. Its answer
    cannot be recorded (the step is finished); it is counted, and the step must still have
    one request that agrees with the log."""
    span_starts: dict[tuple[int, int], int] = {}
    for t, start in enumerate(users):
        end = users[t + 1] if t + 1 < len(users) else len(events)
        for s, i in enumerate(i for i in range(start, end) if events[i].type == SPAN_START):
            span_starts[(t, s)] = i
    projections: dict[int, list[tuple]] = {}
    calls = model.calls.get(run.model, [])
    stats["model_requests"] += len(calls)
    matched: defaultdict[tuple[int, int], bool] = defaultdict(bool)
    first_bad: dict[tuple[int, int], str] = {}
    for call in calls:
        if call.turn is None:
            add("transcript", "a request with no turn mark in it")
            continue
        key = (call.turn, call.step)
        at = span_starts.get(key)
        if at is None:
            stats["requests_without_step"] += 1
            continue
        if at not in projections:
            projections[at] = log_projection(events[:at])
        want = projections[at]
        got = request_projection(call.messages)
        if got == want:
            matched[key] = True
            continue
        last = call.messages[-1] if call.messages else {}
        dangling = last.get("role") == "user" and all(
            b.get("type") == "tool_result" and b.get("content") == INTERRUPTED_TOOL_RESULT
            for b in last.get("content") or []
        )
        if dangling:
            stats["stale_requests"] += 1
            matched.setdefault(key, False)
            continue
        first = next(
            (k for k, (a, b) in enumerate(zip(want, got, strict=False)) if a != b),
            min(len(want), len(got)),
        )
        first_bad.setdefault(
            key,
            f"request for turn {call.turn} step {call.step} differs from the log at item "
            f"{first}: log {_short(want[first : first + 2], 160)} / request "
            f"{_short(got[first : first + 2], 160)} (log {len(want)} items, request {len(got)})",
        )
        matched.setdefault(key, False)
    shown = {
        item[1]
        for call in calls
        for item in request_projection(call.messages)
        if item[0] == "user_text"
    }
    for i in users:
        if _text(events[i]) not in shown:
            add("lost", "user.message recorded, but no model request ever carried it", i)
    for key, ok in matched.items():
        if not ok:
            add(
                "transcript",
                first_bad.get(
                    key, f"no request for turn {key[0]} step {key[1]} agrees with the log"
                ),
                span_starts.get(key),
            )
    for key, detail in first_bad.items():
        if matched.get(key):
            add("transcript", detail + " (another request of that step agreed)", span_starts[key])


# ---- the whole run -----------------------------------------------------------------------------


async def temporal_snapshot(client: ReverieClient, session_id: str) -> dict[str, Any]:
    """For a stuck session: what Temporal says is pending, and the end of its history."""
    out: dict[str, Any] = {}
    try:
        handle = client.temporal.get_workflow_handle(session_id)
        d = await handle.describe()
        raw = d.raw_description
        out["status"] = str(d.status)
        out["pending_activities"] = [
            {
                "type": p.activity_type.name,
                "attempt": p.attempt,
                "state": int(p.state),
                "last_failure": p.last_failure.message[:300],
            }
            for p in raw.pending_activities
        ]
        if raw.HasField("pending_workflow_task"):
            out["pending_workflow_task"] = {
                "attempt": raw.pending_workflow_task.attempt,
                "state": int(raw.pending_workflow_task.state),
            }
        tail: list[str] = []
        async for ev in handle.fetch_history_events():
            name = EventType.Name(ev.event_type).removeprefix("EVENT_TYPE_")
            if ev.HasField("workflow_task_failed_event_attributes"):
                name += f" ({ev.workflow_task_failed_event_attributes.failure.message[:200]})"
            if ev.HasField("activity_task_timed_out_event_attributes"):
                name += f" ({ev.activity_task_timed_out_event_attributes.failure.message[:120]})"
            tail.append(name)
        out["history_tail"] = tail[-15:]
        out["history_events"] = len(tail)
    except Exception as error:
        out["error"] = f"{type(error).__name__}: {error}"
    return out


async def history_lines(
    client: ReverieClient,
    session_id: str,
    origin: datetime,
    begin: datetime | None = None,
    end: datetime | None = None,
    *,
    pids: dict[int, str] | None = None,
) -> list[str]:
    """The session's Temporal history (every run), in seconds from `origin`, markers and search
    attribute upserts left out; worker identities named by incarnation (`A3`, `B7*` = hooked)."""
    out: list[tuple[float, str]] = []
    scheduled: dict[int, str] = {}

    def who(identity: str) -> str:
        pid = identity.split("@", 1)[0]
        return (pids or {}).get(int(pid), identity) if pid.isdigit() else identity

    try:
        async for execution in client.temporal.list_workflows(f"WorkflowId = '{session_id}'"):
            handle = client.temporal.get_workflow_handle(session_id, run_id=execution.run_id)
            async for ev in handle.fetch_history_events():
                name = EventType.Name(ev.event_type).removeprefix("EVENT_TYPE_")
                if name in ("MARKER_RECORDED", "UPSERT_WORKFLOW_SEARCH_ATTRIBUTES"):
                    continue
                if ev.HasField("activity_task_scheduled_event_attributes"):
                    scheduled[ev.event_id] = (
                        ev.activity_task_scheduled_event_attributes.activity_type.name
                    )
                when = ev.event_time.ToDatetime().replace(tzinfo=origin.tzinfo)
                if begin is not None and (when - begin).total_seconds() < -1:
                    continue
                if end is not None and (when - end).total_seconds() > 1:
                    continue
                extra = ""
                if ev.HasField("activity_task_started_event_attributes"):
                    a = ev.activity_task_started_event_attributes
                    extra = (
                        f"{scheduled.get(a.scheduled_event_id, '?')} attempt {a.attempt} "
                        f"on {who(a.identity)}"
                    )
                elif ev.HasField("activity_task_timed_out_event_attributes"):
                    a = ev.activity_task_timed_out_event_attributes
                    extra = f"{scheduled.get(a.scheduled_event_id, '?')} {a.failure.message[:80]}"
                elif ev.HasField("activity_task_failed_event_attributes"):
                    a = ev.activity_task_failed_event_attributes
                    extra = f"{scheduled.get(a.scheduled_event_id, '?')} {a.failure.message[:60]}"
                elif ev.HasField("activity_task_completed_event_attributes"):
                    a = ev.activity_task_completed_event_attributes
                    extra = scheduled.get(a.scheduled_event_id, "?")
                elif ev.HasField("activity_task_scheduled_event_attributes"):
                    extra = scheduled[ev.event_id]
                elif ev.HasField("workflow_task_scheduled_event_attributes"):
                    a = ev.workflow_task_scheduled_event_attributes
                    extra = f"attempt {a.attempt} on {a.task_queue.name[:24]}"
                elif ev.HasField("workflow_task_started_event_attributes"):
                    extra = f"on {who(ev.workflow_task_started_event_attributes.identity)}"
                elif ev.HasField("workflow_task_completed_event_attributes"):
                    extra = f"by {who(ev.workflow_task_completed_event_attributes.identity)}"
                elif ev.HasField("workflow_task_timed_out_event_attributes"):
                    kind = ev.workflow_task_timed_out_event_attributes.timeout_type
                    extra = {1: "START_TO_CLOSE", 2: "SCHEDULE_TO_START"}.get(kind, str(kind))
                elif ev.HasField("workflow_task_failed_event_attributes"):
                    a = ev.workflow_task_failed_event_attributes
                    extra = f"cause {a.cause} {a.failure.message[:100]}"
                elif ev.HasField("timer_started_event_attributes"):
                    a = ev.timer_started_event_attributes
                    extra = f"{a.start_to_fire_timeout.ToTimedelta().total_seconds():.1f} s"
                offset = (when - origin).total_seconds()
                out.append((offset, f"{offset:8.2f} {name} {extra}".rstrip()))
    except Exception as error:
        out.append((0.0, f"(history unavailable: {type(error).__name__}: {error})"))
    return [line for _, line in sorted(out, key=lambda item: item[0])]


async def slow_turn_timeline(
    client: ReverieClient, run: Run, events: list[Event], turn: int, pids: dict[int, str]
) -> dict[str, Any]:
    """Where a slow turn's time went: its events, and what Temporal recorded meanwhile (all
    runs of the session), in seconds from the turn's message."""
    users = [e for e in events if e.type == "user.message"]
    if turn >= len(users):
        return {}
    begin = users[turn].processed_at
    end_at = users[turn + 1].processed_at if turn + 1 < len(users) else events[-1].processed_at
    log = [
        f"{(e.processed_at - begin).total_seconds():8.2f} {describe(e)}"
        for e in events
        if begin <= e.processed_at <= end_at
    ]
    return {
        "session_id": run.session_id,
        "turn": turn,
        "kind": run.plan[turn].kind,
        "seconds": round(run.turn_seconds[turn], 1),
        "log": log,
        "temporal": await history_lines(client, run.session_id, begin, begin, end_at, pids=pids),
    }


STATUS_OF_EVENT = {
    "session.status_idle": "idle",
    "session.status_running": "running",
    "session.status_rescheduled": "rescheduling",
    "session.status_terminated": "terminated",
}


async def status_agreement(client: ReverieClient, session_id: str) -> dict[str, str]:
    """What each of the four says the status is (the README: they always agree)."""
    handle = client.temporal.get_workflow_handle(session_id)
    seen: dict[str, str] = {}
    for _ in range(40):
        state = await handle.query(SessionWorkflow.state)
        attribute = (await handle.describe()).typed_search_attributes.get(SESSION_STATUS)
        row = await client.get_session(session_id)
        last = await client.list_events(
            session_id, types=list(STATUS_OF_EVENT), order="desc", limit=1
        )
        seen = {
            "workflow": state.status,
            "search attribute": attribute or "",
            "row": row.status,
            "last status event": STATUS_OF_EVENT.get(last[0].type, "") if last else "",
            "queued": str(len(state.queued) + len(state.held_input_ids)),
        }
        if set(seen.values()) == {"idle", "0"}:
            break
        await asyncio.sleep(0.1)
    return seen


def scan_logs(folder: Path) -> dict[str, Any]:
    """What the worker logs say went wrong (information, not verdicts): activities completed
    as failed by type, the exceptions tracebacks ended with, workflow task failures."""
    failed = re.compile(r"Completing activity as failed .*'activity_type': '(\w+)'")
    exception = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Failure|Timeout)\w*)\b:?(.*)")
    counts: Counter[str] = Counter()
    for log in sorted(folder.glob("worker-*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if (m := failed.search(line)) is not None:
                counts[f"activity failed: {m.group(1)}"] += 1
            elif (m := exception.match(line)) is not None:
                what = re.sub(r"[0-9a-f]{16,}|\d+", "N", m.group(2).strip())[:90]
                counts[f"exception: {m.group(1)}: {what}"] += 1
            elif "ondeterminis" in line or "Failed activation" in line or "task failed" in line:
                counts[f"workflow: {line[24:140]}"] += 1
    return dict(counts.most_common())


async def main_async(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    kill_rng = random.Random(seed + 1)
    t0 = time.monotonic()
    t0_wall = datetime.now(UTC)
    tmp = Path(tempfile.mkdtemp(prefix="reverie-storm-"))
    logs = tmp / "logs"
    logs.mkdir()
    phases: dict[str, float] = {}
    budget = args.max_attempts
    async with contextlib.AsyncExitStack() as exits:
        exits.callback(shutil.rmtree, tmp, True)
        temporal = TemporalDevServer(
            db_file=None,
            port=free_port(),
            choose_ports=True,
            ui_port=None,
            extra_dynamic_config=(
                f"limit.historyCount.suggestContinueAsNew={CONTINUE_AS_NEW_EVENTS}",
            ),
            log_file=logs / "temporal.log",
        )
        exits.callback(temporal.stop)
        postgres = EmbeddedPostgres(tmp / "pg" / "data")
        exits.callback(postgres.stop)
        booted = await asyncio.gather(
            asyncio.to_thread(temporal.start),
            asyncio.to_thread(postgres.start),
            return_exceptions=True,
        )
        for outcome in booted:
            if isinstance(outcome, BaseException):
                raise outcome
        base = str(booted[1])
        admin = await asyncpg.connect(base)
        await admin.execute('CREATE DATABASE "reverie_storm"')
        await admin.close()
        head, _, query = base.partition("?")
        database_url = head.rsplit("/", 1)[0] + "/reverie_storm" + (f"?{query}" if query else "")

        model = StormModel()
        await model.start()
        exits.push_async_callback(model.stop)
        await model.start_frozen_site()

        settings = Settings(
            TEMPORAL_ADDRESS=temporal.address,
            TEMPORAL_NAMESPACE="default",
            DATABASE_URL=database_url,
            ANTHROPIC_API_KEY="test-key",
            ANTHROPIC_BASE_URL=model.base_url,
            REVERIE_HOME=tmp / "home",
            REVERIE_TASK_QUEUE=f"storm-{uuid.uuid4().hex[:6]}",
            REVERIE_MODEL_MAX_ATTEMPTS=budget,
            REVERIE_MODEL_MAX_BACKOFF_SECONDS=1,
            REVERIE_MODEL_TIMEOUT_SECONDS=30,
            REVERIE_SANDBOX="none",
        )
        client = await ReverieClient.connect(settings)  # applies the migrations
        exits.push_async_callback(client.close)
        workers = Workers(settings, model, logs, t0)
        exits.push_async_callback(workers.stop_all)
        await workers.start("A")
        await workers.start("B")
        phases["startup_s"] = time.monotonic() - t0

        options = SessionOptions(
            model_max_attempts=budget,
            model_timeout_seconds=30,
            heartbeat_timeout_seconds=args.heartbeat,
        )
        runs: list[Run] = []
        for n in range(args.sessions):
            name = f"storm-{n:03d}-{uuid.uuid4().hex[:6]}"
            plan = plan_session(rng, name, n, args.turns, budget, args)
            model.plans[name] = plan
            runs.append(Run(n, name, plan, t0=t0))

        print(
            f"storm: {args.sessions} sessions x {args.turns} turns, seed {seed}, "
            f"budget {budget} model attempts, kill every {args.kill_min}-{args.kill_max} s; "
            f"stack up in {phases['startup_s']:.1f} s",
            flush=True,
        )
        storm_start = time.monotonic()
        stop = asyncio.Event()
        killing = asyncio.create_task(killer(workers, stop, kill_rng, args))
        drivers = [asyncio.create_task(drive(client, run, options, args)) for run in runs]
        progress = asyncio.create_task(report_progress(runs, workers, storm_start))
        try:
            await asyncio.wait_for(asyncio.gather(*drivers), args.storm_timeout)
        except TimeoutError:
            for task in drivers:
                task.cancel()
            await asyncio.gather(*drivers, return_exceptions=True)
        progress.cancel()
        stop.set()
        restarts = await killing
        await asyncio.gather(*restarts, return_exceptions=True)
        phases["storm_s"] = time.monotonic() - storm_start

        # Calm: a hooked worker is replaced, both slots are up, and every session must settle.
        for slot in ("A", "B"):
            live = workers.live.get(slot)
            if live is not None and live.hooked:
                await workers.kill(slot)
            if slot not in workers.live:
                await workers.start(slot)
        settle_start = time.monotonic()
        stuck_info: dict[str, dict[str, Any]] = {}

        async def settle(run: Run) -> None:
            if not run.session_id:
                return
            try:
                await client.wait_until_settled(run.session_id, timeout=args.settle_timeout)
            except TimeoutError as error:
                stuck_info[run.session_id] = {"error": str(error)}

        await asyncio.gather(*(settle(run) for run in runs))
        await asyncio.sleep(args.quiet)  # anything recorded after this is a late write
        phases["settle_s"] = time.monotonic() - settle_start

        pids = {i.pid: f"{i.slot}{i.number}{'*' if i.hooked else ''}" for i in workers.history}
        violations: list[Violation] = []
        kept_events: dict[str, list[Event]] = {}
        sessions_out: list[dict[str, Any]] = []
        totals: Counter[str] = Counter()
        for run in runs:
            row: dict[str, Any] = {
                "n": run.number,
                "session_id": run.session_id,
                "model": run.model,
                "turns": [
                    t.kind
                    + ("+errors" if any(s.errors for s in t.steps) else "")
                    + ("+slow" if t.slow else "")
                    for t in run.plan
                ],
                "sent": len(run.sent),
                "send_errors": run.send_errors,
                "turn_seconds": [round(x, 2) for x in run.turn_seconds],
            }
            if not run.session_id:
                violations.append(
                    Violation(f"(session {run.number})", "unexpected", run.error or "not created")
                )
                sessions_out.append(row)
                continue
            if run.error:
                violations.append(Violation(run.session_id, "unexpected", run.error))
            if run.send_errors:
                totals["send_errors"] += len(run.send_errors)
                violations.append(
                    Violation(
                        run.session_id,
                        "send",
                        f"{len(run.send_errors)} failed send(s): " + " | ".join(run.send_errors),
                    )
                )
            events = await events_of(client, run.session_id)
            positions = [
                r["position"]
                for r in await client.pool.fetch(
                    "SELECT position FROM events WHERE session_id = $1 ORDER BY position",
                    run.session_id,
                )
            ]
            kept_events[run.session_id] = events
            found, stats = check_session(run, events, positions, model, budget)
            if run.session_id in stuck_info:
                snapshot = await temporal_snapshot(client, run.session_id)
                found.append(
                    Violation(
                        run.session_id,
                        "stuck",
                        f"not settled {args.settle_timeout:.0f} s after the storm "
                        f"({len(run.sent)}/{len(run.plan)} turns sent); "
                        f"temporal: {_short(snapshot, 900)}",
                        context(events, len(events) - 1, 8),
                    )
                )
                row["temporal"] = snapshot
            elif len(run.sent) < len(run.plan) and not run.error:
                # Cut short by the storm's deadline, then settled: slow, not stuck.
                totals["sessions_cut_short"] += 1
            try:
                agreed = await status_agreement(client, run.session_id)
            except Exception as error:
                agreed = {"error": f"{type(error).__name__}: {error}"}
            if set(agreed.values()) != {"idle", "0"}:
                found.append(
                    Violation(run.session_id, "status", f"status disagrees or not idle: {agreed}")
                )
            try:
                run_id = (
                    await client.temporal.get_workflow_handle(run.session_id).describe()
                ).run_id
            except Exception:
                run_id = run.first_run_id
            row["continued_as_new"] = run_id != run.first_run_id
            totals["continued_as_new"] += int(row["continued_as_new"])
            if found or run.send_errors:
                row["temporal_history"] = await history_lines(
                    client, run.session_id, t0_wall, pids=pids
                )
            row["events"] = len(events)
            row["stats"] = stats
            row["violations"] = len(found)
            for key, value in stats.items():
                totals[key] += value
            totals["events"] += len(events)
            totals["turns_done"] += len(run.turn_seconds)
            violations.extend(found)
            sessions_out.append(row)

        phases["total_s"] = time.monotonic() - t0
        by_check = Counter(v.check for v in violations)
        sessions_hit = {
            check: len({v.session_id for v in violations if v.check == check}) for check in CHECKS
        }
        steps_planned = sum(len(t.steps) for run in runs for t in run.plan)
        storm = {
            "kills": workers.kills,
            "pauses": workers.pauses,
            "worker_starts": len(workers.history),
            "hooked_starts": sum(1 for i in workers.history if i.hooked),
            "answers_to_hooked_workers": sum(model.frozen_answers.values()),
            "steps_with_answer_served_again": sum(
                1 for n in model.answers_served.values() if n > 1
            ),
            "model_requests": sum(len(c) for c in model.calls.values()),
            "errors_served": sum(model.errors_served.values()),
            "errors_planned": sum(len(s.errors) for run in runs for t in run.plan for s in t.steps),
            "steps_planned": steps_planned,
            "unplanned_requests": len(model.unplanned),
            **dict(totals),
        }
        slowest = sorted(
            ((x, run, t) for run in runs for t, x in enumerate(run.turn_seconds)),
            key=lambda item: -item[0],
        )[: args.slow_turns]
        slow = [
            await slow_turn_timeline(client, run, kept_events.get(run.session_id, []), t, pids)
            for _, run, t in slowest
        ]
        durations = sorted(x for run in runs for x in run.turn_seconds)
        if durations:
            storm["turn_seconds"] = {
                "p50": round(durations[len(durations) // 2], 1),
                "p90": round(durations[int(len(durations) * 0.9)], 1),
                "max": round(durations[-1], 1),
            }
        logs_found = scan_logs(logs)
        print_report(
            args, seed, runs, storm, by_check, sessions_hit, violations, phases, logs_found
        )

        out = {
            "config": {
                "sessions": args.sessions,
                "turns": args.turns,
                "seed": seed,
                "model_max_attempts": budget,
                "heartbeat_timeout_seconds": args.heartbeat,
                "kill_every_s": [args.kill_min, args.kill_max],
                "restart_after_s": [args.restart_min, args.restart_max],
                "freeze_share": args.freeze_share,
                "pause_share": args.pause_share,
                "p_error": args.p_error,
                "p_slow": args.p_slow,
                "continue_as_new_events": CONTINUE_AS_NEW_EVENTS,
                "temporal_flags": temporal.flags(),
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
            },
            "phases": {k: round(v, 1) for k, v in phases.items()},
            "verdict": {
                check: {
                    "violations": by_check.get(check, 0),
                    "sessions": sessions_hit[check],
                    "pass": by_check.get(check, 0) == 0,
                    "what": what,
                }
                for check, what in CHECKS.items()
            },
            "storm": storm,
            "violations": [v.__dict__ for v in violations],
            "slowest_turns": slow,
            "sessions": sessions_out,
            "workers": [
                {k: v for k, v in i.__dict__.items() if k != "process"} for i in workers.history
            ],
            "worker_logs": logs_found,
        }
        path = Path(args.out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=2, default=str))
        # Keep the logs of this run for diagnosis (bench/results/ is git-ignored).
        await workers.stop_all()
        shutil.rmtree(LOG_COPY, ignore_errors=True)
        shutil.copytree(logs, LOG_COPY)
        print(f"\nwrote {path}; worker and Temporal logs in {LOG_COPY}")
        return 1 if violations else 0


async def report_progress(runs: list[Run], workers: Workers, started: float) -> None:
    while True:
        await asyncio.sleep(15)
        done = sum(len(r.turn_seconds) for r in runs)
        total = sum(len(r.plan) for r in runs)
        print(
            f"  {time.monotonic() - started:5.0f} s: {done}/{total} turns idle, "
            f"{workers.kills} kills, {len(workers.history)} worker starts",
            flush=True,
        )


def print_report(args, seed, runs, storm, by_check, sessions_hit, violations, phases, logs_found):
    print()
    print(f"{'check':<66} {'verdict':<7} {'found':>5} {'sessions':>8}")
    print("-" * 90)
    for check, what in CHECKS.items():
        n = by_check.get(check, 0)
        print(f"{what:<66} {'PASS' if n == 0 else 'FAIL':<7} {n:>5} {sessions_hit[check]:>8}")
    print("-" * 90)
    turns = sum(len(r.plan) for r in runs)
    print(
        f"{len(runs)} sessions, {storm.get('turns_done', 0)}/{turns} turns idle, "
        f"{storm['steps_planned']} model steps planned, {storm['model_requests']} model requests, "
        f"{storm['errors_served']} 429/529 served ({storm.get('session_errors', 0)} recorded), "
        f"{storm.get('events', 0)} events"
    )
    print(
        f"{storm['kills']} SIGKILLs, {storm['pauses']} SIGSTOP pauses, "
        f"{storm['worker_starts']} worker starts "
        f"({storm['hooked_starts']} with the freeze hook, which got "
        f"{storm['answers_to_hooked_workers']} answers), "
        f"{storm['steps_with_answer_served_again']} steps answered more than once, "
        f"{storm.get('tools_interrupted', 0)} tool runs interrupted, "
        f"{storm.get('continued_as_new', 0)} sessions continued as new, "
        f"{storm.get('send_errors', 0)} send errors, "
        f"{storm.get('sessions_cut_short', 0)} sessions cut short by the storm deadline"
    )
    if "turn_seconds" in storm:
        t = storm["turn_seconds"]
        print(f"turn time (send to idle): p50 {t['p50']} s, p90 {t['p90']} s, max {t['max']} s")
    print(
        "time: "
        + ", ".join(f"{k.removesuffix('_s')} {v:.0f} s" for k, v in phases.items())
        + f"; seed {seed}"
    )
    if logs_found:
        print("worker logs:")
        for what, n in list(logs_found.items())[:12]:
            print(f"  {n:>5}  {what}")
    if violations:
        print(f"\n{len(violations)} violation(s):")
        for v in violations[: args.show]:
            print(f"\n[{v.check}] {v.session_id}: {v.detail}")
            for line in v.context:
                print(f"    {line}")
        if len(violations) > args.show:
            print(f"\n... {len(violations) - args.show} more in the JSON")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=30)
    p.add_argument("--turns", type=int, default=4)
    p.add_argument("--quick", action="store_true", help="8 sessions, 3 turns")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--max-attempts", type=int, default=4, help="REVERIE_MODEL_MAX_ATTEMPTS")
    p.add_argument("--heartbeat", type=float, default=3.0, help="heartbeat timeout (s)")
    p.add_argument("--kill-min", type=float, default=1.0)
    p.add_argument("--kill-max", type=float, default=4.0)
    p.add_argument(
        "--pause-share",
        type=float,
        default=0.0,
        help="share of the killer's blows that SIGSTOP a worker past the heartbeat timeout "
        "(then SIGCONT) instead of killing it",
    )
    p.add_argument("--restart-min", type=float, default=0.3)
    p.add_argument("--restart-max", type=float, default=1.5)
    p.add_argument(
        "--freeze-share",
        type=float,
        default=0.5,
        help="share of slot B's restarts that come with the freeze-after-commit hook",
    )
    p.add_argument("--p-error", type=float, default=0.3, help="share of steps with a 429/529 storm")
    p.add_argument("--p-slow", type=float, default=0.2, help="share of slow answers")
    p.add_argument(
        "--storm-timeout", type=float, default=200.0, help="drivers stop sending after this"
    )
    p.add_argument("--settle-timeout", type=float, default=60.0)
    p.add_argument("--quiet", type=float, default=3.0, help="wait after settling, for late writes")
    p.add_argument("--show", type=int, default=40, help="violations printed")
    p.add_argument(
        "--slow-turns", type=int, default=3, help="slowest turns whose timeline goes in the JSON"
    )
    p.add_argument("--out", default=str(DEFAULT_OUT))
    args = p.parse_args(argv)
    if args.quick:
        args.sessions, args.turns = min(args.sessions, 8), 3
    if args.max_attempts < 2:
        p.error("--max-attempts must be at least 2 (storms need room for one error)")
    return args


def main() -> None:
    args = parse_args()
    try:
        code = asyncio.run(main_async(args))
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
