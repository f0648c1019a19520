"""The fake and simulated Messages API servers, checked through the real `anthropic` SDK."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import pytest
import pytest_asyncio
from anthropic.types import Message

from reverie.simulated_model import SimulatedModelServer, simulated_reply
from tests.fake_model import FakeModelServer, Reply

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def fake() -> AsyncIterator[FakeModelServer]:
    async with FakeModelServer() as server:
        yield server


@pytest_asyncio.fixture(loop_scope="session")
async def client(fake: FakeModelServer) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(base_url=fake.base_url, api_key="x", max_retries=0)
    yield client
    await client.close()


async def ask(client: anthropic.AsyncAnthropic, model: str, text: str, **kwargs: Any) -> Message:
    messages = [{"role": "user", "content": text}]
    return await client.messages.create(model=model, max_tokens=64, messages=messages, **kwargs)


async def test_text_reply_parses_into_message(
    fake: FakeModelServer, client: anthropic.AsyncAnthropic
) -> None:
    fake.script("fake-text", [Reply.text("hello there")])
    raw = await client.messages.with_raw_response.create(
        model="fake-text", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    message = await raw.parse()
    assert isinstance(message, Message)
    assert raw.headers["request-id"].startswith("req_")
    assert message.id.startswith("msg_")
    assert message.model == "fake-text"
    assert message.content[0].type == "text" and message.content[0].text == "hello there"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens >= 1 and message.usage.output_tokens >= 1
    assert [r["messages"] for r in fake.requests("fake-text")] == [
        [{"role": "user", "content": "hi"}]
    ]


async def test_tool_use_reply(fake: FakeModelServer, client: anthropic.AsyncAnthropic) -> None:
    fake.script("fake-tool", [Reply.tool_use("bash", {"command": "ls"}, id="toolu_1", text="ok")])
    message = await ask(client, "fake-tool", "list files")
    assert [block.type for block in message.content] == ["text", "tool_use"]
    tool_use = message.content[1]
    assert tool_use.type == "tool_use"
    assert (tool_use.id, tool_use.name, tool_use.input) == ("toolu_1", "bash", {"command": "ls"})
    assert message.stop_reason == "tool_use"


async def test_rate_limit_carries_retry_after(
    fake: FakeModelServer, client: anthropic.AsyncAnthropic
) -> None:
    fake.script("fake-429", [Reply.error(429, retry_after=2)])
    with pytest.raises(anthropic.RateLimitError) as caught:
        await ask(client, "fake-429", "hi")
    assert caught.value.response.headers["retry-after"] == "2"
    assert caught.value.body["error"]["type"] == "rate_limit_error"
    assert len(fake.requests("fake-429")) == 1


@pytest.mark.parametrize(
    ("status", "error_class", "error_type"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (529, anthropic.APIStatusError, "overloaded_error"),
    ],
)
async def test_error_statuses_map_to_sdk_errors(
    fake: FakeModelServer,
    client: anthropic.AsyncAnthropic,
    status: int,
    error_class: type[anthropic.APIStatusError],
    error_type: str,
) -> None:
    model = f"fake-error-{status}"
    fake.script(model, [Reply.error(status)])
    with pytest.raises(error_class) as caught:
        await ask(client, model, "hi")
    assert caught.value.status_code == status
    assert caught.value.body["error"]["type"] == error_type


async def test_unscripted_turn_echoes(
    fake: FakeModelServer, client: anthropic.AsyncAnthropic
) -> None:
    message = await ask(client, "fake-echo", "ping")
    assert message.content[0].type == "text" and message.content[0].text == "echo: ping"
    assert message.stop_reason == "end_turn"


async def test_streaming_is_rejected(client: anthropic.AsyncAnthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="streaming not supported"):
        await ask(client, "fake-stream", "hi", stream=True)


async def test_delay_and_wait_for_requests(
    fake: FakeModelServer, client: anthropic.AsyncAnthropic
) -> None:
    fake.script("fake-slow", [Reply.text("late", delay=0.3)])
    call = asyncio.create_task(ask(client, "fake-slow", "hi"))
    await fake.wait_for_requests("fake-slow", 1, timeout=5)
    assert not call.done()
    assert (await call).content[0].text == "late"


async def test_cache_control_prefix_is_read_on_second_call(
    fake: FakeModelServer, client: anthropic.AsyncAnthropic
) -> None:
    system = [
        {"type": "text", "text": "You are terse. " * 50, "cache_control": {"type": "ephemeral"}}
    ]
    first = await ask(client, "fake-cache", "one", system=system)
    second = await ask(client, "fake-cache", "two", system=system)
    assert first.usage.cache_creation_input_tokens > 0
    assert first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    plain = await ask(client, "fake-cache", "three")
    assert plain.usage.cache_read_input_tokens == plain.usage.cache_creation_input_tokens == 0


async def test_simulated_model_is_deterministic() -> None:
    tools = [{"name": "bash", "description": "run a command", "input_schema": {"type": "object"}}]
    async with SimulatedModelServer() as server:
        client = anthropic.AsyncAnthropic(base_url=server.base_url, api_key="x", max_retries=0)
        try:
            said = [await ask(client, "sim", "hello simulated world") for _ in range(2)]
            listed = await ask(client, "sim", "please list files", tools=tools)
        finally:
            await client.close()
    assert said[0].content == said[1].content and said[0].id == said[1].id
    assert (
        said[0].content[0].text == '[simulated model] You said: "hello simulated world" (3 words).'
    )
    assert listed.stop_reason == "tool_use"
    call = listed.content[0]
    assert call.type == "tool_use" and call.name == "bash" and call.input == {"command": "ls -la"}
    result = [{"type": "tool_result", "tool_use_id": call.id, "content": "README.md"}]
    followup = {
        "model": "sim",
        "max_tokens": 64,
        "tools": tools,
        "messages": [
            {"role": "user", "content": "please list files"},
            {"role": "assistant", "content": [call.model_dump()]},
            {"role": "user", "content": result},
        ],
    }
    reply = simulated_reply(followup)
    assert reply == simulated_reply(followup)
    assert reply["content"][0]["text"] == "[simulated model] The tool returned: README.md"
