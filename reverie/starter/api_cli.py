"""`reverie api` (serve the HTTP API) and `reverie key create|list|revoke` (its keys).

The embedded stack's `reverie up` serves the API as well, with a key made for the local user
and kept in REVERIE_HOME (0600), so a fresh `up` prints the same key again rather than minting
one per start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reverie.service.memory import local_user_id
from reverie.settings import Settings
from reverie.starter.render import emit, fields, table, when
from reverie.store import keys

if TYPE_CHECKING:
    from reverie.service.client import ReverieClient
    from reverie.store.pool import Pool

LOCAL_KEY_FILE = "api.key"


async def local_key(pool: Pool, home: Path) -> str:
    """The local user's key: the one REVERIE_HOME keeps if it still works, else a new one."""
    path = home / LOCAL_KEY_FILE
    with contextlib.suppress(OSError):
        kept = path.read_text().strip()
        if kept and await keys.verify(pool, kept) is not None:
            return kept
    created = await keys.create(pool, "local user (reverie up)", local_user_id())
    home.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(created.key + "\n")
    partial.replace(path)
    return created.key


async def serve_api(client: ReverieClient, host: str, port: int) -> tuple[Any, str]:
    """Start the API on host:port; answers (runner, base URL). Imported late: only the
    commands that serve it load aiohttp's server."""
    from reverie.api.app import start_api

    return await start_api(client, host, port)


async def api_command(client: ReverieClient, args: argparse.Namespace) -> None:
    """Serve the API until Ctrl-C or SIGTERM; several may run behind a load balancer."""
    settings: Settings = client.settings
    host = args.host or settings.api_host
    from reverie.observability import setup as observability_setup
    from reverie.worker import ensure_search_attributes

    observability_setup(settings)
    # Whichever process of a new cluster starts first registers them (issue 21): an API
    # process may start sessions before any worker ran.
    await ensure_search_attributes(client.temporal)
    port = settings.api_port if args.port is None else args.port
    runner, base_url = await serve_api(client, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"Reverie API on {base_url} (keys: `reverie key create --name NAME`). Ctrl-C stops it.")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


async def key_create(client: ReverieClient, args: argparse.Namespace) -> None:
    created = await keys.create(client.pool, args.name, args.created_by or local_user_id())
    emit(args, created, lambda k: f"{fields(k)}\n\nThe key is shown once; keep it secret.")


async def key_list(client: ReverieClient, args: argparse.Namespace) -> None:
    page = await keys.list_keys(
        client.pool, limit=args.limit, page=args.page, include_revoked=args.include_revoked
    )

    def rows(p: Any) -> str:
        listed = [
            [
                k.id,
                k.name,
                k.created_by,
                when(k.created_at),
                when(k.last_used_at),
                "revoked" * bool(k.revoked_at),
            ]
            for k in p.data
        ]
        text = table(["ID", "NAME", "CREATED BY", "CREATED", "LAST USED", ""], listed)
        return text + (f"\nnext page: --page {p.next_page}" if p.next_page else "")

    emit(args, page, rows)


async def key_revoke(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await keys.revoke(client.pool, args.id), fields)


def add_api_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    serve = command(commands, "api", api_command, "serve the HTTP API until Ctrl-C")
    serve.add_argument("--host", help="address to listen on (default REVERIE_API_HOST)")
    serve.add_argument("--port", type=int, help="port (default REVERIE_API_PORT; 0: any free)")
    group = commands.add_parser("key", help="API keys for the HTTP API").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create = command(group, "create", key_create, "create an API key (shown once)")
    create.add_argument("--name", required=True, help="what the key is for")
    create.add_argument("--created-by", help="who it is for (default: the local user)")
    listing = command(group, "list", key_list, "list API keys, newest first (never secrets)")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--page")
    listing.add_argument("--include-revoked", action="store_true")
    command(group, "revoke", key_revoke, "revoke an API key").add_argument("id")
