"""The `reverie` command line: the embedded stack, a worker, agents and sessions.

Every command takes `--json` to print the API objects as JSON (event streams as one object a
line); without it, a compact table or a few lines meant for a person. Exit codes: 0 done, 1 the
request was refused (a `ReverieError`), 2 Temporal or PostgreSQL could not be reached (or bad
usage), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from reverie.models.errors import InvalidRequestError, ReverieError
from reverie.settings import Settings, load_settings
from reverie.starter.up import up_command, worker_command

if TYPE_CHECKING:
    from reverie.models.agents import Agent
    from reverie.models.events import Event
    from reverie.models.sessions import Session
    from reverie.starter.client import ReverieClient

HINT = "is `reverie up` running? or set TEMPORAL_ADDRESS / DATABASE_URL"


class Unreachable(Exception):
    """Temporal or PostgreSQL did not answer: a set-up problem, not a bad request (exit 2)."""


@contextlib.contextmanager
def reaching(*also: type[Exception]) -> Iterator[None]:
    """Turn the ways a connection fails into `Unreachable`, so the user gets the hint. Pass
    RuntimeError while connecting: it is how Temporal's connect (and a missing DATABASE_URL)
    fail."""
    import asyncpg
    from temporalio.service import RPCError, RPCStatusCode

    refused = (asyncpg.InvalidCatalogNameError, asyncpg.InvalidAuthorizationSpecificationError)
    try:
        yield
    except (OSError, asyncpg.PostgresConnectionError, *refused, *also) as e:
        raise Unreachable(str(e)) from None
    except RPCError as error:
        if error.status not in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            raise
        raise Unreachable(str(error)) from None


@contextlib.asynccontextmanager
async def connected(settings: Settings) -> AsyncIterator[ReverieClient]:
    from reverie.starter.client import ReverieClient

    with reaching(RuntimeError):
        client = await ReverieClient.connect(settings)
    try:
        with reaching():
            yield client
    finally:
        await client.close()


# ---- output ----------------------------------------------------------------------------------


def dumpable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return {"data": [dumpable(item) for item in value]}
    return value


def emit(args: argparse.Namespace, value: Any, human: Callable[[Any], str]) -> None:
    """One object (or list) per command: JSON with --json, else its human rendering."""
    print(json.dumps(dumpable(value), indent=2) if args.json else human(value))


def shorten(text: str, width: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def when(value: Any) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [headers, *rows]
    )


def brief(value: Any) -> str:
    """A field in one short line; a nested object (model, agent) by its id (and version)."""
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"] + (f" v{value['version']}" if "version" in value else "")
    if isinstance(value, dict):
        return shorten(" ".join(f"{key}={item}" for key, item in value.items()))
    return shorten(value if isinstance(value, str) else json.dumps(value))


def fields(value: BaseModel) -> str:
    """One `name  value` line per field that holds something; id, version and status first."""
    dumped = value.model_dump(mode="json", exclude={"type"})
    names = sorted(dumped, key=lambda name: name not in ("id", "version", "status"))
    shown = [(name, dumped[name]) for name in names if dumped[name] not in (None, "", [], {})]
    width = max(len(name) for name, _ in shown)
    return "\n".join(f"{name.ljust(width)}  {brief(item)}" for name, item in shown)


def agent_rows(agents: Sequence[Agent]) -> str:
    rows = [
        [
            a.id,
            str(a.version),
            a.name,
            a.model.id,
            when(a.created_at),
            "archived" * bool(a.archived_at),
        ]
        for a in agents
    ]
    return table(["ID", "VERSION", "NAME", "MODEL", "CREATED", ""], rows)


def session_rows(sessions: Sequence[Session]) -> str:
    rows = [
        [s.id, s.status, f"{s.agent.id} v{s.agent.version}", s.title or "", when(s.created_at)]
        for s in sessions
    ]
    return table(["ID", "STATUS", "AGENT", "TITLE", "CREATED"], rows)


def content_text(blocks: Any) -> str:
    if not isinstance(blocks, list):
        return str(blocks)
    return " ".join(
        b.get("text", "") if b.get("type") == "text" else f"[{b.get('type')}]" for b in blocks
    )


def event_summary(event: Event) -> str:
    """The one thing worth seeing in an event: its text, stop reason, error, tool or usage."""
    p = event.payload
    if isinstance(p.get("error"), dict):
        error = p["error"]
        retry = (error.get("retry_status") or {}).get("type")
        return f"{error.get('type')}: {error.get('message')}" + (f" ({retry})" if retry else "")
    if isinstance(p.get("stop_reason"), dict):
        reason = p["stop_reason"]
        ids = reason.get("event_ids")
        return str(reason.get("type")) + (f" {', '.join(ids)}" if ids else "")
    if "name" in p and "input" in p:
        return f"{p['name']} {json.dumps(p['input'])}"
    if "content" in p:
        return content_text(p["content"])
    if isinstance(p.get("model_usage"), dict):
        usage = p["model_usage"]
        return f"{usage.get('input_tokens', 0)} in / {usage.get('output_tokens', 0)} out tokens"
    return ""


def event_line(event: Event) -> str:
    stamp = event.processed_at.astimezone().strftime("%H:%M:%S.%f")[:-3]
    return f"{stamp}  {event.type}  {shorten(event_summary(event))}".rstrip()


def print_event(args: argparse.Namespace, event: Event) -> None:
    print(json.dumps(event.model_dump(mode="json")) if args.json else event_line(event), flush=True)


# ---- input -----------------------------------------------------------------------------------


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def key_value_or_delete(text: str) -> tuple[str, str | None]:
    """On update, `KEY=` (nothing after the =) deletes the key."""
    key, sep, value = text.partition("=")
    return (key, None) if key and sep and not value else key_value(text)


def read_json(source: str, what: str) -> Any:
    """JSON from a file, or from stdin when `source` is `-`."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as error:
        raise InvalidRequestError(f"cannot read {what} {source}: {error.strerror}") from None
    return parse_json(text, f"{what} {source}")


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as error:
        raise InvalidRequestError(f"{what} is not valid JSON: {error}") from None


