"""`reverie webhook ...`: endpoints, their deliveries and attempts, from the command line.

    reverie webhook create --url https://example.com/hooks --event session.status_idled ...
    reverie webhook list | get ID | update ID ... | enable ID | disable ID | delete ID
    reverie webhook rotate-secret ID [--grace-seconds N]
    reverie webhook test ID
    reverie webhook deliveries ID [--state failed] | delivery DELIVERY_ID | redeliver DELIVERY_ID

The signing secret is printed by `create` and `rotate-secret` only, once.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from reverie.models.webhooks import WEBHOOK_EVENT_TYPES, WebhookDelivery
from reverie.starter.render import emit, fields, table, when

if TYPE_CHECKING:
    from reverie.service.client import ReverieClient


def endpoint_rows(page: Any) -> str:
    rows = [
        [
            e.id,
            e.state + (" (auto)" if e.disabled_reason else ""),
            e.url,
            ",".join(e.enabled_events),
            e.name,
        ]
        for e in page.data
    ]
    text = table(["ID", "STATE", "URL", "EVENTS", "NAME"], rows)
    return text + (f"\nnext page: --after {page.last_id}" if page.has_more else "")


def delivery_rows(page: Any) -> str:
    rows = [
        [
            d.id,
            d.event_type,
            d.state,
            str(d.attempt_count),
            str(d.last_status or "-"),
            when(d.recorded_at),
            (d.last_error or "")[:60],
        ]
        for d in page.data
    ]
    text = table(["ID", "EVENT", "STATE", "ATTEMPTS", "STATUS", "RECORDED", "LAST ERROR"], rows)
    return text + (f"\nnext page: --page {page.next_page}" if page.next_page else "")


def delivery_text(delivery: WebhookDelivery) -> str:
    head = fields(delivery.model_copy(update={"attempts": None}))
    rows = [
        [
            str(a.number),
            when(a.started_at),
            str(a.status or "-"),
            f"{a.latency_ms:.0f} ms" if a.latency_ms is not None else "-",
            a.address or "-",
            (a.error or "")[:80],
        ]
        for a in delivery.attempts or []
    ]
    return head + "\n\n" + table(["#", "STARTED", "STATUS", "LATENCY", "ADDRESS", "ERROR"], rows)


def _new_endpoint(endpoint: Any) -> str:
    return fields(endpoint) + "\n\nThe signing secret is shown once; keep it secret."


async def webhook_create(client: ReverieClient, args: argparse.Namespace) -> None:
    body = {"url": args.url, "enabled_events": args.event or []}
    if args.name is not None:
        body["name"] = args.name
    if args.description is not None:
        body["description"] = args.description
    emit(args, await client.create_webhook(body, created_by="cli"), _new_endpoint)


async def webhook_list(client: ReverieClient, args: argparse.Namespace) -> None:
    page = await client.list_webhooks(limit=args.limit, after_id=args.after, order=args.order)
    emit(args, page, endpoint_rows)


async def webhook_get(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.get_webhook(args.id), fields)


async def webhook_update(client: ReverieClient, args: argparse.Namespace) -> None:
    body: dict[str, Any] = {}
    for field in ("url", "name", "description"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    if args.event:
        body["enabled_events"] = args.event
    emit(args, await client.update_webhook(args.id, body), fields)


async def webhook_enable(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.enable_webhook(args.id), fields)


async def webhook_disable(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.disable_webhook(args.id), fields)


async def webhook_delete(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.delete_webhook(args.id), fields)


async def webhook_rotate(client: ReverieClient, args: argparse.Namespace) -> None:
    secret = await client.regenerate_webhook_secret(args.id, grace_seconds=args.grace_seconds)

    def text(value: Any) -> str:
        until = value.previous_secret_expires_at
        note = (
            f"the previous secret also signs deliveries until {when(until)}"
            if until
            else "the previous secret no longer signs anything"
        )
        return f"{fields(value)}\n\nThe new secret is shown once; {note}."

    emit(args, secret, text)


async def webhook_test(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.test_webhook(args.id), delivery_text)


async def webhook_deliveries(client: ReverieClient, args: argparse.Namespace) -> None:
    page = await client.list_webhook_deliveries(
        args.id, limit=args.limit, page=args.page, state=args.state
    )
    emit(args, page, delivery_rows)


async def webhook_delivery(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.get_webhook_delivery(args.id), delivery_text)


async def webhook_redeliver(client: ReverieClient, args: argparse.Namespace) -> None:
    emit(args, await client.redeliver_webhook(args.id), delivery_text)


def add_webhook_commands(commands: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    group = commands.add_parser(
        "webhook", help="webhook endpoints, deliveries and their attempts"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    events_help = (
        "an event type to deliver; repeat for more (" + ", ".join(WEBHOOK_EVENT_TYPES) + ")"
    )
    create = command(group, "create", webhook_create, "register an endpoint (secret shown once)")
    create.add_argument("--url", required=True, help="https:// URL deliveries are POSTed to")
    create.add_argument("--event", action="append", metavar="TYPE", help=events_help)
    create.add_argument("--name")
    create.add_argument("--description")
    listing = command(group, "list", webhook_list, "list endpoints, newest first")
    listing.add_argument("--limit", type=int, default=20, help="at most this many (1-100)")
    listing.add_argument("--after", help="the endpoint id a previous page ended with")
    listing.add_argument("--order", choices=["asc", "desc"])
    command(group, "get", webhook_get, "show an endpoint").add_argument("id")
    update = command(group, "update", webhook_update, "change an endpoint")
    update.add_argument("id")
    update.add_argument("--url")
    update.add_argument("--event", action="append", metavar="TYPE", help="replaces the whole set")
    update.add_argument("--name")
    update.add_argument("--description")
    command(group, "enable", webhook_enable, "resume deliveries").add_argument("id")
    command(group, "disable", webhook_disable, "stop deliveries").add_argument("id")
    command(group, "delete", webhook_delete, "delete an endpoint and its log").add_argument("id")
    rotate = command(group, "rotate-secret", webhook_rotate, "make a new signing secret")
    rotate.add_argument("id")
    rotate.add_argument(
        "--grace-seconds",
        type=float,
        help="how long the old secret keeps signing too (default REVERIE_WEBHOOK_ROTATION_"
        "GRACE_SECONDS; 0: stop it now)",
    )
    command(group, "test", webhook_test, "send the endpoint a webhook.test event").add_argument(
        "id"
    )
    deliveries = command(group, "deliveries", webhook_deliveries, "an endpoint's deliveries")
    deliveries.add_argument("id", help="endpoint id")
    deliveries.add_argument("--state", choices=["pending", "delivered", "failed"])
    deliveries.add_argument("--limit", type=int, default=20)
    deliveries.add_argument("--page")
    command(group, "delivery", webhook_delivery, "a delivery and every attempt").add_argument(
        "id", help="delivery id"
    )
    command(
        group, "redeliver", webhook_redeliver, "attempt a delivery again (same webhook-id)"
    ).add_argument("id", help="delivery id")
