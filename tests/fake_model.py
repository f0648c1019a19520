"""A scriptable fake of the Anthropic Messages API for tests.

One server is shared by the whole test run; each test isolates itself by using its own model
name, since scripts and recorded requests are keyed by the request's `model`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from reverie.simulated_model import (
    MessagesApiServer,
    build_message,
    compute_usage,
    error_response,
    last_user_text,
    output_length,
)


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


class FakeModelServer(MessagesApiServer):
    """Answers from per-model scripts, falling back to `echo: <last user text>` when empty."""

    def __init__(self) -> None:
        super().__init__()
        self._scripts: defaultdict[str, deque[Reply]] = defaultdict(deque)
        self._requests: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)

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
        self._requests[model].append(body)
        queue = self._scripts.get(model)
        reply = queue.popleft() if queue else Reply.text(f"echo: {last_user_text(body)}")
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.status != 200:
            headers = (
                None if reply.retry_after is None else {"retry-after": f"{reply.retry_after:g}"}
            )
            return error_response(reply.status, reply.message, headers=headers)
        usage = compute_usage(body, self.seen_prefixes, output_length(reply.content))
        return web.json_response(build_message(model, reply.content, reply.stop_reason, usage))
