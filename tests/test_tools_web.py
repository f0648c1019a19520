"""`web_fetch` against a local server: the session's egress policy decides every hop.

The test server listens on loopback, which no session may reach unless the operator opts a
network in; the tests opt in 127.0.0.1 only, so other loopback addresses stay refused.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from yarl import URL

from reverie.activities.tools import ToolOutcome, Workspace, run_builtin_tool
from reverie.egress import EgressPolicy

LOOPBACK_OPT_IN = ("127.0.0.1/32",)


def policy(kind: str, hosts: list[str] | None = None, opt_in: bool = True) -> EgressPolicy:
    networks = LOOPBACK_OPT_IN if opt_in else ()
    return EgressPolicy.for_networking(kind, hosts or [], networks)


UNRESTRICTED = policy("unrestricted")
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

    async def bomb(_: web.Request) -> web.Response:
        # Quadratic for Python's HTMLParser: about a minute and a half of CPU in one process.
        return web.Response(text=("<a " * 34_133)[:102_400], content_type="text/html")

    async def malformed(_: web.Request) -> web.Response:
        return web.Response(text="<html><p>kept words</p><![<![ x", content_type="text/html")

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
        ("/bomb", bomb),
        ("/malformed", malformed),
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


async def fetch(tmp_path: Path, url: str, egress: EgressPolicy, **extra: object) -> ToolOutcome:
    workspace = Workspace.for_session(tmp_path / "workspaces", "sesn_web")
    tool_input = {"url": url, **extra}
    return await run_builtin_tool("web_fetch", tool_input, workspace, egress, sandbox="none")


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
    allowed = policy("limited", ["127.0.0.1"])
    outcome = await fetch(tmp_path, f"{server}/plain", allowed)
    assert not outcome.is_error and text(outcome).endswith("just text")


async def test_limited_refuses_other_hosts(server: str, tmp_path: Path) -> None:
    for hosts in ([], ["example.com"], ["*.0.0.1"]):
        outcome = await fetch(tmp_path, f"{server}/plain", policy("limited", hosts))
        assert outcome.is_error
        assert "network access" in text(outcome) and "127.0.0.1" in text(outcome)


async def test_redirect_to_a_disallowed_host_is_refused(server: str, tmp_path: Path) -> None:
    allowed = policy("limited", ["127.0.0.1"])
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
    limited = EgressPolicy.for_networking(
        "limited", ["example.com", "*.docs.example.org", "api.test:8443"]
    )
    assert limited.host_refusal("example.com", 443) is None
    assert limited.host_refusal("EXAMPLE.com.", 80) is None
    assert limited.host_refusal("sub.example.com", 443) is not None
    assert limited.host_refusal("a.docs.example.org", 443) is None
    assert limited.host_refusal("docs.example.org", 443) is not None
    assert limited.host_refusal("evildocs.example.org", 443) is not None
    assert limited.host_refusal("api.test", 8443) is None
    assert limited.host_refusal("api.test", 443) is not None


# --- internal addresses: never reachable, however they are spelt ------------------------------

INTERNAL_URLS = [
    "http://127.0.0.1:{port}/plain",
    "http://127.0.0.2:{port}/plain",
    "http://localhost:{port}/plain",
    "http://0.0.0.0:{port}/plain",
    "http://0x7f000001:{port}/plain",
    "http://2130706433:{port}/plain",
    "http://0177.0.0.1:{port}/plain",
    "http://127.1:{port}/plain",
    "http://[::1]:{port}/plain",
    "http://[::ffff:127.0.0.1]:{port}/plain",
    "http://[::ffff:7f00:1]:{port}/plain",
    "http://allowed.example@127.0.0.1:{port}/plain",
    "http://127.0.0.1:{port}#@example.com/plain",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://10.0.0.1/",
    "http://192.168.0.1/",
    "http://100.64.0.1/",
    "http://224.0.0.1/",
]


async def test_unrestricted_never_reaches_internal_addresses(server: str, tmp_path: Path) -> None:
    port = URL(server).port
    for template in INTERNAL_URLS:
        url = template.format(port=port)
        outcome = await fetch(tmp_path, url, policy("unrestricted", opt_in=False))
        assert outcome.is_error, url
        assert "just text" not in text(outcome), url
        assert "Status: HTTP" not in text(outcome), url
        # Refused by the policy, or (numeric spellings aiohttp will not dial) as a bad URL.
        assert "never reachable from a session" in text(outcome) or (
            "not a canonical" in text(outcome)
        ), (url, text(outcome))


async def test_redirect_to_another_loopback_address_is_refused(server: str, tmp_path: Path) -> None:
    # 127.0.0.1 is opted in, 127.0.0.2 (same server, same port) is not: the redirect is
    # checked on the address it would connect to.
    port = URL(server).port
    to = f"http://127.0.0.2:{port}/plain"
    outcome = await fetch(tmp_path, f"{server}/redirect?to={to}", UNRESTRICTED)
    assert outcome.is_error and "127.0.0.2 is a loopback address" in text(outcome)


async def test_allowed_name_resolving_to_loopback_is_refused(server: str, tmp_path: Path) -> None:
    # DNS rebinding: the name is allowed, the address it resolves to is not.
    port = URL(server).port
    outcome = await fetch(
        tmp_path, f"http://localhost:{port}/plain", policy("limited", ["localhost"], opt_in=False)
    )
    assert outcome.is_error and "is a loopback address" in text(outcome)


async def test_default_environment_reaches_nothing(server: str, tmp_path: Path) -> None:
    outcome = await fetch(tmp_path, f"{server}/plain", policy("limited", [], opt_in=True))
    assert outcome.is_error and "no network access" in text(outcome)


async def test_hostile_html_never_stalls_the_worker(server: str, tmp_path: Path) -> None:
    """Parsing runs in a child process under a deadline: the event loop, shared by every
    session on the worker, keeps ticking, and the page still comes back as text."""
    import asyncio
    import time

    stalls: list[float] = []
    stop = False

    async def ticker() -> None:
        last = time.monotonic()
        while not stop:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            stalls.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    try:
        bomb = await fetch(tmp_path, f"{server}/bomb", UNRESTRICTED)
        malformed = await fetch(tmp_path, f"{server}/malformed", UNRESTRICTED)
    finally:
        stop = True
        await ticking
    assert not bomb.is_error and "Status: HTTP 200" in text(bomb)
    assert not malformed.is_error and "kept words" in text(malformed)
    assert max(stalls) < 1.0, max(stalls)


# Stands for the worker's public address (a real public one, so that only the "own host" rule
# can refuse it); it is on the loopback interface for the length of one test.
PUBLIC_TEST_ADDRESS = "1.2.3.4"


async def test_the_worker_hosts_own_public_address_is_refused(server: str, tmp_path: Path) -> None:
    """A VPS's public address reaches every service bound to 0.0.0.0, over loopback."""
    import ipaddress
    import subprocess

    from reverie.egress import is_local_address

    address = ipaddress.ip_address(PUBLIC_TEST_ADDRESS)
    assert UNRESTRICTED.address_refusal(address) is None  # public: nothing else refuses it
    added = subprocess.run(
        ["ip", "addr", "add", f"{address}/32", "dev", "lo"], capture_output=True, check=False
    )
    if added.returncode != 0:
        pytest.skip(f"cannot add an address to lo here: {added.stderr.decode().strip()}")
    try:
        assert is_local_address(address)
        port = URL(server).port
        outcome = await fetch(tmp_path, f"http://{address}:{port}/plain", UNRESTRICTED)
    finally:
        subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", "lo"], check=False)
    assert outcome.is_error and "just text" not in text(outcome)
    assert "an address of the worker's own host" in text(outcome)
    assert not is_local_address(address)