def agent_body(args: argparse.Namespace) -> dict[str, Any]:
    """The request body: `--file` first, then each flag given on top of it."""
    body = read_json(args.file, "--file") if args.file else {}
    if not isinstance(body, dict):
        raise InvalidRequestError(f"--file {args.file} must hold a JSON object")
    for field in ("name", "model", "system", "description"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    if args.metadata:
        body["metadata"] = {**(body.get("metadata") or {}), **dict(args.metadata)}
    return body


# ---- commands --------------------------------------------------------------------------------


async def agent_create(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.create_agent(args.body), fields)


async def agent_update(client: ReverieClient, args: argparse.Namespace) -> None:
    """Only the fields given change; `--version` guards against overwriting someone's change."""
    body = args.body if args.version is None else {**args.body, "version": args.version}
    emit(args, await client.update_agent(args.id, body), fields)


async def agent_get(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.get_agent(args.id, args.version), fields)


async def agent_list(client: ReverieClient, args: argparse.Namespace) -> None:
    page = await client.list_agents(
        limit=args.limit, page=args.page, include_archived=args.include_archived
    )
    emit(args, page, lambda p: with_next_page(agent_rows(p.data), p.next_page))


async def agent_versions(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.agent_versions(args.id), agent_rows)


async def agent_archive(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.archive_agent(args.id), fields)


def with_next_page(text: str, next_page: str | None) -> str:
    return f"{text}\nmore: --page {next_page}" if next_page else text


async def session_create(client: ReverieClient, args: argparse.Namespace) -> None:
    """`--message` texts become the session's initial user.message events."""
    agent: Any = args.agent
    if args.agent_version is not None:
        agent = {"type": "agent", "id": args.agent, "version": args.agent_version}
    body = {
        "agent": agent,
        "title": args.title,
        "metadata": dict(args.metadata or []),
        "initial_events": [{"type": "user.message", "content": m} for m in args.message or []],
    }
    session = await client.create_session(body)
    emit(args, session, fields)
    if args.message and not args.json:
        print(f"follow it with: reverie session events {session.id} --follow")


def send_body(args: argparse.Namespace) -> list[Any]:
    events: list[Any] = [{"type": "user.message", "content": args.text}] if args.text else []
    for raw in args.event_json or []:
        parsed = parse_json(raw, "--event-json")
        events.extend(parsed if isinstance(parsed, list) else [parsed])
    if not events:
        raise InvalidRequestError("nothing to send: give a message TEXT or --event-json '{...}'")
    return events


async def session_send(client: ReverieClient, args: argparse.Namespace) -> None:
    echoes = await client.send_events(args.id, args.body)
    emit(args, echoes, lambda found: "\n".join(event_line(e) for e in found))


async def session_events(client: ReverieClient, args: argparse.Namespace) -> None:
    """Past events, or with --follow each one as it is recorded until the session settles."""
    if not args.follow:
        found = await client.list_events(
            args.id, after=args.after, limit=args.limit or 100, types=args.type
        )
        for event in found:
            print_event(args, event)
        return
    shown = 0
    async for event in client.follow_events(args.id, after=args.after):
        if args.type and event.type not in args.type:
            continue
        print_event(args, event)
        shown += 1
        if args.limit and shown >= args.limit:
            return


async def session_get(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.get_session(args.id), fields)


async def session_list(client: ReverieClient, args: argparse.Namespace) -> None:
    page = await client.list_sessions(
        limit=args.limit,
        page=args.page,
        agent_id=args.agent,
        include_archived=args.include_archived,
    )
    emit(args, page, lambda p: with_next_page(session_rows(p.data), p.next_page))


async def session_interrupt(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.interrupt(args.id), event_line)


async def session_archive(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.archive_session(args.id), fields)


# ---- wiring ----------------------------------------------------------------------------------


def command(
    group: Any,
    name: str,
    handler: Callable[..., Any],
    text: str,
    *,
    client: bool = True,
    body: Callable[[argparse.Namespace], Any] | None = None,
) -> argparse.ArgumentParser:
    """A leaf command: its own --json, the handler `run` calls (with a client, or not), and
    what builds its request body from the flags, before anything connects."""
    parser = group.add_parser(name, help=text, description=text)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(handler=handler, client=client, make_body=body)
    return parser


def paging(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=20, help="at most this many (1-100)")
    parser.add_argument("--page", help="the cursor a previous page printed")
    parser.add_argument("--include-archived", action="store_true")


def agent_fields(parser: argparse.ArgumentParser, *, create: bool) -> None:
    parser.add_argument("--name")
    parser.add_argument("--model", help="model id, e.g. claude-sonnet-4-5")
    parser.add_argument("--system", help="system prompt")
    parser.add_argument("--description")
    parser.add_argument(
        "--metadata",
        type=key_value if create else key_value_or_delete,
        action="extend",
        nargs="+",
        metavar="KEY=VALUE",
        help="set a key" + ("" if create else "; KEY= deletes it"),
    )
    parser.add_argument("--file", help="a JSON body (`-` for stdin); flags override its fields")


def add_agent_commands(commands: Any) -> None:
    group = commands.add_parser("agent", help="create and manage agents").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create = command(group, "create", agent_create, "create an agent (version 1)", body=agent_body)
    agent_fields(create, create=True)
    update = command(
        group, "update", agent_update, "change an agent; a change makes a version", body=agent_body
    )
    update.add_argument("id")
    update.add_argument("--version", type=int, help="refuse unless the agent is at this version")
    agent_fields(update, create=False)
    get = command(group, "get", agent_get, "show an agent (its latest version by default)")
    get.add_argument("id")
    get.add_argument("--version", type=int)
    paging(command(group, "list", agent_list, "list agents, newest first"))
    command(group, "versions", agent_versions, "list an agent's versions").add_argument("id")
    command(group, "archive", agent_archive, "archive an agent (read-only)").add_argument("id")


def add_session_commands(commands: Any) -> None:
    group = commands.add_parser("session", help="run and inspect sessions").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create = command(group, "create", session_create, "start a session of an agent")
    create.add_argument("--agent", required=True, help="agent id")
    create.add_argument("--agent-version", type=int, help="pin a version (default: latest)")
    create.add_argument("--title")
    create.add_argument("--metadata", type=key_value, action="extend", nargs="+", metavar="K=V")
    create.add_argument("--message", action="append", help="an initial user message")
    send = command(group, "send", session_send, "send a user message (or events)", body=send_body)
    send.add_argument("id")
    send.add_argument("text", nargs="?")
    send.add_argument("--event-json", action="append", help="a raw input event (or a list)")
    events = command(group, "events", session_events, "print a session's events")
    events.add_argument("id")
    events.add_argument("--follow", "-f", action="store_true", help="until the session settles")
    events.add_argument("--after", type=int, default=0, help="skip the first N events")
    events.add_argument("--limit", type=int, help="at most N events (default 100 without -f)")
    events.add_argument("--type", action="extend", nargs="+", help="only these event types")
    command(group, "get", session_get, "show a session").add_argument("id")
    listing = command(group, "list", session_list, "list sessions, newest first")
    listing.add_argument("--agent", help="only sessions of this agent")
    paging(listing)
    command(group, "interrupt", session_interrupt, "stop what it is doing").add_argument("id")
    command(group, "archive", session_archive, "archive a session").add_argument("id")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reverie", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    stack = command(commands, "up", up_command, "run the embedded stack", client=False)
    stack.add_argument("--port", type=int, default=7233, help="Temporal gRPC port")
    stack.add_argument("--ui-port", type=int, help="Web UI port (default port+1000; 0: off)")
    stack.add_argument("--no-worker", dest="worker", action="store_false")
    command(commands, "worker", worker_command, "run a worker until Ctrl-C", client=False)
    add_agent_commands(commands)
    add_session_commands(commands)
    return parser


async def run(args: argparse.Namespace) -> int:
    """Run one command; map refusals to exit 1 and unreachable services to exit 2."""
    settings = load_settings()
    try:
        args.body = args.make_body(args) if args.make_body else None
        if args.client:
            async with connected(settings) as client:
                await args.handler(client, args)
        else:
            with reaching(RuntimeError):
                await args.handler(settings, args)
    except ReverieError as error:
        return fail(args, error.to_dict(), f"{error.error_type}: {error.message}", 1)
    except Unreachable as error:
        body = {"type": "error", "error": {"type": "connection_error", "message": str(error)}}
        return fail(args, body, f"cannot reach Temporal/PostgreSQL: {error}\nhint: {HINT}", 2)
    return 0


def fail(args: argparse.Namespace, body: dict[str, Any], text: str, code: int) -> int:
    if args.json:
        print(json.dumps(body))
    print(f"error: {text}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = asyncio.run(run(args))
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = 0
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
        sys.stderr.flush()
    # Skip interpreter teardown: the Temporal SDK's Rust threads can crash CPython's
    # finalisation (SIGSEGV/SIGABRT in roughly one short-lived run in ten), which would turn a
    # clean exit code into 139.
    os._exit(code)


if __name__ == "__main__":
    main()
