"""Which URLs `web_fetch` may reach under the environment's networking."""

from __future__ import annotations

import ipaddress

from yarl import URL

from reverie.activities.tools.models import Networking

_DEFAULT_PORTS = {"http": 80, "https": 443}


def refusal(networking: Networking, url: URL) -> str | None:
    """Why `url` may not be fetched, or None when it may."""
    if url.scheme not in _DEFAULT_PORTS:
        return (
            f"only http:// and https:// URLs can be fetched, not {url.scheme or 'a relative URL'}"
        )
    host = (url.host or "").lower().rstrip(".")
    if not host:
        return "the URL has no host"
    if networking.type == "unrestricted":
        return None
    port = url.port or _DEFAULT_PORTS[url.scheme]
    if any(_matches(entry, host, port) for entry in networking.allowed_hosts):
        return None
    return f"this session's environment does not allow network access to {host}"


def _matches(entry: str, host: str, port: int) -> bool:
    """`example.com`, `*.example.com` (subdomains only), either with an optional `:port`.

    A wildcard never matches an IP address: `*.0.0.1` is not a way to allow 127.0.0.1.
    """
    pattern, _, entry_port = entry.strip().lower().rstrip(".").partition(":")
    if entry_port and entry_port != str(port):
        return False
    if pattern.startswith("*."):
        return not _is_ip(host) and host.endswith(pattern[1:])
    return host == pattern


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
