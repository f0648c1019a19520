"""`reverie up`: the embedded stack in the foreground, until Ctrl-C or SIGTERM.

Starts, on loopback, the Temporal dev server, PostgreSQL from `pgserver` (unless DATABASE_URL is
set; password-protected, see `stack.EmbeddedPostgres`) and a worker, then writes the stack file
(0600: its database URL carries the password) so commands in other shells find them. REVERIE_HOME
is made private first. Everything started here is stopped here, in reverse order, and the stack
file goes with it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

from temporalio.client import Client as TemporalClient

from reverie.connections import connect_database, connect_temporal, running_stack
from reverie.models.errors import ReverieError
from reverie.settings import Settings
from reverie.starter.stack import (
    EmbeddedPostgres,
    TemporalDevServer,
    redact_password,
    remove_stack_file,
    secure_home,
    write_stack_file,
)

DEFAULT_PORT = 7233


class StackError(ReverieError):
    """The stack cannot start: a person has to act (stop the other stack, free a port)."""

    error_type = "stack_error"


@dataclass
class UpOptions:
    port: int = DEFAULT_PORT
    # None: the dev server's own default, port + 1000; 0: no Web UI.
    ui_port: int | None = None
    worker: bool = True
    json: bool = False
    # None: REVERIE_API_PORT; 0: no HTTP API.
    api_port: int | None = None

    @property
    def resolved_ui_port(self) -> int | None:
        return self.port + 1000 if self.ui_port is None else (self.ui_port or None)


def stack_owner(settings: Settings) -> int | None:
    """The pid of a live `reverie up` under this REVERIE_HOME, if there is one."""
    pid = running_stack(settings).get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


def port_in_use(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
        return True
    return False


def check_can_start(settings: Settings, options: UpOptions) -> None:
    """Refuse before starting anything: a second stack or a taken port would half-start."""
    owner = stack_owner(settings)
    if owner is not None:
        raise StackError(
            f"a stack is already running under {settings.home} (pid {owner}); "
            "stop it first, or set REVERIE_HOME to run another"
        )
    ports = (
        ("--port", options.port),
        ("--ui-port", options.resolved_ui_port),
        ("--api-port", settings.api_port if options.api_port is None else options.api_port),
    )
    for name, port in ports:
        if port and port_in_use(port):
            raise StackError(f"port {port} is already in use; choose another with {name}")


@contextlib.asynccontextmanager
async def model_settings(settings: Settings) -> AsyncIterator[Settings]:
    """Settings whose model calls go somewhere: with no API key and no base URL, Reverie's own
    simulated model, served in this process for as long as the context lasts."""
    if settings.anthropic_api_key or settings.anthropic_base_url:
        yield settings
        return
    from reverie.simulated_model import SimulatedModelServer

    server = SimulatedModelServer()
    await server.start()
    try:
        yield settings.model_copy(update={"anthropic_base_url": server.base_url})
    finally:
        await server.stop()


def describe_model(settings: Settings, original: Settings) -> str:
    if original.anthropic_api_key or original.anthropic_base_url:
        return settings.anthropic_base_url or "the Anthropic API"
    return f"SIMULATED model at {settings.anthropic_base_url} (no ANTHROPIC_API_KEY set)"


async def _start_temporal(
    settings: Settings, options: UpOptions, stack: contextlib.AsyncExitStack
) -> TemporalDevServer:
    server = TemporalDevServer(
        db_file=settings.temporal_data_file,
        port=options.port,
        ui_port=options.resolved_ui_port,
        log_file=settings.home / "temporal.log",
    )
    stack.push_async_callback(asyncio.to_thread, server.stop)
    try:
        await asyncio.to_thread(server.start)
    except (RuntimeError, TimeoutError) as error:
        raise StackError(f"Temporal dev server: {error} (see {server.log_file})") from None
    return server


async def _start_postgres(settings: Settings, stack: contextlib.AsyncExitStack) -> str:
    """DATABASE_URL when set; else an embedded PostgreSQL under REVERIE_HOME."""
    if settings.database_url:
        return settings.database_url
    postgres = EmbeddedPostgres(settings.postgres_dir)
    stack.push_async_callback(asyncio.to_thread, postgres.stop)
    try:
        return await asyncio.to_thread(postgres.start)
    except Exception as error:
        raise StackError(f"embedded PostgreSQL: {error}") from None


async def _start_worker(
    settings: Settings, stack: contextlib.AsyncExitStack
) -> tuple[str, TemporalClient]:
    """A worker in this process; answers what it calls the model, for the banner, and its
    Temporal client (the API shares it: sessions it creates then start on this worker at once,
    eager workflow start)."""
    from reverie.worker import build_worker, ensure_search_attributes

    live = await stack.enter_async_context(model_settings(settings))
    client = await connect_temporal(live)
    await ensure_search_attributes(client)
    pool = await connect_database(live)
    stack.push_async_callback(pool.close)
    await stack.enter_async_context(build_worker(client, pool, live))
    return describe_model(live, settings), client


async def _start_api(
    settings: Settings,
    port: int,
    stack: contextlib.AsyncExitStack,
    temporal: TemporalClient | None = None,
) -> tuple[str, str]:
    """The HTTP API in this process, and the local user's key; answers (base URL, key).
    `temporal`: the in-process worker's client, shared."""
    from reverie.service.client import ReverieClient
    from reverie.starter.api_cli import local_key, serve_api

    if temporal is None:
        client = await ReverieClient.connect(settings)
    else:
        client = ReverieClient(temporal, await connect_database(settings), settings)
    stack.push_async_callback(client.close)
    key = await local_key(client.pool, settings.home)
    runner, base_url = await serve_api(client, settings.api_host, port)
    stack.push_async_callback(runner.cleanup)
    return base_url, key


