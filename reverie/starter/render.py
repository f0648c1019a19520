"""How the `reverie` command shows API objects to a person (or as JSON with `--json`)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from reverie.models.environments import LimitedNetworking, UnrestrictedNetworking

if TYPE_CHECKING:
    from reverie.models.agents import Agent
    from reverie.models.environments import Environment
    from reverie.models.events import Event
    from reverie.models.sessions import Session


# Text that a model, a tool or a user chose reaches the operator's terminal through this module.
# Control characters could drive it (ESC sequences set the window title, write the clipboard
# with OSC 52, move the cursor; C1 CSI does the same in one byte), so each one is shown instead
# of sent: C0 controls and DEL as their Unicode control pictures (ESC as "␛", BEL as "␇", CR as
# "␍"), C1 controls as `\x9b`. Newlines and tabs are kept. JSON output needs none of this:
# json.dumps escapes every control character (and everything non-ASCII) as \uXXXX.
_NEUTRALISED = {
    **{code: chr(0x2400 + code) for code in range(0x20) if chr(code) not in "\n\t"},
    0x7F: "\u2421",
    **{code: f"\\x{code:02x}" for code in range(0x80, 0xA0)},
}


def safe(text: str) -> str:
    """`text` with every control character but newline and tab made visible (see above)."""
    return text.translate(_NEUTRALISED)


def dumpable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return {"data": [dumpable(item) for item in value]}
    return value


def emit(args: argparse.Namespace, value: Any, human: Callable[[Any], str]) -> None:
    """One object (or list) per command: JSON with --json, else its human rendering (with
    control characters neutralised: see `safe`)."""
    print(json.dumps(dumpable(value), indent=2) if args.json else safe(human(value)))


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
    if "outcome_id" in p:
        # An outcome's definition, or one of its evaluations.
        head = str(p["outcome_id"])
        if "iteration" in p:
            head += f" iteration {p['iteration']}"
        if "result" in p:
            return f"{head}: {p['result']} · {p.get('explanation', '')}"
        return f"{head}: {p['description']}" if "description" in p else head
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
    """One line for a person: time, type, summary; safe to print (see `safe`)."""
    stamp = event.processed_at.astimezone().strftime("%H:%M:%S.%f")[:-3]
    return safe(f"{stamp}  {event.type}  {shorten(event_summary(event))}".rstrip())


def print_event(args: argparse.Namespace, event: Event) -> None:
    print(json.dumps(event.model_dump(mode="json")) if args.json else event_line(event), flush=True)


def networking_text(networking: UnrestrictedNetworking | LimitedNetworking) -> str:
    """`unrestricted`, or `limited` with its hosts and what else it opens."""
    if not isinstance(networking, LimitedNetworking):
        return networking.type
    extras = [
        name
        for name, on in (
            ("+package-managers", networking.allow_package_managers),
            ("+mcp-servers", networking.allow_mcp_servers),
        )
        if on
    ]
    return " ".join(["limited", ",".join(networking.allowed_hosts), *extras]).strip()


def environment_rows(environments: Sequence[Environment]) -> str:
    rows = [
        [
            e.id,
            e.name,
            networking_text(e.networking),
            when(e.created_at),
            "archived" * bool(e.archived_at),
        ]
        for e in environments
    ]
    return table(["ID", "NAME", "NETWORKING", "CREATED", ""], rows)
