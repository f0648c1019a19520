"""The HTTP API served by the test run's own stack, and the official SDK pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import anthropic
import pytest
from aiohttp import web

from reverie.api.app import start_api
from reverie.service.client import ReverieClient
from reverie.store import keys

# Streams ping this often in tests, so that keep-alives are exercised without waiting 15 s.
TEST_KEEPALIVE_SECONDS = 0.5


@dataclass(frozen=True)
class Api:
    base_url: str
    key: str
    runner: web.AppRunner

    def sdk(self, **options: object) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            base_url=self.base_url, api_key=self.key, max_retries=0, **options
        )


@pytest.fixture(scope="session")
async def api(reverie: ReverieClient) -> AsyncIterator[Api]:
    runner, base_url = await start_api(
        reverie, "127.0.0.1", 0, keepalive_seconds=TEST_KEEPALIVE_SECONDS
    )
    created = await keys.create(reverie.pool, "tests", "tests")
    yield Api(base_url=base_url, key=created.key, runner=runner)
    await runner.cleanup()


@pytest.fixture
async def sdk(api: Api) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = api.sdk()
    yield client
    await client.close()


def current_app(api: Api) -> web.Application:
    """The application serving `api`, to look at its state (its event feed) in tests."""
    return api.runner.app