def _banner(settings: Settings, addresses: dict[str, str | None], worker: str | None) -> str:
    api = addresses.get("api_base_url")
    lines = [
        f"Reverie stack is up (REVERIE_HOME={settings.home})",
        f"  Temporal     {addresses['temporal_address']}",
        f"  Web UI       {addresses['ui_address'] or 'off'}",
        f"  PostgreSQL   {redact_password(addresses['database_url'] or '')}",
        f"  Worker       task queue {settings.task_queue!r}, model: {worker}"
        if worker
        else "  Worker       none (--no-worker): run `reverie worker` elsewhere",
        f"  HTTP API     {api}  (key in {settings.home / 'api.key'}: {addresses['api_key']})"
        if api
        else "  HTTP API     off",
        f"Other shells find it through {settings.stack_file}. Ctrl-C stops it.",
    ]
    return "\n".join(lines)


def _on_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)


async def run_up(settings: Settings, options: UpOptions) -> None:
    """Start everything, announce it, wait for a stop signal, then stop it all in reverse."""
    check_can_start(settings, options)
    secure_home(settings.home, embedded_postgres=not settings.database_url)
    from reverie.observability import setup as observability_setup

    observability_setup(settings)  # JSON logs, traces, metrics when asked (issue 21)
    stop = asyncio.Event()
    _on_stop_signals(stop)
    async with contextlib.AsyncExitStack() as stack:
        server = await _start_temporal(settings, options, stack)
        database_url = await _start_postgres(settings, stack)
        live = settings.model_copy(
            update={"temporal_address": server.address, "database_url": database_url}
        )
        worker, temporal = await _start_worker(live, stack) if options.worker else (None, None)
        api_port = settings.api_port if options.api_port is None else options.api_port
        api_base_url, api_key = (
            await _start_api(live, api_port, stack, temporal) if api_port else (None, None)
        )
        addresses = {
            "temporal_address": server.address,
            "database_url": database_url,
            "ui_address": server.ui_address,
            "api_base_url": api_base_url,
        }
        write_stack_file(settings.stack_file, **addresses)
        stack.callback(remove_stack_file, settings.stack_file)
        if options.json:
            shown = {**addresses, "database_url": redact_password(database_url)}
            print(
                json.dumps(
                    {**shown, "pid": os.getpid(), "worker": bool(worker), "api_key": api_key}
                )
            )
        else:
            print(_banner(settings, {**addresses, "api_key": api_key}, worker))
        sys.stdout.flush()
        await stop.wait()
        print("stopping the stack...", file=sys.stderr, flush=True)


async def up_command(settings: Settings, args: argparse.Namespace) -> None:
    options = UpOptions(
        port=args.port,
        ui_port=args.ui_port,
        worker=args.worker,
        json=args.json,
        api_port=args.api_port,
    )
    await run_up(settings, options)


async def worker_command(settings: Settings, args: argparse.Namespace) -> None:
    """A worker on this shell's task queue; the simulated model when no model is configured."""
    from reverie.worker import run_worker

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("reverie").setLevel(logging.INFO)
    async with model_settings(settings) as live:
        print(f"worker on task queue {live.task_queue!r}, model: {describe_model(live, settings)}")
        print("Ctrl-C stops it.", flush=True)
        await run_worker(live)
