"""The `reverie` command line: the embedded stack, a worker, agents and sessions.

Every command takes `--json` to print the API objects as JSON (event streams as one object a
line); without it, a compact table or a few lines meant for a person, with control characters
made visible (see `render.safe`). Exit codes: 0 done, 1 the request was refused (a `ReverieError`,
bad flags or a bad file: one line on stderr, never a traceback), 2 Temporal or PostgreSQL could
not be reached (or refused to serve), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from reverie import event_loop
from reverie.models.errors import InvalidRequestError, ReverieError
from reverie.settings import Settings, load_settings
from reverie.starter.api_cli import add_api_commands
from reverie.starter.dream_cli import add_dream_commands
from reverie.starter.memory_cli import add_memory_commands
from reverie.starter.render import (
    agent_rows,
    emit,
    environment_rows,
    event_line,
    fields,
    print_event,
    safe,
    session_rows,
)
from reverie.starter.threads_cli import session_threads, thread_events, thread_interrupt
from reverie.starter.up import up_command, worker_command
from reverie.starter.webhook_cli import add_webhook_commands

if TYPE_CHECKING:
    from reverie.service.client import ReverieClient

HINT = "is `reverie up` running? or set TEMPORAL_ADDRESS / DATABASE_URL"


class Unreachable(Exception):
    """Temporal or PostgreSQL did not answer: a set-up problem, not a bad request (exit 2)."""


class Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit 1, like any refusal."""

    def error(self, message: str) -> NoReturn:
        line = " ".join(f"{self.prog}: {message}".split())
        self.exit(1, safe(f"error: {line} (see {self.prog} --help)\n"))


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
    from reverie.service.client import ReverieClient

    with reaching(RuntimeError):
        client = await ReverieClient.connect(settings)
    try:
        with reaching():
            yield client
    finally:
        await client.close()


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
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidRequestError(f"cannot read {what} {source}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise InvalidRequestError(f"{what} {source} is not UTF-8 text: {error.reason}") from None
    return parse_json(text, f"{what} {source}")


def parse_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise InvalidRequestError(f"{what} is nested too deeply to read") from None
    except ValueError as error:
        raise InvalidRequestError(f"{what} is not valid JSON: {error}") from None


def file_object(args: argparse.Namespace) -> dict[str, Any]:
    """The `--file` body, which must be a JSON object (or nothing)."""
    body = read_json(args.file, "--file") if args.file else {}
    if not isinstance(body, dict):
        raise InvalidRequestError(f"--file {args.file} must hold a JSON object")
    return body


def merged_metadata(body: dict[str, Any], flags: Sequence[tuple[str, str | None]]) -> Any:
    """`--metadata` flags on top of the file's `metadata` object."""
    current = body.get("metadata") or {}
    if not isinstance(current, dict):
        raise InvalidRequestError("metadata in --file must be a JSON object")
    return {**current, **dict(flags)}


def agent_body(args: argparse.Namespace) -> dict[str, Any]:
    """The request body: `--file` first, then each flag given on top of it."""
    body = file_object(args)
    for field in ("name", "model", "system", "description"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    if args.metadata:
        body["metadata"] = merged_metadata(body, args.metadata)
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
        "environment_id": args.environment,
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
    if args.thread:  # one subagent thread's own events (issue 18)
        await thread_events(client, args)
        return
    if not args.follow:
        found = await client.list_events(
            args.id,
            after=args.after,
            limit=args.limit or 100,
            types=args.type,
            order=args.order,
            created_at_gte=args.since,
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
    if args.thread:  # stop that thread only (issue 18)
        await thread_interrupt(client, args)
        return
    emit(args, await client.interrupt(args.id), event_line)


async def session_archive(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.archive_session(args.id), fields)


def networking_flags(args: argparse.Namespace) -> dict[str, Any] | None:
    """The SDK's `networking` from the flags, or None when none was given. `--allowed-host`
    and the `--allow-*` flags imply limited networking; on an update, a flag left out keeps
    what the environment has."""
    limited_flags = {
        "allowed_hosts": args.allowed_host,
        "allow_package_managers": args.allow_package_managers,
        "allow_mcp_servers": args.allow_mcp_servers,
    }
    given = {key: value for key, value in limited_flags.items() if value is not None}
    if not args.networking and not given:
        return None
    kind = args.networking or "limited"
    if kind != "limited":
        if given:
            raise InvalidRequestError(
                f"--networking {kind} takes no --allowed-host or --allow-* flags"
            )
        return {"type": kind}
    return {"type": "limited", **given}


def environment_body(args: argparse.Namespace, *, create: bool) -> dict[str, Any]:
    """Flags over an optional JSON body (the SDK's shape: `config: {type: "cloud",
    networking, packages}`); the networking flags replace the body's networking."""
    body = file_object(args)
    for key in ("name", "description"):
        if getattr(args, key) is not None:
            body[key] = getattr(args, key)
    networking = networking_flags(args)
    if networking is not None:
        config = body.get("config")
        body["config"] = {
            **(config if isinstance(config, dict) else {"type": "cloud"}),
            "networking": networking,
        }
    if args.metadata:
        body["metadata"] = merged_metadata(body, args.metadata)
    if create and "name" not in body:
        raise InvalidRequestError("an environment needs --name (or a name in --file)")
    return body


async def env_create(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.create_environment(environment_body(args, create=True)), fields)


async def env_update(client: ReverieClient, args: argparse.Namespace) -> None:
    body = environment_body(args, create=False)
    emit(args, await client.update_environment(args.id, body), fields)


async def env_get(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.get_environment(args.id), fields)


async def env_list(client: ReverieClient, args: argparse.Namespace) -> None:
    page = await client.list_environments(
        limit=args.limit, page=args.page, include_archived=args.include_archived
    )
    emit(args, page, lambda p: with_next_page(environment_rows(p.data), p.next_page))


async def env_delete(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.delete_environment(args.id), fields)


async def env_archive(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.archive_environment(args.id), fields)


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


def metadata_and_file(parser: argparse.ArgumentParser, *, create: bool) -> None:
    parser.add_argument(
        "--metadata",
        type=key_value if create else key_value_or_delete,
        action="extend",
        nargs="+",
        metavar="KEY=VALUE",
        help="set a key" + ("" if create else "; KEY= deletes it"),
    )
    parser.add_argument("--file", help="a JSON body (`-` for stdin); flags override its fields")


def agent_fields(parser: argparse.ArgumentParser, *, create: bool) -> None:
    parser.add_argument("--name")
    parser.add_argument("--model", help="model id, e.g. claude-sonnet-4-5")
    parser.add_argument("--system", help="system prompt")
    parser.add_argument("--description")
    metadata_and_file(parser, create=create)


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


def environment_fields(parser: argparse.ArgumentParser, *, create: bool) -> None:
    parser.add_argument("--name")
    parser.add_argument("--description")
    parser.add_argument("--networking", choices=["unrestricted", "limited"])
    parser.add_argument(
        "--allowed-host",
        "--allow-host",
        dest="allowed_host",
        action="append",
        help="a host tools may reach (limited networking); repeat for more",
    )
    parser.add_argument(
        "--allow-package-managers",
        action=argparse.BooleanOptionalAction,
        help="limited networking also reaches the public package registries (PyPI, npm...)",
    )
    parser.add_argument(
        "--allow-mcp-servers",
        action=argparse.BooleanOptionalAction,
        help="limited networking also reaches the agent's MCP servers (none until MCP exists)",
    )
    metadata_and_file(parser, create=create)


def add_environment_commands(commands: Any) -> None:
    group = commands.add_parser("env", help="environments: where tools run").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    environment_fields(command(group, "create", env_create, "create an environment"), create=True)
    update = command(group, "update", env_update, "change an environment")
    update.add_argument("id")
    environment_fields(update, create=False)
    command(group, "get", env_get, "show an environment").add_argument("id")
    paging(command(group, "list", env_list, "list environments, newest first"))
    command(group, "archive", env_archive, "archive an environment").add_argument("id")
    command(
        group, "delete", env_delete, "delete an environment no session uses, for good"
    ).add_argument("id")


def add_session_commands(commands: Any) -> None:
    group = commands.add_parser("session", help="run and inspect sessions").add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )
    create = command(group, "create", session_create, "start a session of an agent")
    create.add_argument("--agent", required=True, help="agent id")
    create.add_argument("--agent-version", type=int, help="pin a version (default: latest)")
    create.add_argument("--environment", help="environment id (default: env_default)")
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
    events.add_argument("--order", choices=["asc", "desc"], default="asc")
    events.add_argument("--thread", help="a subagent thread's own events (sth_...)")
    events.add_argument(
        "--since", type=datetime.fromisoformat, help="only events at or after this ISO time"
    )
    command(group, "get", session_get, "show a session").add_argument("id")
    listing = command(group, "list", session_list, "list sessions, newest first")
    listing.add_argument("--agent", help="only sessions of this agent")
    paging(listing)
    interrupt = command(group, "interrupt", session_interrupt, "stop what it is doing")
    interrupt.add_argument("id")
    interrupt.add_argument("--thread", help="stop only this subagent thread (sth_...)")
    command(group, "threads", session_threads, "list a session's threads").add_argument("id")
    command(group, "archive", session_archive, "archive a session").add_argument("id")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="reverie", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    stack = command(commands, "up", up_command, "run the embedded stack", client=False)
    stack.add_argument("--port", type=int, default=7233, help="Temporal gRPC port")
    stack.add_argument("--ui-port", type=int, help="Web UI port (default port+1000; 0: off)")
    stack.add_argument("--no-worker", dest="worker", action="store_false")
    stack.add_argument(
        "--api-port", type=int, help="HTTP API port (default REVERIE_API_PORT, 8080; 0: off)"
    )
    command(commands, "worker", worker_command, "run a worker until Ctrl-C", client=False)
    add_agent_commands(commands)
    add_environment_commands(commands)
    add_session_commands(commands)
    add_api_commands(commands, command)
    add_memory_commands(commands, command)
    add_webhook_commands(commands, command)
    add_dream_commands(commands, command)
    return parser


async def run(args: argparse.Namespace) -> int:
    """Run one command; map refusals to exit 1 and unreachable services to exit 2."""
    try:
        settings = settings_or_refusal()
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
    except RecursionError:
        # Input nested deeper than anything validates (the models refuse beyond 64 levels).
        error = InvalidRequestError("the request is nested too deeply to process")
        return fail(args, error.to_dict(), f"{error.error_type}: {error.message}", 1)
    except Exception as error:
        return unexpected(args, error)
    return 0


def unexpected(args: argparse.Namespace, error: Exception) -> int:
    """A failure no refusal explains: one line (REVERIE_DEBUG=1 adds the traceback)."""
    from temporalio.service import RPCError

    if os.environ.get("REVERIE_DEBUG"):
        import traceback

        traceback.print_exception(error)
    if isinstance(error, RPCError):
        body = {"type": "error", "error": {"type": "temporal_error", "message": error.message}}
        return fail(args, body, f"Temporal refused the request: {error.message}", 2)
    message = f"{type(error).__name__}: {error}"
    body = {"type": "error", "error": {"type": "api_error", "message": message}}
    return fail(args, body, f"unexpected error: {message} (REVERIE_DEBUG=1 shows where)", 1)


def settings_or_refusal() -> Settings:
    """The environment's settings; a bad value is the user's to fix, named in one line."""
    from pydantic import ValidationError

    try:
        return load_settings()
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in error.errors(include_url=False, include_input=False)
        )
        raise InvalidRequestError(f"invalid settings in the environment: {problems}") from None


def fail(args: argparse.Namespace, body: dict[str, Any], text: str, code: int) -> int:
    """The error body as JSON on stdout with --json; always `error: ...` on stderr, one line
    for a refusal, with whatever text it quotes made safe to print."""
    if args.json:
        print(json.dumps(body))
    if code == 1:
        text = " ".join(text.split())
    print(safe(f"error: {text}"), file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = event_loop.run(run(args))
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
