"""A scriptable fake of the Anthropic Messages API for tests.

One server is shared by the whole test run; each test isolates itself by using its own model
name, since scripts and recorded requests are keyed by the request's `model`.

A model may be given a small context window (`set_context_window`): past it, a request is
answered 400 "prompt is too long", with its size counted as characters / 4. Such a model can
report its window through the Models API, and can compact by itself as the real API does
(`context_management` with `compact_20260112`: a `compaction` block, which later requests must
send back verbatim). Reverie's own summarising requests are answered apart from the script.
"""

from __future__ import annotations

import asyncio
import copy
import json
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from reverie.activities.compaction import SUMMARY_SYSTEM
from reverie.simulated_model import (
    MessagesApiServer,
    build_message,
    compute_usage,
    error_response,
    last_user_text,
    output_length,
    prompt_tokens,
)

COMPACT_EDIT = "compact_20260112"
DEFAULT_TRIGGER = 150_000


def _tool_use_block(name: str, input: dict[str, Any], id: str | None = None) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": id or f"toolu_{uuid.uuid4().hex[:24]}",
        "name": name,
        "input": input,
    }


def _text_blocks(text: str | None) -> list[dict[str, Any]]:
    return [{"type": "text", "text": text}] if text else []


@dataclass
class Reply:
    """One scripted answer: a message, or an error status; `delay` seconds late either way."""

    content: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = "end_turn"
    status: int = 200
    message: str = ""
    retry_after: float | None = None
    delay: float = 0.0
    stop_details: dict[str, Any] | None = None

    def error_response(self) -> web.Response:
        """This scripted error as the API sends it, with its `retry-after` when it has one."""
        headers = None if self.retry_after is None else {"retry-after": f"{self.retry_after:g}"}
        return error_response(self.status, self.message, headers=headers)

    @classmethod
    def text(cls, text: str, *, stop_reason: str = "end_turn", delay: float = 0.0) -> Reply:
        return cls([{"type": "text", "text": text}], stop_reason, delay=delay)

    @classmethod
    def tool_use(
        cls,
        name: str,
        input: dict[str, Any],
        *,
        id: str | None = None,
        text: str | None = None,
        delay: float = 0.0,
    ) -> Reply:
        return cls([*_text_blocks(text), _tool_use_block(name, input, id)], "tool_use", delay=delay)

    @classmethod
    def tool_uses(
        cls,
        calls: list[tuple[str, dict[str, Any]]],
        *,
        text: str | None = None,
        delay: float = 0.0,
    ) -> Reply:
        blocks = [_tool_use_block(name, input) for name, input in calls]
        return cls([*_text_blocks(text), *blocks], "tool_use", delay=delay)

    @classmethod
    def error(
        cls,
        status: int,
        *,
        retry_after: float | None = None,
        message: str = "scripted error",
        delay: float = 0.0,
    ) -> Reply:
        return cls(status=status, message=message, retry_after=retry_after, delay=delay)


@dataclass
class ContextWindow:
    """A model's small context window, and what the fake says and does about it."""

    tokens: int
    # The Models API reports the window (`max_input_tokens`); else it knows nothing (404).
    reported: bool = True
    # The model compacts by itself (`compact_20260112`) and says so through the Models API.
    api_compaction: bool = False


def _without_cache_control(block: Any) -> Any:
    if isinstance(block, dict):
        return {key: value for key, value in block.items() if key != "cache_control"}
    return block


def _compaction_at(messages: list[dict[str, Any]]) -> tuple[int, int] | None:
    """(message index, block index) of the newest `compaction` block in the messages."""
    for m in range(len(messages) - 1, -1, -1):
        content = messages[m].get("content")
        if not isinstance(content, list):
            continue
        for b in range(len(content) - 1, -1, -1):
            if isinstance(content[b], dict) and content[b].get("type") == "compaction":
                return m, b
    return None


def _from_compaction(body: dict[str, Any]) -> dict[str, Any]:
    """The request as the API reads it: what precedes the newest compaction block is dropped."""
    messages = body.get("messages") or []
    at = _compaction_at(messages)
    if at is None:
        return body
    m, b = at
    head = {**messages[m], "content": messages[m]["content"][b:]}
    return {**body, "messages": [head, *messages[m + 1 :]]}


