"""Turns the stored transcript into a valid Messages API request, with prompt caching.

After a compaction the request starts from it: from the API's own `compaction` block (sent back
verbatim, in the answer that holds it; the API drops what came before it anyway), or from
Reverie's own summary, sent as the first user turn in place of the rows it covers.
"""

from __future__ import annotations

import copy
from typing import Any

from reverie.activities.outcome_text import OUTCOME_INPUT_TYPES, outcome_blocks
from reverie.models.events import Event

CACHE = {"type": "ephemeral"}
INTERRUPTED_TOOL_RESULT = "The tool run was interrupted before it returned a result."
SUMMARY_PREAMBLE = (
    "[The earlier part of this conversation was compacted to fit the context window. "
    "A summary of it follows; the conversation goes on after it.]\n\n"
)
# Blocks that may not carry `cache_control`.
_UNCACHEABLE = {"thinking", "redacted_thinking"}


def _block(event: Event) -> list[dict[str, Any]]:
    data = event.payload
    if event.type == "user.message":
        return list(data["content"])
    if event.type == "agent.thread_message_received":
        # Between a coordinator and its subagent threads (issue 18): said who it comes from.
        sender = data.get("from_agent_name")
        head = (
            f"[Reply from agent {sender!r}, thread {data.get('from_session_thread_id')}]"
            if sender
            else "[Message from the coordinator]"
        )
        return [{"type": "text", "text": head}, *data["content"]]
    if event.type in OUTCOME_INPUT_TYPES:
        # The outcome the agent works toward, and the grader's feedback on each pass.
        return outcome_blocks(event)
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
    texts = ("user.message", "agent.thread_message_received", *OUTCOME_INPUT_TYPES)
    results = [e for e in inputs if e.type not in texts]
    messages = [e for e in inputs if e.type in texts]
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


def _is_compaction(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "compaction"


def _from_last_compaction(messages: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """The messages from the newest API `compaction` block on (None if there is none): the
    answer holding it, from the block, then everything after."""
    for index in range(len(messages) - 1, -1, -1):
        content = messages[index]["content"]
        at = next((i for i in range(len(content) - 1, -1, -1) if _is_compaction(content[i])), None)
        if at is not None:
            head = {"role": messages[index]["role"], "content": content[at:]}
            return [head, *messages[index + 1 :]]
    return None


def _drop_orphan_results(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A tool result whose tool use was compacted away cannot be sent (the API refuses it); the
    compaction summarised both. Compaction never cuts a pair, so this is only a safety net."""
    seen: set[str] = set()
    kept: list[dict[str, Any]] = []
    for message in messages:
        if message["role"] == "assistant":
            seen |= {b["id"] for b in message["content"] if b.get("type") == "tool_use"}
        else:
            message["content"] = [
                b
                for b in message["content"]
                if b.get("type") != "tool_result" or b.get("tool_use_id") in seen
            ]
        if message["content"]:
            kept.append(message)
    return _merge([(m["role"], m["content"]) for m in kept])


def build_messages(
    entries: list[tuple[str, list[Any]]],
    *,
    summary: str | None = None,
    continue_answer: bool = False,
) -> list[dict[str, Any]]:
    """The request's `messages` from transcript rows (after Reverie's own `summary`, if any).

    `continue_answer`: the last answer paused (`pause_turn`); it is sent as it is, last, so the
    model continues it, instead of a "Continue." turn after it.
    """
    messages = _merge(entries)
    compacted = _from_last_compaction(messages)
    if compacted is not None:
        # The API's compaction summarises everything before it, Reverie's summary included.
        messages = compacted
    elif summary:
        text = {"type": "text", "text": SUMMARY_PREAMBLE + summary}
        messages = _merge([("user", [text]), *((m["role"], m["content"]) for m in messages)])
    messages = _drop_orphan_results(messages)
    _answer_dangling_tool_uses(messages)
    for message in messages:
        if message["role"] == "user":
            # Tool results lead a user message, whatever order the turns were recorded in.
            message["content"].sort(key=lambda block: block.get("type") != "tool_result")
    if messages and messages[-1]["role"] == "assistant" and not continue_answer:
        # Nothing new to answer (an interrupted turn resumed with no input): ask it to go on.
        messages.append({"role": "user", "content": [{"type": "text", "text": "Continue."}]})
    if messages:
        cacheable = [
            b
            for b in messages[-1]["content"]
            if isinstance(b, dict) and b.get("type") not in _UNCACHEABLE
        ]
        if cacheable:
            cacheable[-1]["cache_control"] = CACHE
    return messages


def build_system(system: str | None) -> list[dict[str, Any]] | None:
    if not system:
        return None
    return [{"type": "text", "text": system, "cache_control": CACHE}]
