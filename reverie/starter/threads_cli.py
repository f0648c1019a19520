"""`reverie session threads`, `session events --thread` and `session interrupt --thread`: a
coordinator session's subagent threads (issue 18) from the command line."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from reverie.starter.render import emit, event_line, print_event, table, when

if TYPE_CHECKING:
    from reverie.models.threads import SessionThread
    from reverie.service.client import ReverieClient


def thread_rows(threads: list[SessionThread]) -> str:
    rows = [
        [
            t.id,
            str(t.agent.get("name", "")),
            t.status,
            "primary" if t.parent_thread_id is None else f"of {t.parent_thread_id}",
            when(t.created_at),
        ]
        for t in threads
    ]
    return table(["ID", "AGENT", "STATUS", "", "CREATED"], rows)


async def session_threads(client: ReverieClient, args: argparse.Namespace) -> None:
    page = await client.list_threads(args.id)
    emit(args, page, lambda p: thread_rows(p.data))


async def thread_events(client: ReverieClient, args: argparse.Namespace) -> None:
    """One thread's events; with --follow as they are recorded, until its turn ends."""
    if args.follow:
        shown = 0
        async for event in client.follow_thread_events(args.id, args.thread, after=args.after):
            if args.type and event.type not in args.type:
                continue
            print_event(args, event)
            shown += 1
            if args.limit and shown >= args.limit:
                return
        return
    page = await client.thread_events_page(args.id, args.thread, limit=min(args.limit or 100, 100))
    for event in page.data:
        if not args.type or event.type in args.type:
            print_event(args, event)


async def thread_interrupt(client: ReverieClient, args: argparse.Namespace) -> None:
    (echo,) = await client.send_events(
        args.id, [{"type": "user.interrupt", "session_thread_id": args.thread}]
    )
    emit(args, echo, event_line)
