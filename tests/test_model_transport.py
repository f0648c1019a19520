"""The model client's two transports (REVERIE_MODEL_HTTP): the same answers, the same errors."""

from __future__ import annotations

import anthropic
import pytest

from reverie.activities.model import model_client
from reverie.settings import Settings
from tests.fake_model import FakeModelServer, Reply


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
async def test_both_transports_answer_and_fail_alike(
    settings: Settings, fake_model: FakeModelServer, model_name: str, transport: str
) -> None:
    own = settings.model_copy(update={"model_http": transport})
    client = model_client(own)
    kind = "_DefaultAioHttpClient" if transport == "aiohttp" else "AsyncHttpxClientWrapper"
    assert type(client._client).__name__ == kind
    fake_model.script(model_name, [Reply.text("hello"), Reply.error(529), Reply.error(429)])
    try:
        answer = await client.messages.create(
            model=model_name, max_tokens=16, messages=[{"role": "user", "content": "hi"}]
        )
        assert [block.text for block in answer.content if block.type == "text"] == ["hello"]
        for status in (529, 429):
            with pytest.raises(anthropic.APIStatusError) as raised:
                await client.messages.create(
                    model=model_name, max_tokens=16, messages=[{"role": "user", "content": "hi"}]
                )
            assert raised.value.status_code == status
    finally:
        await client.close()
