"""The one outbound policy: which hosts and addresses a connection made for a session may reach.

Every outbound connection Reverie makes on an agent's behalf (web_fetch, the sandbox's proxy,
later webhooks and MCP servers) asks this module. Two checks, both always applied:

1. **The name** (`limited` only): the host must match one of the environment's
   `allowed_hosts` (`example.com`, `*.example.com` for subdomains, either with `:port`).
2. **The address actually connected to**: after DNS, every candidate address is checked and
   only the allowed ones are dialled, so a name that resolves to 127.0.0.1 (DNS rebinding) or
   an IP literal in any spelling (`0x7f000001`, `[::ffff:127.0.0.1]`) reaches nothing internal.
   Loopback, private, link-local (cloud metadata), CGNAT, multicast, reserved and unspecified
   addresses are refused, including IPv4 addresses hidden in IPv6 forms (mapped, 6to4, NAT64),
   unless the operator opts a network in (`REVERIE_EGRESS_ALLOW_NETWORKS`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import itertools
import re
import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from aiohttp.abc import ResolveResult

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Networks that `is_global` lets through but that no session has business reaching.
_ALSO_BLOCKED: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("224.0.0.0/4"),  # multicast
    ipaddress.ip_network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.ip_network("ff00::/8"),  # multicast
    ipaddress.ip_network("64:ff9b:1::/48"),  # local-use NAT64
    ipaddress.ip_network("2001::/23"),  # IETF protocol assignments (Teredo, ORCHIDs...)
    ipaddress.ip_network("2002::/16"),  # 6to4: checked through its embedded IPv4 below
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
CONNECT_TIMEOUT_SECONDS = 15.0
RESOLVE_TIMEOUT_SECONDS = 10.0
# Labels of letters, digits, hyphens and underscores (seen in real service names).
_HOST_NAME = re.compile(
    r"(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*"
)
# Lookups get threads of their own: a session that asks for many names whose DNS never answers
# must not occupy the event loop's default executor, which everything else shares.
_RESOLVER_THREADS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="reverie-egress-dns")


class EgressRefused(Exception):
    """A connection the policy does not allow; the message is meant for the model."""


async def resolve_name(name: str, port: int, refusal: type[Exception]) -> list[str]:
    """Every address the system resolver (`socket.getaddrinfo`, in threads of its own) gives
    `name`, distinct, in its order; `refusal(reason)` raised when it fails or takes too long.
    Whatever the event loop (uvloop resolves through libuv), policies check what the system
    resolver answers, the answer every other program on the host gets."""
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().run_in_executor(
                _RESOLVER_THREADS,
                functools.partial(
                    socket.getaddrinfo,
                    name,
                    port,
                    type=socket.SOCK_STREAM,
                    proto=socket.IPPROTO_TCP,
                ),
            ),
            RESOLVE_TIMEOUT_SECONDS,
        )
    except (OSError, UnicodeError) as error:
        raise refusal(f"{name} could not be resolved: {error}") from error
    except TimeoutError as error:
        raise refusal(
            f"{name} could not be resolved within {RESOLVE_TIMEOUT_SECONDS:g} s"
        ) from error
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


class EgressPolicy(BaseModel):
    """What one session's outbound connections may reach.

    `none` reaches nothing (the default environment); `limited` only its `allowed_hosts`;
    `unrestricted` any public address. `allowed_networks` are the operator's opt-ins (e.g. a
    company proxy on 10.0.0.0/8): addresses inside them pass the address check.
    """

    model_config = ConfigDict(frozen=True)

    mode: Literal["none", "limited", "unrestricted"]
    allowed_hosts: tuple[str, ...] = ()
    allowed_networks: tuple[str, ...] = Field(default=())
    # Endpoints (host, port) the operator configured, e.g. REVERIE_WEB_SEARCH_URL's: trusted
    # configuration, reached at whatever address they resolve to (a search service on the
    # worker's own network is the usual case). Never a name the model chose: only a policy
    # made by `operator_endpoint` for one call to that endpoint carries one.
    trusted_endpoints: tuple[tuple[str, int], ...] = ()

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError as error:
                raise ValueError(f"not a network in CIDR form: {entry!r}") from error
        return value

    @classmethod
    def for_networking(
        cls, kind: str, allowed_hosts: Iterable[str], allowed_networks: Iterable[str] = ()
    ) -> EgressPolicy:
        """The policy of an environment's `networking` (`limited` with no hosts reaches none)."""
        hosts = tuple(h for h in (h.strip() for h in allowed_hosts) if h)
        if kind == "unrestricted":
            mode: Literal["none", "limited", "unrestricted"] = "unrestricted"
        else:
            mode = "limited" if hosts else "none"
        return cls(mode=mode, allowed_hosts=hosts, allowed_networks=tuple(allowed_networks))

    @classmethod
    def operator_endpoint(cls, host: str, port: int) -> EgressPolicy:
        """A policy that reaches exactly one endpoint of the operator's configuration (`host`
        on `port`, whatever its addresses) and nothing else."""
        return cls(mode="none", trusted_endpoints=((normalise_host(host), port),))

    def _trusted(self, host: str, port: int) -> bool:
        if not self.trusted_endpoints:
            return False
        try:
            return (normalise_host(host), port) in self.trusted_endpoints
        except ValueError:
            return False

    @property
    def reaches_network(self) -> bool:
        return self.mode != "none"

    def host_refusal(self, host: str, port: int) -> str | None:
        """Why a connection to `host:port` is refused by name, or None when the name may go on
        to the address check."""
        if self._trusted(host, port):
            return None
        if self.mode == "none":
            return "this session's environment has no network access"
        try:
            name = normalise_host(host)
        except ValueError as error:
            return str(error)
        if not name:
            return "no host given"
        if self.mode == "none":
            return "this session's environment has no network access"
        if self.mode == "unrestricted":
            return None
        if any(_matches(entry, name, port) for entry in self.allowed_hosts):
            return None
        return f"this session's environment does not allow network access to {name}"

    def address_refusal(self, address: str | IPAddress) -> str | None:
        """Why connecting to this IP address is refused, or None when it is a public address
        (or inside a network the operator opted in)."""
        try:
            ip = ipaddress.ip_address(address) if isinstance(address, str) else address
        except ValueError:
            return f"{address!r} is not an IP address"
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
            return f"{ip} is a scoped (link-local) address"
        networks = [ipaddress.ip_network(n, strict=False) for n in self.allowed_networks]
        for candidate in _with_embedded(ip):
            if any(candidate in net for net in networks if net.version == candidate.version):
                continue
            if reason := _internal(candidate):
                return f"{address} is {reason}; it is never reachable from a session"
            if is_local_address(candidate):
                return (
                    f"{address} is an address of the worker's own host; it is never reachable "
                    "from a session"
                )
        return None

    async def resolve(self, host: str, port: int) -> list[str]:
        """The addresses of `host` this policy lets a connection dial, in resolver order.

        Refuses (`EgressRefused`) when the name is not allowed, when it does not resolve, or when
        none of its addresses may be reached. The caller must dial only these addresses.
        """
        if reason := self.host_refusal(host, port):
            raise EgressRefused(reason)
        # The very string that was checked is the one resolved (ASCII, validated).
        name = normalise_host(host)
        addresses = await resolve_name(name, port, EgressRefused)
        allowed: list[str] = []
        refusals: list[str] = []
        trusted = self._trusted(name, port)
        for address in addresses:
            if not trusted and (reason := self.address_refusal(address)):
                refusals.append(reason)
            else:  # `resolve_name` answers each address once
                allowed.append(address)
        if not allowed:
            raise EgressRefused(refusals[0] if refusals else f"{name} has no address")
        return allowed

    async def open_connection(
        self, host: str, port: int, *, timeout: float = CONNECT_TIMEOUT_SECONDS
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
        """Connect to `host:port` through the policy: the stream and the address dialled."""
        last: OSError | None = None
        for address in await self.resolve(host, port):
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(address, port), timeout
                )
            except (OSError, TimeoutError) as error:
                last = error if isinstance(error, OSError) else OSError(str(error) or "timed out")
                continue
            return reader, writer, address
        raise EgressRefused(f"could not connect to {normalise_host(host)}:{port}: {last}")


