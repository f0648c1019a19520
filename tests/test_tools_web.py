"""`web_fetch` against a local server: the environment's networking decides every hop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from aiohttp import web
from yarl import URL

from reverie.activities.tools import Networking, ToolOutcome, Workspace, run_builtin_tool
from reverie.activities.tools.host_policy import refusal

UNRESTRICTED = Networking(type="unrestricted")
PAGE = """<!doctype html><html><head><title>Hello page</title>
<style>body { color: red }</style><script>alert('no')</script></head>
<body><h1>Heading</h1><p>First &amp; foremost.</p><ul><li>one</li><li>two</li></ul></body></html>"""


def _app() -> web.Application:
    async def page(_: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    async def plain(_: web.Request) -> web.Response:
        return web.Response(text="just text")

    async def big(_: web.Request) -> web.Response:
        return web.Response(text="x" * 300_000)

    async def binary(_: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG\x00\x01", content_type="image/png")

    async def missing(_: web.Request) -> web.Response:
        return web.Response(status=404, text="nothing here")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"/loop?n={int(request.query.get('n', '0')) + 1}")

    app = web.Application()
    for path, handler in [
        ("/page", page),
        ("/plain", plain),
        ("/big", big),
        ("/binary", binary),
        ("/missing", missing),
        ("/redirect", redirect),
        ("/loop", loop),
    ]:
        app.router.add_get(path, handler)
    return app


@pytest_asyncio.fixture(loop_scope="session")
async def server() -> AsyncIterator[str]:
    runner = web.AppRunner(_app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def fetch(tmp_path: Path, url: str, networking: Networking, **extra: object) -> ToolOutcome:
    workspace = Workspace.for_session(tmp_path / "workspaces", "sesn_web")
    tool_input = {"url": url, **extra}
    return await run_builtin_tool("web_fetch", tool_input, workspace, networking, sandbox="none")


def text(outcome: ToolOutcome) -> str:
    return outcome.content[0]["text"]


async def test_unrestricted_fetches_html_as_text(server: str, tmp_path: Path) -> None:
    outcome = await fetch(tmp_path, f"{server}/page", UNRESTRICTED)
    assert not outcome.is_error
    body = text(outcome)
    assert "Status: HTTP 200 OK" in body
    assert "# Hello page" in body and "Heading" in body and "First & foremost." in body
    assert "<p>" not in body and "alert" not in body and "color: red" not in body


async def test_limited_allows_listed_hosts(server: str, tmp_path: Path) -> None:
    allowed = Networking(type="limited", allowed_hosts=["127.0.0.1"])
    outcome = await fetch(tmp_path, f"{server}/plain", allowed)
    assert not outcome.is_error and text(outcome).endswith("just text")


async def test_limited_refuses_other_hosts(server: str, tmp_path: Path) -> None:
    for hosts in ([], ["example.com"], ["*.0.0.1"]):
        outcome = await fetch(
            tmp_path, f"{server}/plain", Networking(type="limited", allowed_hosts=hosts)
        )
        assert outcome.is_error
        assert "does not allow network access to 127.0.0.1" in text(outcome)


async def test_redirect_to_a_disallowed_host_is_refused(server: str, tmp_path: Path) -> None:
    allowed = Networking(type="limited", allowed_hosts=["127.0.0.1"])
    port = URL(server).port
    to = f"http://localhost:{port}/plain"
    outcome = await fetch(tmp_path, f"{server}/redirect?to={to}", allowed)
    assert outcome.is_error and "does not allow network access to localhost" in text(outcome)
    followed = await fetch(tmp_path, f"{server}/redirect?to=/plain", allowed)
    assert not followed.is_error and text(followed).endswith("just text")


async def test_redirect_limit(server: str, tmp_path: Path) -> None:
    outcome = await fetch(tmp_path, f"{server}/loop", UNRESTRICTED)
    assert outcome.is_error and "more than 5 redirects" in text(outcome)


async def test_body_cap_and_max_length(server: str, tmp_path: Path) -> None:
    capped = await fetch(tmp_path, f"{server}/big", UNRESTRICTED)
    assert "[body cut: only the first 102,400 bytes of 300,000 bytes were read]" in text(capped)
    short = await fetch(tmp_path, f"{server}/plain", UNRESTRICTED, max_length=4)
    assert "\njust\n" in text(short) and "max_length=4" in text(short)


async def test_binary_errors_and_bad_urls(server: str, tmp_path: Path) -> None:
    binary = await fetch(tmp_path, f"{server}/binary", UNRESTRICTED)
    assert binary.is_error and "image/png, which is not text" in text(binary)
    missing = await fetch(tmp_path, f"{server}/missing", UNRESTRICTED)
    assert missing.is_error and "HTTP 404" in text(missing) and "nothing here" in text(missing)
    for url in ("file:///etc/passwd", "ftp://example.com/x", "not a url"):
        outcome = await fetch(tmp_path, url, UNRESTRICTED)
        assert outcome.is_error and "only http:// and https://" in text(outcome), url
    closed = await fetch(tmp_path, "http://127.0.0.1:9/", UNRESTRICTED)
    assert closed.is_error


def test_host_patterns() -> None:
    policy = Networking(
        type="limited", allowed_hosts=["example.com", "*.docs.example.org", "api.test:8443"]
    )
    assert refusal(policy, URL("https://example.com/a")) is None
    assert refusal(policy, URL("http://EXAMPLE.com./a")) is None
    assert refusal(policy, URL("https://sub.example.com/")) is not None
    assert refusal(policy, URL("https://a.docs.example.org/")) is None
    assert refusal(policy, URL("https://docs.example.org/")) is not None
    assert refusal(policy, URL("https://evildocs.example.org/")) is not None
    assert refusal(policy, URL("https://api.test:8443/")) is None
    assert refusal(policy, URL("https://api.test/")) is not None
