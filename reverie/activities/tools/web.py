"""The `web_fetch` tool: one GET, every hop checked against the session's egress policy.

The policy is applied twice per hop: to the URL's host (the `limited` allow list, IP literals)
and, through the resolver aiohttp dials from, to every address the name resolves to, so the
address actually connected to is always one the policy allows (no DNS rebinding).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from reverie.activities.tools.heartbeat import with_heartbeat
from reverie.activities.tools.html_text import readable_text
from reverie.activities.tools.inputs import WebFetchInput
from reverie.activities.tools.models import ToolOutcome
from reverie.egress import EgressPolicy, EgressRefused, dial_only

BODY_LIMIT = 100 * 1024
MAX_REDIRECTS = 5
TIMEOUT_SECONDS = 30.0
_REDIRECTS = {301, 302, 303, 307, 308}
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript")
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_DEFAULT_PORTS = {"http": 80, "https": 443}


class WebRefused(Exception):
    """The fetch (or search) cannot go on; the message is meant for the model."""


class PolicyResolver(AbstractResolver):
    """Resolves names for aiohttp through the egress policy: only allowed addresses come back,
    and aiohttp dials nothing else."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            addresses = await self._policy.resolve(host, port)
        except EgressRefused as refused:
            raise WebRefused(str(refused)) from refused
        return dial_only(host, port, addresses)

    async def close(self) -> None:
        return None


async def run_web_fetch(
    params: WebFetchInput, policy: EgressPolicy, heartbeat: Callable[[], None]
) -> ToolOutcome:
    try:
        return await with_heartbeat(
            asyncio.wait_for(_fetch(params, policy), TIMEOUT_SECONDS), heartbeat
        )
    except WebRefused as refused:
        return ToolOutcome.error(f"web_fetch: {refused}")
    except TimeoutError:
        return ToolOutcome.error(f"web_fetch: {params.url}: timed out after {TIMEOUT_SECONDS:g} s")
    except (aiohttp.ClientError, ValueError, UnicodeError) as error:
        return ToolOutcome.error(f"web_fetch: {params.url}: {type(error).__name__}: {error}")


async def _fetch(params: WebFetchInput, policy: EgressPolicy) -> ToolOutcome:
    url = _parse(params.url)
    connector = aiohttp.TCPConnector(resolver=PolicyResolver(policy), use_dns_cache=False)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        for _ in range(MAX_REDIRECTS + 1):
            if reason := _refusal(policy, url):
                raise WebRefused(f"{url}: {reason}")
            async with session.get(url, allow_redirects=False) as response:
                location = response.headers.get("Location")
                if response.status in _REDIRECTS and location:
                    url = url.join(_parse(location))
                    continue
                return await _outcome(url, response, params.max_length)
    raise WebRefused(f"{params.url}: more than {MAX_REDIRECTS} redirects")


def _refusal(policy: EgressPolicy, url: URL) -> str | None:
    """Why this hop may not be fetched, judged before connecting: the scheme, the name, and an
    IP literal (which aiohttp dials without asking the resolver)."""
    if url.scheme not in _DEFAULT_PORTS:
        return (
            f"only http:// and https:// URLs can be fetched, not {url.scheme or 'a relative URL'}"
        )
    host = url.host or ""
    port = url.port or _DEFAULT_PORTS[url.scheme]
    if reason := policy.host_refusal(host, port):
        return reason
    literal = _ip_literal(host)
    return policy.address_refusal(literal) if literal is not None else None


def _ip_literal(host: str) -> Any:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _parse(raw: str) -> URL:
    try:
        return URL(raw.strip())
    except (ValueError, TypeError) as error:
        raise WebRefused(f"not a valid URL: {raw!r}") from error


async def _outcome(
    url: URL, response: aiohttp.ClientResponse, max_length: int | None
) -> ToolOutcome:
    body, cut = await _read_capped(response)
    content_type = response.content_type or ""
    status = f"HTTP {response.status} {response.reason or ''}".strip()
    header = f"URL: {url}\nStatus: {status}\nContent-Type: {content_type or 'unknown'}\n\n"
    text = _as_text(body, content_type, response.charset)
    if text is not None and content_type.startswith(_HTML_TYPES):
        text = await readable_text(text)
    if text is None:
        return ToolOutcome.error(
            f"{header}[the response is {content_type or 'binary data'}, which is not text; "
            f"{len(body):,}{'+' if cut else ''} bytes not shown]"
        )
    notes = []
    if cut:
        total = response.content_length
        size = f"of {total:,} bytes " if total else ""
        notes.append(f"[body cut: only the first {BODY_LIMIT:,} bytes {size}were read]")
    if max_length is not None and len(text) > max_length:
        notes.append(f"[text cut at max_length={max_length:,} of {len(text):,} characters]")
        text = text[:max_length]
    result = header + text + ("\n\n" + "\n".join(notes) if notes else "")
    return ToolOutcome.text(result, is_error=response.status >= 400)


async def _read_capped(response: aiohttp.ClientResponse) -> tuple[bytes, bool]:
    body = bytearray()
    async for chunk in response.content.iter_chunked(65536):
        body += chunk
        if len(body) > BODY_LIMIT:
            return bytes(body[:BODY_LIMIT]), True
    return bytes(body), False


def _as_text(body: bytes, content_type: str, charset: str | None) -> str | None:
    """The body as text (HTML still marked up), or None for binary content."""
    textual = content_type.startswith(_TEXT_TYPES) or content_type.endswith(("+json", "+xml"))
    if not textual and content_type not in ("", "application/octet-stream"):
        return None
    try:
        decoded = body.decode(charset or "utf-8", errors="strict" if not textual else "replace")
    except (UnicodeDecodeError, LookupError):
        if not textual:
            return None
        decoded = body.decode("utf-8", errors="replace")
    if not textual and "\x00" in decoded:
        return None
    return decoded