def is_local_address(ip: IPAddress) -> bool:
    """Whether `ip` is assigned to one of this host's interfaces (a public address on a VPS
    reaches every service bound to 0.0.0.0, over loopback, past the host's firewall).

    The kernel answers: binding a socket to an address succeeds only for a local one (unless
    the operator enabled `ip_nonlocal_bind`, which this refuses to guess about). Asked at every
    connection, so addresses added later count too.
    """
    if _nonlocal_bind(ip.version):
        return ip in _listed_local_addresses()
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((str(ip), 0))
        except OSError:
            return False
    return True


def _nonlocal_bind(version: int) -> bool:
    name = "ipv6/ip_nonlocal_bind" if version == 6 else "ipv4/ip_nonlocal_bind"
    try:
        return Path(f"/proc/sys/net/{name}").read_text().strip() != "0"
    except OSError:
        return False


def _listed_local_addresses() -> set[IPAddress]:
    """The host's addresses as the kernel lists them (for hosts where any bind succeeds)."""
    found: set[IPAddress] = set()
    with contextlib.suppress(OSError):
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
        for previous, line in itertools.pairwise(lines):
            if "/32 host LOCAL" in line:
                found.add(ipaddress.ip_address(previous.split()[-1]))
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            found.add(ipaddress.IPv6Address(int(line.split()[0], 16)))
    return found


