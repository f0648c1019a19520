"""A deterministic simulated model speaking the Anthropic Messages API.

`make demo` points Reverie at it when no ANTHROPIC_API_KEY is set, so the whole agent loop
(model call, tool use, tool result, final answer) runs offline with reproducible output. The
server plumbing and usage accounting here are shared with the scriptable fake in the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import re
import uuid
from typing import Any, Self

from aiohttp import web

log = logging.getLogger(__name__)

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
MAX_BODY_BYTES = 32 * 1024 * 1024  # the real API's request size limit
_REPLY_PREVIEW = 200


def error_response(
    status: int, message: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    """An error in the API's shape, so the SDK raises the same exception class it would for real."""
    error_type = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return web.json_response(body, status=status, headers=headers)


def validate_request(body: Any) -> str | None:
    """Why the Messages API would reject this body (None if it would not), to catch bad calls."""
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    if not isinstance(body.get("max_tokens"), int):
        return "max_tokens: Field required"
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        return "messages: at least one message is required"
    if body.get("stream"):
        return "streaming not supported by this server"
    return None


def build_message(
    model: str,
    content: list[dict],
    stop_reason: str,
    usage: dict,
    *,
    message_id: str | None = None,
    stop_details: dict | None = None,
) -> dict:
    """The JSON body of a Message, complete enough for `anthropic.types.Message`."""
    body = {
        "id": message_id or f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }
    if stop_details is not None:
        body["stop_details"] = stop_details
    return body


def _prompt_entries(body: dict) -> list[tuple[str, Any]]:
    """The prompt in prompt-cache order (tools, system, messages), one entry per block."""
    entries: list[tuple[str, Any]] = [("tool", tool) for tool in body.get("tools") or []]
    system = body.get("system")
    if isinstance(system, list):
        entries += [("system", block) for block in system]
    elif system:
        entries.append(("system", system))
    for message in body.get("messages") or []:
        role, content = str(message.get("role")), message.get("content")
        if isinstance(content, list):
            entries += [(role, block) for block in content]
        else:
            entries.append((role, content))
    return entries


