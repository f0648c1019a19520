"""`reverie memory ...`: memory stores, their memories and versions from the command line.

Memories are named by path (`/notes/a.md`) or id (`mem_...`). Writes are attributed to the local
user (`user_actor` `local:<login>`). `put`, `mv` and `rm` read the memory first and write with
its digest as precondition (`--if-sha` names the digest you expect instead), so a change made
meanwhile by anyone else is reported, never overwritten.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from reverie.models.errors import InvalidRequestError, NotFoundError
from reverie.models.memory import Memory, MemoryPrefix, MemoryVersion
from reverie.starter.render import emit, fields, safe, table, when

if TYPE_CHECKING:
    from reverie.models.common import Page
    from reverie.service.client import ReverieClient


def _key_value(text: str) -> tuple[str, str | None]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (KEY= deletes), got {text!r}")
    return key, value or None


def _with_next(text: str, next_page: str | None) -> str:
    return text + (f"\nnext page: --page {next_page}" if next_page else "")


def store_rows(stores: list[Any]) -> str:
    rows = [[s.id, s.name, when(s.created_at), "archived" * bool(s.archived_at)] for s in stores]
    return table(["ID", "NAME", "CREATED", ""], rows)


def memory_rows(items: list[Memory | MemoryPrefix]) -> str:
    rows = []
    for item in items:
        if isinstance(item, MemoryPrefix):
            rows.append([item.path, "-", "-", "-", "(folder)"])
        else:
            rows.append(
                [
                    item.path,
                    f"{item.content_size_bytes:,}",
                    item.content_sha256[:12],
                    item.id,
                    when(item.updated_at),
                ]
            )
    return table(["PATH", "BYTES", "SHA256", "ID", "UPDATED"], rows)


def _actor(actor: Any) -> str:
    if actor is None:
        return "-"
    data = actor.model_dump()
    return next((str(v) for k, v in data.items() if k != "type"), data["type"])


def version_rows(versions: list[MemoryVersion]) -> str:
    rows = [
        [
            v.id,
            v.operation,
            v.path or ("(redacted)" if v.redacted_at else "-"),
            "-" if v.content_size_bytes is None else f"{v.content_size_bytes:,}",
            _actor(v.created_by),
            when(v.created_at),
        ]
        for v in versions
    ]
    return table(["VERSION", "OPERATION", "PATH", "BYTES", "BY", "CREATED"], rows)


async def _memory(client: ReverieClient, store: str, name: str) -> Memory:
    """A memory by id (`mem_...`) or path."""
    if name.startswith("/"):
        return await client.get_memory_by_path(store, name)
    return await client.get_memory(store, name)


def _content(args: argparse.Namespace) -> str:
    if args.content is not None:
        return args.content
    try:
        if args.file and args.file != "-":
            return Path(args.file).read_text(encoding="utf-8")
        return sys.stdin.read()
    except OSError as error:
        raise InvalidRequestError(f"cannot read {args.file}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise InvalidRequestError(f"{args.file or 'stdin'} is not UTF-8 text: {error}") from None


def _guard(args: argparse.Namespace, memory: Memory) -> dict[str, str]:
    return {"type": "content_sha256", "content_sha256": args.if_sha or memory.content_sha256}


# ---- stores ----------------------------------------------------------------------------------


async def store_create(client: ReverieClient, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {"name": args.name, "metadata": dict(args.metadata or [])}
    if args.description is not None:
        body["description"] = args.description
    emit(args, await client.create_memory_store(body), fields)


async def store_update(client: ReverieClient, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {}
    if args.name is not None:
        body["name"] = args.name
    if args.description is not None:
        body["description"] = args.description
    if args.metadata:
        body["metadata"] = dict(args.metadata)
    emit(args, await client.update_memory_store(args.id, body), fields)


async def store_list(client: ReverieClient, args: argparse.Namespace) -> None:
    page = await client.list_memory_stores(
        limit=args.limit, page=args.page, include_archived=args.include_archived
    )
    emit(args, page, lambda p: _with_next(store_rows(p.data), p.next_page))


async def store_get(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.get_memory_store(args.id), fields)


async def store_archive(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.archive_memory_store(args.id), fields)


async def store_delete(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.delete_memory_store(args.id), fields)


# ---- memories --------------------------------------------------------------------------------


async def memory_ls(client: ReverieClient, args: argparse.Namespace) -> None:
    page: Page[Memory | MemoryPrefix] = await client.list_memories(
        args.store,
        path_prefix=args.prefix,
        depth=args.depth,
        limit=args.limit,
        page=args.page,
    )
    emit(args, page, lambda p: _with_next(memory_rows(p.data), p.next_page))


async def memory_cat(client: ReverieClient, args: argparse.Namespace) -> None:
    if not args.memory and not args.version:
        raise InvalidRequestError("name a memory (path or mem_ id) or a --version")
    if args.version:
        version = await client.get_memory_version(args.store, args.version)
        if version.content is None:
            raise InvalidRequestError(
                f"version {version.id} has no content ({'redacted' if version.redacted_at else version.operation})"
            )
        emit(args, version, lambda v: v.content)
        return
    memory = await _memory(client, args.store, args.memory)
    emit(args, memory, lambda m: m.content or "")


async def memory_put(client: ReverieClient, args: argparse.Namespace) -> None:
    content = _content(args)
    try:
        existing = await client.get_memory_by_path(args.store, args.path, view="basic")
    except NotFoundError:
        existing = None
    if existing is None:
        if args.if_sha:
            raise InvalidRequestError(f"no memory at {args.path} (so none with that digest)")
        made = await client.create_memory(args.store, {"path": args.path, "content": content})
    else:
        made = await client.update_memory(
            args.store, existing.id, {"content": content, "precondition": _guard(args, existing)}
        )
    emit(args, made, fields)


async def memory_mv(client: ReverieClient, args: argparse.Namespace) -> None:
    memory = await _memory(client, args.store, args.memory)
    moved = await client.update_memory(
        args.store, memory.id, {"path": args.new_path, "precondition": _guard(args, memory)}
    )
    emit(args, moved, fields)


async def memory_rm(client: ReverieClient, args: argparse.Namespace) -> None:
    memory = await _memory(client, args.store, args.memory)
    deleted = await client.delete_memory(
        args.store,
        memory.id,
        expected_content_sha256=args.if_sha or memory.content_sha256,
    )
    emit(args, deleted, fields)


async def memory_versions(client: ReverieClient, args: argparse.Namespace) -> None:
    memory_id = None
    if args.memory:
        memory_id = (
            args.memory
            if not args.memory.startswith("/")
            else (await client.get_memory_by_path(args.store, args.memory, view="basic")).id
        )
    page = await client.list_memory_versions(
        args.store,
        memory_id=memory_id,
        operation=args.operation,
        session_id=args.session,
        limit=args.limit,
        page=args.page,
    )
    emit(args, page, lambda p: _with_next(version_rows(p.data), p.next_page))


async def memory_restore(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.restore_memory_version(args.store, args.version), fields)


async def memory_redact(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.redact_memory_version(args.store, args.version), fields)


async def memory_export(client: ReverieClient, args: argparse.Namespace) -> None:
    count = await client.export_memory_store(args.store, args.directory)
    emit(
        args,
        {"exported": count, "directory": str(args.directory)},
        lambda r: f"exported {r['exported']} memories to {r['directory']}",
    )


async def memory_import(client: ReverieClient, args: argparse.Namespace) -> None:
    report = await client.import_memory_store(args.store, args.directory)

    def human(r: dict[str, Any]) -> str:
        lines = [
            f"created {len(r['created'])}, updated {len(r['updated'])}, "
            f"unchanged {len(r['unchanged'])}, skipped {len(r['skipped'])}"
        ]
        lines += [f"skipped {path}: {why}" for path, why in sorted(r["skipped"].items())]
        return "\n".join(lines)

    emit(args, vars(report), human)
    if report.skipped:
        print(safe(f"{len(report.skipped)} file(s) skipped"), file=sys.stderr)


# ---- wiring ----------------------------------------------------------------------------------


def add_memory_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    memory = commands.add_parser(
        "memory", help="memory stores, memories and versions"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")

    stores = memory.add_parser("store", help="memory stores").add_subparsers(
        dest="store_action", required=True, metavar="ACTION"
    )
    create = command(stores, "create", store_create, "create a memory store")
    create.add_argument("--name", required=True)
    create.add_argument("--description")
    create.add_argument("--metadata", type=_key_value, action="extend", nargs="+", metavar="K=V")
    update = command(stores, "update", store_update, "change a store's name, description, metadata")
    update.add_argument("id")
    update.add_argument("--name")
    update.add_argument("--description")
    update.add_argument("--metadata", type=_key_value, action="extend", nargs="+", metavar="K=V")
    listing = command(stores, "list", store_list, "list memory stores, newest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--page")
    listing.add_argument("--include-archived", action="store_true")
    command(stores, "get", store_get, "show a memory store").add_argument("id")
    command(
        stores, "archive", store_archive, "archive a store (read and delete only)"
    ).add_argument("id")
    command(
        stores, "delete", store_delete, "delete a store, its memories and versions, for good"
    ).add_argument("id")

    ls = command(memory, "ls", memory_ls, "list memories (folders rolled up with --depth)")
    ls.add_argument("store")
    ls.add_argument("prefix", nargs="?", default="/", help="a folder, ending with / (default /)")
    ls.add_argument("--depth", type=int, default=0, help="roll up below this depth (0: none)")
    ls.add_argument("--limit", type=int, default=100)
    ls.add_argument("--page")

    cat = command(memory, "cat", memory_cat, "print a memory's content (or an old version's)")
    cat.add_argument("store")
    cat.add_argument("memory", nargs="?", help="path or mem_ id")
    cat.add_argument("--version", help="a memver_ id: print that version instead")

    put = command(memory, "put", memory_put, "create or replace the memory at a path")
    put.add_argument("store")
    put.add_argument("path")
    source = put.add_mutually_exclusive_group()
    source.add_argument("--file", help="read the content from this file (- or nothing: stdin)")
    source.add_argument("--content", help="the content itself")
    put.add_argument("--if-sha", help="only if the memory's content has this SHA-256")

    mv = command(memory, "mv", memory_mv, "move (rename) a memory; it keeps its id")
    mv.add_argument("store")
    mv.add_argument("memory", help="path or mem_ id")
    mv.add_argument("new_path")
    mv.add_argument("--if-sha", help="only if the memory's content has this SHA-256")

    rm = command(memory, "rm", memory_rm, "delete a memory (its versions stay)")
    rm.add_argument("store")
    rm.add_argument("memory", help="path or mem_ id")
    rm.add_argument("--if-sha", help="only if the memory's content has this SHA-256")

    versions = command(memory, "versions", memory_versions, "list versions, newest first")
    versions.add_argument("store")
    versions.add_argument("memory", nargs="?", help="path or mem_ id (a deleted one by id)")
    versions.add_argument("--operation", choices=["created", "modified", "deleted"])
    versions.add_argument("--session", help="only versions this session wrote")
    versions.add_argument("--limit", type=int, default=20)
    versions.add_argument("--page")

    restore = command(
        memory, "restore", memory_restore, "write an old version back as a new version"
    )
    restore.add_argument("store")
    restore.add_argument("version", help="memver_ id")
    redact = command(memory, "redact", memory_redact, "clear a version's content for good")
    redact.add_argument("store")
    redact.add_argument("version", help="memver_ id")

    export = command(memory, "export", memory_export, "write every memory to a directory tree")
    export.add_argument("store")
    export.add_argument("directory", type=Path)
    imported = command(
        memory, "import", memory_import, "create or update memories from a directory tree"
    )
    imported.add_argument("store")
    imported.add_argument("directory", type=Path)
