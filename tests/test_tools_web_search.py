"""`web_search` against a local fake SearXNG: the operator's endpoint, and nothing else.

The fake provider listens on 127.0.0.1, which no session may reach and which no test opts in
here: a search succeeds only because the endpoint is the configured one, while `web_fetch` to
the very same address is still refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest_asyncio
from aiohttp import web

from reverie.activities.tools import ToolOutcome, Workspace, run_builtin_tool
from reverie.activities.tools.web_search import BODY_LIMIT
from reverie.egress import EgressPolicy
from reverie.settings import Settings
from reverie.starter.client import ReverieClient
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import all_events, worker_process

RESULTS = [
    {"url": f"https://example.com/{n}", "title": f"Result {n}", "content": f"Snippet {n}."}
    for n in range(1, 16)
]
# What the session's environment allows: everything public, nothing internal.
UNRESTRICTED = EgressPolicy.for_networking("unrestricted", [])


class FakeSearx:
    """`GET /search?q=...&format=json` as SearXNG answers it; other paths misbehave."""

    def __init__(self) -> None:
        self.queries: list[dict[str, str]] = []
        self.redirect_target_hit = False

    def app(self) -> web.Application:
        async def search(request: web.Request) -> web.Response:
            self.queries.append(dict(request.query))
            if request.query.get("format") != "json":
                return web.Response(status=400, text="format must be json")
            return web.json_response({"query": request.query["q"], "results": RESULTS})

        async def redirect(_: web.Request) -> web.Response:
            raise web.HTTPFound("/target")

        async def target(_: web.Request) -> web.Response:
            self.redirect_target_hit = True
            return web.json_response({"results": RESULTS})

        async def broken(_: web.Request) -> web.Response:
            return web.Response(status=500, text="upstream engines failed")

        async def html(_: web.Request) -> web.Response:
            return web.Response(text="<html>not json</html>", content_type="text/html")

        async def huge(_: web.Request) -> web.Response:
            return web.json_response({"results": [{"url": "x" * (BODY_LIMIT + 10)}]})

        app = web.Application()
        for path, handler in [
            ("/search", search),
            ("/redirect", redirect),
            ("/target", target),
            ("/broken", broken),
            ("/html", html),
            ("/huge", huge),
        ]:
            app.router.add_get(path, handler)
        return app


@pytest_asyncio.fixture(loop_scope="session")
async def searx() -> AsyncIterator[tuple[str, FakeSearx]]:
    fake = FakeSearx()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", fake
    await runner.cleanup()


async def run(
    tmp_path: Path, name: str, tool_input: dict[str, Any], search_url: str | None
) -> ToolOutcome:
    workspace = Workspace.for_session(tmp_path / "workspaces", "sesn_search")
    return await run_builtin_tool(
        name, tool_input, workspace, UNRESTRICTED, sandbox="none", search_url=search_url
    )


def text(outcome: ToolOutcome) -> str:
    return outcome.content[0]["text"]


async def test_without_a_provider_the_model_is_told_so(tmp_path: Path) -> None:
    outcome = await run(tmp_path, "web_search", {"query": "reverie"}, None)
    assert outcome.is_error
    assert "no search provider is configured" in text(outcome)
    assert "REVERIE_WEB_SEARCH_URL" in text(outcome)


async def test_the_configured_endpoint_is_reached_and_nothing_else(
    searx: tuple[str, FakeSearx], tmp_path: Path
) -> None:
    base, fake = searx
    outcome = await run(
        tmp_path, "web_search", {"query": "durable agents"}, f"{base}/search?language=en"
    )
    assert not outcome.is_error, text(outcome)
    assert fake.queries[-1] == {"q": "durable agents", "format": "json", "language": "en"}
    body = text(outcome)
    assert "untrusted content" in body and "not as instructions" in body
    assert "1. Result 1\n   https://example.com/1\n   Snippet 1." in body
    assert "10. Result 10" in body and "Result 11" not in body  # ten by default
    # The same address through the session's own policy: refused, as ever.
    fetched = await run(tmp_path, "web_fetch", {"url": f"{base}/search?q=x"}, f"{base}/search")
    assert fetched.is_error and "loopback" in text(fetched)


async def test_max_results(searx: tuple[str, FakeSearx], tmp_path: Path) -> None:
    base, _ = searx
    outcome = await run(tmp_path, "web_search", {"query": "q", "max_results": 2}, f"{base}/search")
    assert "2. Result 2" in text(outcome) and "3. Result 3" not in text(outcome)
    invalid = await run(tmp_path, "web_search", {"q": "typo"}, f"{base}/search")
    assert invalid.is_error and "query" in text(invalid)


async def test_a_misbehaving_provider_is_an_error_result(
    searx: tuple[str, FakeSearx], tmp_path: Path
) -> None:
    base, fake = searx
    cases = {
        "/redirect": "redirect",
        "/broken": "HTTP 500",
        "/html": "not JSON",
        "/huge": "larger than",
    }
    for path, expected in cases.items():
        outcome = await run(tmp_path, "web_search", {"query": "q"}, base + path)
        assert outcome.is_error and expected in text(outcome), (path, text(outcome))
    assert not fake.redirect_target_hit  # redirects are not followed


def test_the_operator_endpoint_policy_allows_one_host_and_port() -> None:
    policy = EgressPolicy.operator_endpoint("127.0.0.1", 8888)
    assert policy.host_refusal("127.0.0.1", 8888) is None
    assert policy.host_refusal("127.0.0.1", 8889) is not None
    assert policy.host_refusal("localhost", 8888) is not None
    assert policy.host_refusal("example.com", 443) is not None
    assert not policy.reaches_network  # nothing beyond that one endpoint


def test_the_setting_is_checked() -> None:
    assert Settings(REVERIE_WEB_SEARCH_URL="  ").web_search_url is None
    for bad in ("ftp://x/search", "searx.local/search", "http://x/#frag"):
        try:
            Settings(REVERIE_WEB_SEARCH_URL=bad)
        except ValueError as error:
            assert "REVERIE_WEB_SEARCH_URL" in str(error)
        else:
            raise AssertionError(f"{bad!r} was accepted")


async def test_a_session_searches_through_the_operators_provider(
    own_queue: ReverieClient,
    fake_model: FakeModelServer,
    model_name: str,
    searx: tuple[str, FakeSearx],
) -> None:
    """End to end, in a worker process that has the setting (and no egress opt-in at all): the
    plain toolset offers web_search, its results go back to the model as text."""
    base, _ = searx
    fake_model.script(
        model_name,
        [Reply.tool_use("web_search", {"query": "temporal workflows"}), Reply.text("found it")],
    )
    agent = await own_queue.create_agent(
        {"name": "searcher", "model": model_name, "tools": [{"type": "agent_toolset_20260401"}]}
    )
    env = {"REVERIE_WEB_SEARCH_URL": f"{base}/search", "REVERIE_EGRESS_ALLOW_NETWORKS": ""}
    async with worker_process(own_queue.settings, env=env):
        session = await own_queue.create_session({"agent": agent.id})
        await own_queue.send_message(session.id, "search, please")
        done = await own_queue.wait_until_settled(session.id, timeout=60)
    assert done.status == "idle"
    events = await all_events(own_queue, session.id)
    result = next(e for e in events if e.type == "agent.tool_result")
    assert result.payload["is_error"] is False
    assert "Result 1" in result.payload["content"][0]["text"]
    offered = {tool["name"] for tool in fake_model.requests(model_name)[0]["tools"]}
    assert "web_search" in offered
    sent_back = fake_model.requests(model_name)[1]["messages"][-1]["content"][0]
    assert sent_back["type"] == "tool_result" and "Result 1" in str(sent_back["content"])
