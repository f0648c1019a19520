"""Where webhooks may go: the egress policy (`egress.py`) applied to endpoint URLs.

Whoever registers an endpoint is treated like the model: an attacker who would like Reverie to
POST to its own loopback services, the cloud metadata address or the private network. So:

- at registration, the URL must be `https` (plain `http` only to addresses inside
  REVERIE_WEBHOOK_ALLOW_NETWORKS, the operator's opt-in), carry no credentials or fragment, and
  its host must resolve, with every address public (or opted in);
- at every attempt, aiohttp dials only addresses this module's resolver hands it, checked again
  at that moment (a DNS answer that changed since registration reaches nothing internal), and
  redirects are never followed.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from reverie.egress import (
    EgressPolicy,
    EgressRefused,
    IPAddress,
    dial_only,
    normalise_host,
    resolve_name,
)

_DEFAULT_PORTS = {"http": 80, "https": 443}


class WebhookRefused(Exception):
    """A URL or an address a webhook may not reach; the message says why."""


def policy_for(allowed_networks: tuple[str, ...]) -> EgressPolicy:
    """Public addresses, and the networks the operator opted webhooks into."""
    return EgressPolicy(mode="unrestricted", allowed_networks=allowed_networks)


def _reason(text: str) -> str:
    return text.replace("it is never reachable from a session", "webhooks never go there")


def parse(raw: str) -> URL:
    """The URL, if its form is acceptable (the addresses are checked separately)."""
    if not isinstance(raw, str) or raw != raw.strip() or not raw:
        raise WebhookRefused("the URL must be a non-empty string without surrounding spaces")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in raw):
        raise WebhookRefused("the URL must not contain spaces or control characters")
    try:
        url = URL(raw)
    except (ValueError, TypeError) as error:
        raise WebhookRefused(f"not a valid URL: {error}") from None
    if url.scheme not in _DEFAULT_PORTS:
        raise WebhookRefused(f"the URL must be https:// (not {url.scheme or 'relative'})")
    if url.user is not None or url.password is not None:
        raise WebhookRefused("the URL must not carry credentials (user:password@)")
    if url.fragment:
        raise WebhookRefused("the URL must not have a #fragment")
    if not url.host:
        raise WebhookRefused("the URL has no host")
    try:
        normalise_host(url.host)
    except ValueError as error:
        raise WebhookRefused(str(error)) from None
    return url


def _port(url: URL) -> int:
    return url.port or _DEFAULT_PORTS[url.scheme or "https"]


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _inside(address: str | IPAddress, networks: tuple[str, ...]) -> bool:
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for entry in networks:
        net = ipaddress.ip_network(entry, strict=False)
        if net.version == ip.version and ip in net:
            return True
    return False


def address_refusal(
    url: URL, address: str | IPAddress, allowed_networks: tuple[str, ...]
) -> str | None:
    """Why this URL may not be delivered to this address (None: it may)."""
    policy = policy_for(allowed_networks)
    if reason := policy.address_refusal(address):
        return _reason(reason)
    if url.scheme == "http" and not _inside(address, allowed_networks):
        return (
            f"{address} is a public address: plain http:// is only for receivers inside "
            "REVERIE_WEBHOOK_ALLOW_NETWORKS; use https://"
        )
    return None


async def check_registration(raw: str, allowed_networks: tuple[str, ...]) -> str:
    """The URL to keep, or `WebhookRefused` with the reason (every address the host resolves to
    must be allowed: a name that also points inside is refused, not filtered)."""
    url = parse(raw)
    host = normalise_host(url.host or "")
    port = _port(url)
    literal = _literal(host)
    if literal is not None:
        addresses: list[str] = [str(literal)]
    else:
        addresses = await resolve_name(host, port, WebhookRefused)
        if not addresses:
            raise WebhookRefused(f"{host} has no address")
    for address in addresses:
        if reason := address_refusal(url, address, allowed_networks):
            raise WebhookRefused(reason if literal is not None else f"{host}: {reason}")
    return str(url)


class WebhookResolver(AbstractResolver):
    """aiohttp's resolver for one delivery: the addresses the policy allows right now, and for
    `http://` only those inside the opted-in networks. aiohttp dials nothing else."""

    def __init__(self, url: URL, allowed_networks: tuple[str, ...]) -> None:
        self._url = url
        self._networks = allowed_networks
        self._policy = policy_for(allowed_networks)
        self.refusal: str | None = None

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            addresses = await self._policy.resolve(host, port)
        except EgressRefused as refused:
            self.refusal = _reason(str(refused))
            raise WebhookRefused(self.refusal) from None
        if self._url.scheme == "http":
            kept = [a for a in addresses if _inside(a, self._networks)]
            if not kept:
                self.refusal = address_refusal(self._url, addresses[0], self._networks)
                raise WebhookRefused(self.refusal or "refused")
            addresses = kept
        return dial_only(host, port, addresses)

    async def close(self) -> None:
        return None


def literal_refusal(url: URL, allowed_networks: tuple[str, ...]) -> str | None:
    """aiohttp dials an IP literal without asking the resolver: it is checked here first."""
    literal = _literal(url.host or "")
    if literal is None:
        return None
    return address_refusal(url, literal, allowed_networks)