def normalise_host(host: str) -> str:
    """The form names are compared and resolved in: ASCII (IDNA for international names),
    lower case, no trailing dot, no IPv6 brackets. Anything that is not a host name or an IP
    literal is refused (`ValueError`): the resolver would read `evil.com\\0.example.com` as
    `evil.com`, so a name is only ever checked in the exact form that is resolved."""
    text = host.strip().strip("[]").rstrip(".")
    if not text:
        return ""
    if not text.isascii():
        try:
            text = text.encode("idna").decode("ascii")
        except UnicodeError as error:
            raise ValueError(f"{host!r} is not a valid host name") from error
    name = text.lower()
    if _HOST_NAME.fullmatch(name) or _is_ip(name):
        return name
    raise ValueError(f"{host!r} is not a valid host name")


def _with_embedded(ip: IPAddress) -> list[IPAddress]:
    """The address and any IPv4 address an IPv6 form carries (mapped, 6to4, NAT64)."""
    found: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            found.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            found.append(ip.sixtofour)
        if ip in _NAT64:
            found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def _internal(ip: IPAddress) -> str | None:
    """What kind of non-public address `ip` is, or None for a public one."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        # Checked through the IPv4 address it carries (the caller passes that too).
        return None
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_link_local:
        return "a link-local address (cloud metadata services live there)"
    if ip.is_multicast or any(ip in net for net in _ALSO_BLOCKED if net.version == ip.version):
        return "a multicast or special-purpose address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "not a public address (e.g. shared CGNAT space)"
    return None


def _matches(entry: str, host: str, port: int) -> bool:
    """`example.com`, `*.example.com` (subdomains only), either with an optional `:port`.

    A wildcard never matches an IP address: `*.0.0.1` is not a way to allow 127.0.0.1.
    """
    pattern, entry_port = _split_entry(entry)
    if entry_port is not None and entry_port != port:
        return False
    if pattern.startswith("*."):
        return not _is_ip(host) and host.endswith(pattern[1:])
    return host == pattern


def _split_entry(entry: str) -> tuple[str, int | None]:
    text = entry.strip().lower()
    if text.startswith("["):  # [v6]:port
        inside, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        return inside, int(port) if port.isdigit() else None
    if text.count(":") == 1:
        name, _, port = text.partition(":")
        return name.rstrip("."), int(port) if port.isdigit() else None
    return text.rstrip("."), None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def dial_only(host: str, port: int, addresses: Iterable[str]) -> list[ResolveResult]:
    """What an aiohttp resolver answers so that aiohttp dials exactly these (checked) numeric
    addresses and looks nothing up itself."""
    return [
        {
            "hostname": host,
            "host": address,
            "port": port,
            "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
            "proto": 0,
            "flags": socket.AI_NUMERICHOST,
        }
        for address in addresses
    ]