def prompt_tokens(body: dict) -> int:
    """The prompt's size in tokens, counted as `compute_usage` counts it (~4 chars a token)."""
    size = 0
    for tag, block in _prompt_entries(body):
        if isinstance(block, dict):
            block = {key: value for key, value in block.items() if key != "cache_control"}
        size += len(json.dumps([tag, block], sort_keys=True))
    return max(1, size // 4)


def compute_usage(body: dict, seen_prefixes: set[str], output_text_len: int) -> dict:
    """Deterministic token counts (~4 chars a token) that pretend prompt caching works.

    A prefix ending at a `cache_control` block is written to the cache (its hash joins
    `seen_prefixes`); a later request sharing a written prefix reads it back, like the real API.
    """
    sizes: list[int] = []
    hashes: list[str] = []
    breakpoints: list[int] = []
    digest = str(body.get("model", ""))
    for index, (tag, block) in enumerate(_prompt_entries(body)):
        if isinstance(block, dict) and "cache_control" in block:
            breakpoints.append(index)
            block = {key: value for key, value in block.items() if key != "cache_control"}
        text = json.dumps([tag, block], sort_keys=True)
        digest = hashlib.sha256((digest + text).encode()).hexdigest()
        sizes.append(len(text))
        hashes.append(digest)
    usage = {
        "input_tokens": max(1, sum(sizes) // 4),
        "output_tokens": max(1, output_text_len // 4),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    if not breakpoints:
        return usage
    last = breakpoints[-1]
    hit = next((i for i in range(last, -1, -1) if hashes[i] in seen_prefixes), -1)
    cached = sum(sizes[: last + 1]) // 4
    read = sum(sizes[: hit + 1]) // 4
    seen_prefixes.update(hashes[i] for i in breakpoints)
    usage["input_tokens"] = max(1, sum(sizes) // 4 - cached)
    usage["cache_creation_input_tokens"] = cached - read
    usage["cache_read_input_tokens"] = read
    return usage


def output_length(content: list[dict]) -> int:
    """Characters the model "generated", the basis of `output_tokens`."""
    return sum(
        len(block.get("text", "")) + (len(json.dumps(block["input"])) if "input" in block else 0)
        for block in content
    )


def _last_user_blocks(body: dict) -> list[dict]:
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return [{"type": "text", "text": content}]
            return [block for block in content or [] if isinstance(block, dict)]
    return []


def _first_user_blocks(body: dict) -> list[dict]:
    for message in body.get("messages") or []:
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return [{"type": "text", "text": content}]
            return [block for block in content or [] if isinstance(block, dict)]
    return []


def _text_of(blocks: Any) -> str:
    if isinstance(blocks, str):
        return blocks
    return "\n".join(b.get("text", "") for b in blocks or [] if b.get("type") == "text")


def last_user_text(body: dict) -> str:
    """The text the user last typed (tool results excluded)."""
    return _text_of(_last_user_blocks(body))


def simulated_reply(body: dict, seen_prefixes: set[str] | None = None) -> dict:
    """The simulated model's answer: a pure function of the request, ids included.

    It reports a tool result back, runs `ls -la` through an offered `bash` tool when asked to
    "list files", and otherwise echoes what the user said.
    """
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    blocks = _last_user_blocks(body)
    results = [block for block in blocks if block.get("type") == "tool_result"]
    text = _text_of(blocks)
    offers_bash = any(tool.get("name") == "bash" for tool in body.get("tools") or [])
    forced = (body.get("tool_choice") or {}).get("name")
    if forced == "submit_verdict":
        # An outcome's grader: a verdict that agrees with itself, and says it checked nothing.
        ids = re.findall(r"^(C\d+): ", _text_of(_first_user_blocks(body)), flags=re.MULTILINE)
        verdict = {
            "result": "satisfied",
            "explanation": "[simulated model] Nothing was checked: the simulated grader is "
            "always satisfied.",
            "criteria": [
                {"id": i, "met": True, "evidence": "[simulated model] not checked"}
                for i in ids or ["C1"]
            ],
        }
        tool_id = f"toolu_{digest[:24]}"
        content = [{"type": "tool_use", "id": tool_id, "name": forced, "input": verdict}]
        stop_reason = "tool_use"
    elif results:
        result_text = "\n".join(_text_of(block.get("content")) for block in results)
        answer = f"[simulated model] The tool returned: {result_text[:_REPLY_PREVIEW]}"
        content, stop_reason = [{"type": "text", "text": answer}], "end_turn"
    elif offers_bash and "list files" in text.lower():
        tool_id = f"toolu_{digest[:24]}"
        tool_input = {"command": "ls -la"}
        content = [{"type": "tool_use", "id": tool_id, "name": "bash", "input": tool_input}]
        stop_reason = "tool_use"
    else:
        said = text[:_REPLY_PREVIEW]
        answer = f'[simulated model] You said: "{said}" ({len(text.split())} words).'
        content, stop_reason = [{"type": "text", "text": answer}], "end_turn"
    usage = compute_usage(
        body, set() if seen_prefixes is None else seen_prefixes, output_length(content)
    )
    return build_message(
        body["model"], content, stop_reason, usage, message_id=f"msg_{digest[:24]}"
    )


@web.middleware
async def _api_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every answer in the API's error shape and with a `request-id`, as the SDK expects."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = error_response(exc.status, exc.reason)
    except Exception:
        log.exception("messages server failed on %s %s", request.method, request.path)
        response = error_response(500, "internal server error")
    response.headers.setdefault("request-id", f"req_{uuid.uuid4().hex[:24]}")
    return response


async def _not_found(request: web.Request) -> web.Response:
    return error_response(404, f"{request.method} {request.path} not found")


class MessagesApiServer:
    """Local `POST /v1/messages` server; subclasses only decide how to answer a valid request."""

    def __init__(self) -> None:
        self.seen_prefixes: set[str] = set()
        self._runner: web.AppRunner | None = None
        self._base_url: str | None = None

    @property
    def base_url(self) -> str:
        if self._base_url is None:
            raise RuntimeError("server is not started")
        return self._base_url

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        app = web.Application(middlewares=[_api_errors], client_max_size=MAX_BODY_BYTES)
        app.router.add_post("/v1/messages", self._handle)
        app.router.add_get("/v1/models/{model_id}", self._model)
        app.router.add_route("*", "/{tail:.*}", _not_found)
        # Short shutdown and cancelled handlers: a test's slow scripted reply must not stall stop().
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=0.25, handler_cancellation=True
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self._base_url = f"http://{host}:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self._base_url = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return error_response(400, "request body is not valid JSON")
        problem = validate_request(body)
        if problem is not None:
            return error_response(400, problem)
        return await self.answer(body)

    async def answer(self, body: dict) -> web.Response:
        raise NotImplementedError

    async def _model(self, request: web.Request) -> web.Response:
        model_id = request.match_info["model_id"]
        info = self.model_info(model_id)
        if info is None:
            return error_response(404, f"model {model_id!r} not found")
        return web.json_response(info)

    def model_info(self, model_id: str) -> dict | None:
        """The Models API's description of a model (`BetaModelInfo`); None: unknown (404)."""
        return None


class SimulatedModelServer(MessagesApiServer):
    """Serves `simulated_reply`, with prompt-cache accounting across the server's lifetime."""

    async def answer(self, body: dict) -> web.Response:
        return web.json_response(simulated_reply(body, self.seen_prefixes))


async def _serve(host: str, port: int) -> None:
    server = SimulatedModelServer()
    await server.start(host, port)
    print(f"simulated model listening on {server.base_url}", flush=True)
    print(f"  export ANTHROPIC_BASE_URL={server.base_url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main() -> None:
    """Serve the simulated model in the foreground until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.host, args.port))


if __name__ == "__main__":
    main()
