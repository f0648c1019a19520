"""`reverie dream ...`: run dreams, review what they did (diff, apply, discard, revert) and
schedule them (`reverie dream schedule ...`, Temporal schedules).

Edits of a dream's result go through the ordinary memory commands on its output store
(`reverie memory put <output store> ...`) before `apply`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from reverie.models.dreams import Dream, DreamDiff, DreamSchedule, ReviewResult
from reverie.starter.render import emit, fields, table, when

if TYPE_CHECKING:
    from reverie.service.client import ReverieClient


def dream_rows(dreams: list[Dream]) -> str:
    rows = [
        [
            d.id,
            d.status,
            d.inputs[0].get("memory_store_id", "-"),
            str(len(d.inputs[1].get("session_ids", []))),
            d.outputs[0].memory_store_id if d.outputs else "-",
            when(d.created_at),
        ]
        for d in dreams
    ]
    return table(["ID", "STATUS", "STORE", "SESSIONS", "OUTPUT", "CREATED"], rows)


def _line(text: str) -> str:
    """Model-written text (a rationale, a refused path) as one line: a newline in it could
    otherwise print what looks like another path's entry or provenance."""
    return " ".join(text.split())


def diff_text(diff: DreamDiff) -> str:
    """Per path: the change, its provenance and the content diff; then what was dropped."""
    head = (
        f"dream {diff.dream_id} ({diff.status}, {diff.output_behavior}): "
        f"{diff.sessions_read} sessions read, {diff.findings} findings "
        f"({diff.findings_ungrounded} without evidence in their session, left out), "
        f"{len(diff.entries)} paths changed"
    )
    out = [head]
    if diff.output_store_id and diff.output_behavior == "create_new":
        out.append(f"output store {diff.output_store_id} against input {diff.memory_store_id}")
    for entry in diff.entries:
        sessions = ", ".join(entry.supporting_sessions) or "none (an operator's edit)"
        out.append(f"\n{entry.change.upper():9} {entry.path}")
        out.append(f"  supported by {entry.session_count} session(s): {sessions}")
        for reason in entry.rationale:
            out.append(f"  why: {_line(reason)}")
        out.append("  " + entry.diff.rstrip("\n").replace("\n", "\n  ") if entry.diff else "")
    if diff.dropped:
        out.append(f"\ndropped ({len(diff.dropped)}):")
        for dropped in diff.dropped:
            where = " ".join(x for x in (dropped.topic, dropped.op, dropped.path) if x)
            out.append(f"  {_line(where)}: {_line(dropped.reason)}")
    if diff.applied_at:
        out.append(f"\napplied {when(diff.applied_at)}")
    if diff.reverted_at:
        out.append(f"reverted {when(diff.reverted_at)}")
    return "\n".join(out)


def review_text(result: ReviewResult) -> str:
    out = [f"{result.action} {result.dream_id} -> memory store {result.memory_store_id}"]
    out += [f"  written   {path}" for path in result.written]
    out += [f"  CONFLICT  {c.path}: {c.reason}" for c in result.conflicts]
    return "\n".join(out)


def schedule_rows(schedules: list[DreamSchedule]) -> str:
    rows = [[s.id, s.memory_store_id, s.cron, s.timezone, s.mode, s.model] for s in schedules]
    return table(["ID", "STORE", "CRON", "TIMEZONE", "MODE", "MODEL"], rows)


def schedule_text(schedule: DreamSchedule) -> str:
    text = fields(schedule)
    if schedule.next_run_times:
        text += "\nnext runs  " + ", ".join(when(t) for t in schedule.next_run_times)
    return text


# ---- dreams ----------------------------------------------------------------------------------


