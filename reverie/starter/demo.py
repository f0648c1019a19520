"""`make demo`: the embedded stack, one agent, one session, and every event as it is recorded.

Runs offline by default (a deterministic simulated model stands in when no API key is set) and
stops everything it started on the way out, also on Ctrl-C or error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import sys

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from reverie import event_loop
from reverie.connections import running_stack
from reverie.models.events import Event
from reverie.service.client import ReverieClient
from reverie.settings import Settings, load_settings
from reverie.simulated_model import SimulatedModelServer
from reverie.starter.render import safe
from reverie.starter.stack import (
    EmbeddedPostgres,
    TemporalDevServer,
    free_port,
    remove_stack_file,
    secure_home,
    write_stack_file,
)
from reverie.store.pool import connect
from reverie.worker import build_worker, ensure_search_attributes

DEFAULT_MODEL = "claude-sonnet-4-5"
SYSTEM_PROMPT = "You are Reverie's demo agent: friendly, brief and precise."
MESSAGES = (
    "Hello! Please introduce yourself in one sentence.",
    "Please list files in your workspace.",
)
# The built-in tools, all enabled (bash runs sandboxed under bubblewrap where available;
# web_search answers that no provider is set up unless REVERIE_WEB_SEARCH_URL names one).
TOOLS = [{"type": "agent_toolset_20260401"}]
TEMPORAL_PORT, UI_PORT = 7233, 8233
SETTLE_TIMEOUT = 300.0
PREVIEW = 100


def port_is_free(port: int) -> bool:
    """Whether nothing listens on this loopback port (someone's dev server may hold 7233)."""
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def pick_ports() -> tuple[int, int]:
    """The usual ports when both are free, else fresh ones, said out loud."""
    if port_is_free(TEMPORAL_PORT) and port_is_free(UI_PORT):
        return TEMPORAL_PORT, UI_PORT
    port, ui_port = free_port(), free_port()
    print(f"ports {TEMPORAL_PORT}/{UI_PORT} are taken; using {port} (Temporal) and {ui_port} (UI)")
    return port, ui_port


def refuse_if_stack_running(settings: Settings) -> None:
    """A `reverie up` under this home owns its Temporal file; a second server would fight it."""
    pid = running_stack(settings).get("pid")
    with contextlib.suppress(ProcessLookupError, TypeError):
        os.kill(pid, 0)
        raise SystemExit(
            f"`reverie up` (pid {pid}) is running under {settings.home}; stop it first, "
            "or set REVERIE_HOME to another folder"
        )


def demo_model() -> str:
    """The agent's model; the simulated server answers to any name."""
    return os.environ.get("REVERIE_DEMO_MODEL", DEFAULT_MODEL)


async def start_model(settings: Settings, stack: contextlib.AsyncExitStack) -> str | None:
    """The simulated model's URL when no real one is configured, else None."""
    model = demo_model()
    if settings.anthropic_api_key or settings.anthropic_base_url:
        target = settings.anthropic_base_url or "the Anthropic API"
        print(f"model: {model} at {target}")
        return None
    server = SimulatedModelServer()
    stack.push_async_callback(server.stop)
    await server.start()
    print(f"model: SIMULATED (deterministic, no API key set) at {server.base_url}")
    return server.base_url


def render(event: Event) -> str:
    """A short, one-line reading of an event's payload."""
    payload = event.payload
    if "content" in payload:
        blocks = payload["content"] or []
        blocks = [{"text": blocks}] if isinstance(blocks, str) else blocks
        text = " ".join(str(b.get("text", f"[{b.get('type')}]")) for b in blocks)
        text = " ".join(text.split())  # one line per event, whatever the output held
        return text if len(text) <= PREVIEW else text[: PREVIEW - 1] + "…"
    if "stop_reason" in payload:
        reason = payload["stop_reason"]
        return f"stop_reason={reason.get('type') if isinstance(reason, dict) else reason}"
    if "error" in payload:
        error = payload["error"] or {}
        return f"error {error.get('type')}: {error.get('message')}"
    if "model_usage" in payload:
        return " ".join(f"{k}={v}" for k, v in payload["model_usage"].items() if v)
    if "name" in payload:
        return f"{payload['name']} {json.dumps(payload.get('input'))[:PREVIEW]}"
    return ""


async def run_session(reverie: ReverieClient, model: str) -> str:
    """Create the agent and session; send each message and print events until it settles."""
    agent = await reverie.create_agent(
        {"name": "demo-agent", "model": model, "system": SYSTEM_PROMPT, "tools": TOOLS}
    )
    session = await reverie.create_session({"agent": agent.id, "title": "Reverie demo"})
    print(f"agent {agent.id}, session {session.id}")
    seen = 0
    for message in MESSAGES:
        print(f"> {message}")
        await reverie.send_message(session.id, message)
        async for event in reverie.follow_events(session.id, after=seen, timeout=SETTLE_TIMEOUT):
            seen += 1
            stamp = event.processed_at.astimezone().strftime("%H:%M:%S.%f")[:-3]
            print(f"  {stamp}  {event.type:<28} {safe(render(event))}".rstrip())
    return session.id


async def report(reverie: ReverieClient, session_id: str, ui: str | None) -> bool:
    """Print where the session ended up and where to look at it; True when it is idle."""
    session = await reverie.get_session(session_id)
    usage = session.usage
    print(f"session status: {session.status}")
    print(
        f"usage: input={usage.input_tokens} output={usage.output_tokens} "
        f"cache_write={usage.cache_creation.ephemeral_5m_input_tokens} "
        f"cache_read={usage.cache_read_input_tokens} turns={session.stats.turns}"
    )
    if ui:
        print(f"workflow in the Temporal Web UI: {ui}/namespaces/default/workflows/{session_id}")
    return session.status == "idle"


async def start_stack(
    settings: Settings, stack: contextlib.AsyncExitStack
) -> tuple[Settings, str | None]:
    """Temporal, Postgres and the model, each stop registered before its start: the worker's
    settings pointing at them, and the Web UI address."""
    port, ui_port = pick_ports()
    temporal = TemporalDevServer(
        settings.temporal_data_file,
        port,
        ui_port,
        log_file=settings.home / "temporal.log",
        choose_ports=True,
    )
    stack.callback(temporal.stop)
    print(f"starting Temporal dev server on {temporal.address} (UI {temporal.ui_address})")
    temporal.start()  # blocking on purpose: a Ctrl-C lands after it, so stop() sees it all
    database_url = settings.database_url
    if database_url:
        print("using PostgreSQL at DATABASE_URL")
    else:
        postgres = EmbeddedPostgres(settings.postgres_dir)
        stack.callback(postgres.stop)
        print(f"starting embedded PostgreSQL in {settings.postgres_dir}")
        database_url = postgres.start()
    # Written down so `reverie` commands in another terminal find this stack while it runs.
    write_stack_file(
        settings.stack_file, temporal_address=temporal.address, database_url=database_url
    )
    stack.callback(remove_stack_file, settings.stack_file)
    updates = {"temporal_address": temporal.address, "database_url": database_url}
    if model_url := await start_model(settings, stack):
        updates["anthropic_base_url"] = model_url
    return settings.model_copy(update=updates), temporal.ui_address


async def start_worker(settings: Settings, stack: contextlib.AsyncExitStack) -> ReverieClient:
    """An in-process worker, and a client sharing its Temporal connection and pool."""
    client = await Client.connect(
        settings.temporal_address or "", data_converter=pydantic_data_converter
    )
    await ensure_search_attributes(client)
    pool = await connect(settings.database_url or "")
    stack.push_async_callback(pool.close)
    await stack.enter_async_context(build_worker(client, pool, settings))
    print(f"worker running on task queue {settings.task_queue!r}")
    return ReverieClient(client, pool, settings)


async def demo() -> bool:
    """Start everything, run one session, report; the exit stack tears down in reverse."""
    settings = load_settings()
    refuse_if_stack_running(settings)
    secure_home(settings.home, embedded_postgres=not settings.database_url)
    print(f"REVERIE_HOME: {settings.home}")
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(print, "stopped the worker, model server, PostgreSQL and Temporal")
        worker_settings, ui_address = await start_stack(settings, stack)
        reverie = await start_worker(worker_settings, stack)
        session_id = await run_session(reverie, demo_model())
        idle = await report(reverie, session_id, ui_address)
        print(
            f"Temporal's data stays in {settings.temporal_data_file}: "
            "`reverie up` shows this workflow again later."
        )
    return idle


def main() -> int:
    """Entry point; the exit code says whether the session reached idle."""
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # make may pipe us
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        idle = event_loop.run(demo())
    except KeyboardInterrupt:
        print("interrupted")
        return 130
    print("done." if idle else "the session did not reach idle")
    return 0 if idle else 1


if __name__ == "__main__":
    sys.exit(main())
