"""Turns the stored transcript into a valid Messages API request, with prompt caching."""

from __future__ import annotations

import copy
from typing import Any

from reverie.models.events import Event

CACHE = {"type": "ephemeral"}
INTERRUPTED_TOOL_RESULT = "The tool run was interrupted before it returned a result."


def _block(event: Event) -> list[dict[str, Any]]:
    data = event.payload
    if event.type == "user.message":
        return list(data["content"])
    if event.type in ("agent.tool_result", "user.custom_tool_result"):
        return [
            {
                "type": "tool_result",
                # Both name the tool use by its event id, which the transcript uses too.
                "tool_use_id": data.get("tool_use_id") or data["custom_tool_use_id"],
                "content": data.get("content") or [],
                "is_error": bool(data.get("is_error")),
            }
        ]
    return []


def user_rows(inputs: list[Event]) -> list[tuple[str, list[dict[str, Any]]]]:
    """The transcript rows of one user turn, one per input event: tool results first (the API
    requires them to lead the message), then messages, each group in the order given."""
    results = [e for e in inputs if e.type != "user.message"]
    messages = [e for e in inputs if e.type == "user.message"]
    return [(e.id, _block(e)) for e in results + messages if _block(e)]


def _merge(entries: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """Consecutive turns of one role become one message (an interrupted turn leaves two)."""
    messages: list[dict[str, Any]] = []
    for role, content in entries:
        if not content:
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(copy.deepcopy(content))
        else:
            messages.append({"role": role, "content": copy.deepcopy(content)})
    return messages


def _answer_dangling_tool_uses(messages: list[dict[str, Any]]) -> None:
    """A tool use with no result (a crash, an interrupt) gets an error result, or the API refuses."""
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        used = [b["id"] for b in message["content"] if b.get("type") == "tool_use"]
        if not used:
            continue
        following = messages[index + 1] if index + 1 < len(messages) else None
        if following is None:
            following = {"role": "user", "content": []}
            messages.append(following)
        answered = {
            b.get("tool_use_id") for b in following["content"] if b.get("type") == "tool_result"
        }
        missing = [
            {
                "type": "tool_result",
                "tool_use_id": tool_use_id,
                "content": INTERRUPTED_TOOL_RESULT,
                "is_error": True,
            }
            for tool_use_id in used
            if tool_use_id not in answered
        ]
        following["content"][:0] = missing


def build_messages(entries: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    messages = _merge(entries)
    _answer_dangling_tool_uses(messages)
    for message in messages:
        if message["role"] == "user":
            # Tool results lead a user message, whatever order the turns were recorded in.
            message["content"].sort(key=lambda block: block.get("type") != "tool_result")
    if messages and messages[-1]["role"] == "assistant":
        # Nothing new to answer (an interrupted turn resumed with no input): ask it to go on.
        messages.append({"role": "user", "content": [{"type": "text", "text": "Continue."}]})
    if messages:
        last_block = messages[-1]["content"][-1]
        if isinstance(last_block, dict):
            last_block["cache_control"] = CACHE
    return messages


def build_system(system: str | None) -> list[dict[str, Any]] | None:
    if not system:
        return None
    return [{"type": "text", "text": system, "cache_control": CACHE}]