async def dream_create(client: ReverieClient, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {
        "inputs": [
            {"type": "memory_store", "memory_store_id": args.memory_store},
            {"type": "sessions", "session_ids": args.session},
        ],
        "model": args.model,
    }
    if args.instructions is not None:
        body["instructions"] = args.instructions
    if args.update_existing:
        body["output_behavior"] = {
            "type": "update_existing",
            "memory_store_id": args.memory_store,
        }
    dream = await client.create_dream(body)
    if args.wait:
        dream = await client.wait_for_dream(dream.id, timeout=args.wait)
    emit(args, dream, fields)


async def dream_get(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.get_dream(args.id), fields)


async def dream_list(client: ReverieClient, args: argparse.Namespace) -> None:
    page = await client.list_dreams(
        limit=args.limit,
        page=args.page,
        include_archived=args.include_archived,
        statuses=args.status,
    )
    emit(args, page, lambda p: dream_rows(p.data) + (f"\nnext page: --page {p.next_page}"
                                                    if p.next_page else ""))  # fmt: skip


async def dream_cancel(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.cancel_dream(args.id), fields)


async def dream_archive(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.archive_dream(args.id), fields)


async def dream_diff(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.dream_diff(args.id), diff_text)


async def dream_apply(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.apply_dream(args.id), review_text)


async def dream_discard(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.discard_dream(args.id), review_text)


async def dream_revert(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.revert_dream(args.id), review_text)


# ---- schedules -------------------------------------------------------------------------------


async def schedule_create(client: ReverieClient, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {
        "memory_store_id": args.memory_store,
        "cron": args.cron,
        "timezone": args.timezone,
        "mode": args.mode,
    }
    for key in ("agent", "instructions", "model"):
        value = getattr(args, key)
        if value is not None:
            body["agent_id" if key == "agent" else key] = value
    emit(args, await client.create_dream_schedule(body), schedule_text)


async def schedule_list(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.list_dream_schedules(), schedule_rows)


async def schedule_describe(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.describe_dream_schedule(args.id), schedule_text)


async def schedule_pause(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.pause_dream_schedule(args.id), schedule_text)


async def schedule_resume(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.pause_dream_schedule(args.id, paused=False), schedule_text)


async def schedule_trigger(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.trigger_dream_schedule(args.id), schedule_text)


async def schedule_delete(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.delete_dream_schedule(args.id), lambda d: f"deleted {d['id']}")


def add_dream_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    dream = commands.add_parser(
        "dream", help="consolidate memory from past sessions, review and schedule it"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")

    create = command(dream, "create", dream_create, "dream over a store and some sessions")
    create.add_argument("--memory-store", required=True)
    create.add_argument("--session", required=True, action="extend", nargs="+", metavar="ID")
    create.add_argument("--model", required=True)
    create.add_argument("--instructions")
    create.add_argument(
        "--update-existing",
        action="store_true",
        help="write into the store itself (default: a new store, to review and apply)",
    )
    create.add_argument("--wait", type=float, metavar="SECONDS", help="wait until it ends")
    command(dream, "get", dream_get, "show a dream").add_argument("id")
    listing = command(dream, "list", dream_list, "list dreams, newest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--page")
    listing.add_argument("--include-archived", action="store_true")
    listing.add_argument("--status", action="append", help="only this status (repeatable)")
    command(dream, "cancel", dream_cancel, "cancel a pending or running dream").add_argument("id")
    command(dream, "archive", dream_archive, "archive a finished dream").add_argument("id")
    command(
        dream, "diff", dream_diff, "what a dream added, modified, removed, and why"
    ).add_argument("id")
    command(
        dream, "apply", dream_apply, "write a create_new dream's result into its input store"
    ).add_argument("id")
    command(
        dream, "discard", dream_discard, "archive a create_new dream's output store"
    ).add_argument("id")
    command(
        dream, "revert", dream_revert, "restore what an applied or update_existing dream changed"
    ).add_argument("id")

    schedules = dream.add_parser("schedule", help="dreams on a Temporal schedule").add_subparsers(
        dest="schedule_action", required=True, metavar="ACTION"
    )
    make = command(schedules, "create", schedule_create, "dream on a cron schedule")
    make.add_argument("--memory-store", required=True)
    make.add_argument("--agent", help="only sessions of this agent (and its model by default)")
    make.add_argument("--cron", required=True, help='e.g. "0 3 * * *" (03:00 every day)')
    make.add_argument("--timezone", default="UTC")
    make.add_argument("--mode", choices=["review", "auto"], default="review")
    make.add_argument("--instructions")
    make.add_argument("--model")
    command(schedules, "list", schedule_list, "list dream schedules")
    for name, handler, text in (
        ("describe", schedule_describe, "show a schedule, its next runs and recent dreams"),
        ("pause", schedule_pause, "pause a schedule"),
        ("resume", schedule_resume, "resume a paused schedule"),
        ("trigger", schedule_trigger, "run a schedule now"),
        ("delete", schedule_delete, "delete a schedule (its dreams stay)"),
    ):
        command(schedules, name, handler, text).add_argument("id")