class FakeModelServer(MessagesApiServer):
    """Answers from per-model scripts, falling back to `echo: <last user text>` when empty."""

    def __init__(self) -> None:
        super().__init__()
        self._scripts: defaultdict[str, deque[Reply]] = defaultdict(deque)
        self._requests: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self._windows: dict[str, ContextWindow] = {}
        self._summaries: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self._too_long: defaultdict[str, int] = defaultdict(int)
        # Compaction blocks the fake issued, by their `encrypted_content`, as issued.
        self._issued: dict[str, dict[str, Any]] = {}
        self._compactions: defaultdict[str, int] = defaultdict(int)
        self._summary_delays: dict[str, float] = {}

    # ---- context windows ---------------------------------------------------------------------

    def set_context_window(
        self, model: str, tokens: int, *, reported: bool = True, api_compaction: bool = False
    ) -> None:
        self._windows[model] = ContextWindow(tokens, reported, api_compaction)

    def delay_summaries(self, model: str, seconds: float) -> None:
        """Answer Reverie's summarising requests this late (to interrupt a compaction)."""
        self._summary_delays[model] = seconds

    def summary_requests(self, model: str) -> list[dict[str, Any]]:
        """Reverie's own summarising requests (not in `requests`, never from the script)."""
        return list(self._summaries.get(model, []))

    def too_long(self, model: str) -> int:
        """Requests answered 400 "prompt is too long"."""
        return self._too_long.get(model, 0)

    def api_compactions(self, model: str) -> int:
        """Compaction blocks this model issued (`compact_20260112`)."""
        return self._compactions.get(model, 0)

    @staticmethod
    def counted_tokens(body: dict[str, Any]) -> int:
        """The prompt's size as the fake's window counts it (from the newest compaction on)."""
        return prompt_tokens(_from_compaction(body))

    def model_info(self, model_id: str) -> dict[str, Any] | None:
        window = self._windows.get(model_id)
        if window is None or not window.reported:
            return None
        support = {"supported": window.api_compaction}
        return {
            "type": "model",
            "id": model_id,
            "display_name": model_id,
            "created_at": "2026-01-01T00:00:00Z",
            "max_input_tokens": window.tokens,
            "max_tokens": 8192,
            "capabilities": {
                "context_management": {
                    "supported": window.api_compaction,
                    "compact_20260112": support,
                },
            },
        }

    def _check_window(
        self, model: str, body: dict[str, Any]
    ) -> tuple[web.Response | None, dict[str, Any] | None]:
        """(an error answer, or None; the compaction block to prepend to the answer, if the
        model compacted this request by itself)."""
        window = self._windows.get(model)
        edits = (body.get("context_management") or {}).get("edits") or []
        compact = next((e for e in edits if e.get("type") == COMPACT_EDIT), None)
        if compact is not None and (window is None or not window.api_compaction):
            return error_response(400, f"context_management: {COMPACT_EDIT} is not supported"), None
        for message in body.get("messages") or []:
            for block in message.get("content") if isinstance(message.get("content"), list) else []:
                if isinstance(block, dict) and block.get("type") == "compaction":
                    issued = self._issued.get(str(block.get("encrypted_content")))
                    if issued != _without_cache_control(block):
                        return error_response(400, "compaction block was not sent verbatim"), None
        if window is None:
            return None, None
        tokens = self.counted_tokens(body)
        if compact is not None:
            trigger = (compact.get("trigger") or {}).get("value") or DEFAULT_TRIGGER
            if tokens > trigger:
                self._compactions[model] += 1
                key = f"enc_{uuid.uuid4().hex}"
                block = {
                    "type": "compaction",
                    "content": f"API summary {self._compactions[model]} of {tokens} tokens",
                    "encrypted_content": key,
                }
                self._issued[key] = copy.deepcopy(block)
                return None, block
        if tokens > window.tokens:
            self._too_long[model] += 1
            message = f"prompt is too long: {tokens} tokens > {window.tokens} maximum"
            return error_response(400, message), None
        return None, None

    async def _summary(self, model: str, body: dict[str, Any]) -> web.Response:
        self._summaries[model].append(body)
        if model in self._summary_delays:
            await asyncio.sleep(self._summary_delays[model])
        text = f"Summary {len(self._summaries[model])} of {len(json.dumps(body))} characters."
        content = [{"type": "text", "text": text}]
        usage = compute_usage(body, set(), output_length(content))
        return web.json_response(build_message(model, content, "end_turn", usage))

    def script(self, model: str, replies: list[Reply]) -> None:
        self._scripts[model].extend(replies)

    def requests(self, model: str) -> list[dict[str, Any]]:
        return list(self._requests.get(model, []))

    def remaining(self, model: str) -> int:
        """Scripted replies not yet consumed, to assert a test used all it planned."""
        return len(self._scripts.get(model, ()))

    def clear(self, model: str) -> None:
        self._scripts.pop(model, None)
        self._requests.pop(model, None)

    async def wait_for_requests(
        self, model: str, n: int, timeout: float = 10.0
    ) -> list[dict[str, Any]]:
        """Wait until `model` has received at least `n` requests, e.g. one that is being delayed."""
        try:
            async with asyncio.timeout(timeout):
                while len(self._requests.get(model, ())) < n:
                    await asyncio.sleep(0.01)
        except TimeoutError:
            got = len(self._requests.get(model, ()))
            raise TimeoutError(f"{model!r} got {got} requests, not {n}, in {timeout}s") from None
        return self.requests(model)

    async def answer(self, body: dict[str, Any]) -> web.Response:
        model = body["model"]
        system = body.get("system")
        summarising = isinstance(system, str) and system.startswith(SUMMARY_SYSTEM)
        refused, compaction = self._check_window(model, body)
        if summarising:
            return refused or await self._summary(model, body)
        self._requests[model].append(body)
        if refused is not None:
            return refused
        queue = self._scripts.get(model)
        reply = queue.popleft() if queue else Reply.text(f"echo: {last_user_text(body)}")
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.status != 200:
            return reply.error_response()
        content = list(reply.content)
        if compaction is not None:
            # The API summarised the conversation, then answered from the summary.
            counted = {**body, "messages": [{"role": "assistant", "content": [compaction]}]}
            usage = compute_usage(counted, set(), output_length(content))
            usage["iterations"] = [
                {
                    "type": "compaction",
                    "input_tokens": self.counted_tokens(body),
                    "output_tokens": 20,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
                {"type": "message", **usage},
            ]
            content = [copy.deepcopy(compaction), *content]
        else:
            usage = compute_usage(
                _from_compaction(body), self.seen_prefixes, output_length(content)
            )
        message = build_message(
            model, content, reply.stop_reason, usage, stop_details=reply.stop_details
        )
        return web.json_response(message)
