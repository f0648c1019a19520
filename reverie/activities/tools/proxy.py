"""The sandbox's only way out: an HTTP and SOCKS5 proxy on a unix socket, applying the egress
policy to every connection.

bash runs in a network namespace of its own with nothing but loopback. When its environment
allows any network, the worker starts one of these proxies for the call and binds its socket
into the sandbox, where a `socat` bridge exposes it as 127.0.0.1:3128 (`HTTP(S)_PROXY` and
`ALL_PROXY` point there). The proxy sees the name the command asked for, checks it against the
policy, resolves it itself and dials only addresses the policy allows, so nothing inside the
sandbox can reach the worker's host, its loopback services or private networks. This is the
shape of Anthropic's sandbox runtime (bubblewrap without network, a filtering proxy outside).

One listener speaks both protocols: a SOCKS5 client's first byte is 5, an HTTP request's is a
letter. Plain-HTTP requests are forwarded one per connection (`Connection: close`), so a client
that reuses its proxy connection for another host gets a fresh check.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import shutil
import struct
import tempfile
from pathlib import Path
from types import TracebackType

from reverie.egress import EgressPolicy, EgressRefused

SANDBOX_PROXY_PORT = 3128
HEAD_LIMIT = 64 * 1024
HANDSHAKE_SECONDS = 30.0
MAX_CONNECTIONS = 64
_CHUNK = 65536


class EgressProxy:
    """A proxy for one bash call, on a unix socket in a private temporary folder."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy
        self._folder: Path | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    @property
    def socket_path(self) -> Path:
        assert self._folder is not None, "the proxy is not running"
        return self._folder / "proxy.sock"

    async def __aenter__(self) -> EgressProxy:
        # Short and private: unix socket paths are limited to 108 bytes, and only the worker's
        # user may reach the folder (bwrap binds the socket itself into the sandbox).
        self._folder = Path(tempfile.mkdtemp(prefix="reverie-egress-"))
        self._server = await asyncio.start_unix_server(self._accept, path=str(self.socket_path))
        # The sandbox may run as another (unprivileged) user; the folder stays private, and only
        # the socket itself is bound into the sandbox.
        self.socket_path.chmod(0o666)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if self._slots.locked():
                return
            async with self._slots:
                await self._serve(reader, writer)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            pass
        except asyncio.CancelledError:
            # Only the proxy's own shutdown at the end of the call cancels a connection.
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await asyncio.wait_for(reader.readexactly(1), HANDSHAKE_SECONDS)
        if first == b"\x05":
            await _Socks5(self._policy, reader, writer).serve()
        else:
            await _Http(self._policy, reader, writer, first).serve()


class _Http:
    def __init__(
        self,
        policy: EgressPolicy,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        first: bytes,
    ) -> None:
        self._policy = policy
        self._reader = reader
        self._writer = writer
        self._first = first

    async def serve(self) -> None:
        head = await self._read_head()
        if head is None:
            return await self._answer(431, "request head too large")
        lines = head.split(b"\r\n")
        if reason := _malformed(lines):
            return await self._answer(400, reason)
        try:
            method, target, version = lines[0].decode("latin-1").split(" ")
        except ValueError:
            return await self._answer(400, "not an HTTP proxy request")
        if method.upper() == "CONNECT":
            return await self._connect(target)
        return await self._forward(method, target, version, lines[1:])

    async def _read_head(self) -> bytes | None:
        try:
            rest = await asyncio.wait_for(self._reader.readuntil(b"\r\n\r\n"), HANDSHAKE_SECONDS)
        except asyncio.LimitOverrunError:
            return None
        head = self._first + rest[:-4]
        return head if len(head) <= HEAD_LIMIT else None

    async def _connect(self, target: str) -> None:
        host, port = _split_host_port(target, default=None)
        if port is None:
            return await self._answer(400, f"CONNECT needs host:port, not {target!r}")
        upstream = await self._dial(host, port)
        if upstream is None:
            return
        self._writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        await self._writer.drain()
        await _relay(self._reader, self._writer, *upstream)

    async def _forward(self, method: str, target: str, version: str, headers: list[bytes]) -> None:
        """One plain-HTTP request, framed: its Host is the URL's authority (never the
        client's, which could name a host the policy did not check), its body exactly its
        Content-Length, and nothing the client sends after it reaches the upstream."""
        if not target.lower().startswith("http://"):
            return await self._answer(
                400, "only absolute http:// URLs are proxied; use CONNECT (https) for the rest"
            )
        authority, _, path = target[len("http://") :].partition("/")
        authority = authority.rpartition("@")[2]  # credentials in the URL are not ours to send
        fields = [_field(line) for line in headers if line]
        names = {name for name, _ in fields}
        if b"transfer-encoding" in names:
            return await self._answer(
                400, "request bodies must have a Content-Length (chunked uploads are not proxied)"
            )
        lengths = {value.strip() for name, value in fields if name == b"content-length"}
        if len(lengths) > 1 or any(not v.isdigit() for v in lengths):
            return await self._answer(400, "one Content-Length, a number, is needed")
        body = int(next(iter(lengths), b"0"))
        host, port = _split_host_port(authority, default=80)
        upstream = await self._dial(host, port or 80)
        if upstream is None:
            return
        kept = [
            line
            for line, (name, _) in zip(headers, fields, strict=False)
            if name not in _HOP_BY_HOP
        ]
        request = f"{method} /{path} {version}".encode("latin-1")
        host_line = b"Host: " + authority.encode("latin-1", "replace")
        head = b"\r\n".join([request, host_line, *kept, b"Connection: close"]) + b"\r\n\r\n"
        upstream_reader, upstream_writer = upstream
        try:
            upstream_writer.write(head)
            await _copy_exactly(self._reader, upstream_writer, body)
            while chunk := await upstream_reader.read(_CHUNK):
                self._writer.write(chunk)
                await self._writer.drain()
        finally:
            upstream_writer.close()

    async def _dial(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        try:
            reader, writer, _ = await self._policy.open_connection(host, port)
        except EgressRefused as refused:
            await self._answer(403, f"Reverie egress policy refused {host}:{port}: {refused}")
            return None
        return reader, writer

    async def _answer(self, status: int, message: str) -> None:
        reason = {400: "Bad Request", 403: "Forbidden", 431: "Request Header Fields Too Large"}
        body = (message + "\n").encode()
        self._writer.write(
            f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\n"
            f"Content-Type: text/plain; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
            "X-Reverie-Egress: refused\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await self._writer.drain()


class _Socks5:
    """SOCKS5, CONNECT only, no authentication (RFC 1928)."""

    _NOT_ALLOWED = 0x02
    _UNSUPPORTED = 0x07
    _BAD_ADDRESS = 0x08

    def __init__(
        self, policy: EgressPolicy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._policy = policy
        self._reader = reader
        self._writer = writer

    async def _read(self, n: int) -> bytes:
        return await asyncio.wait_for(self._reader.readexactly(n), HANDSHAKE_SECONDS)

    async def serve(self) -> None:
        methods = await self._read((await self._read(1))[0])
        if 0x00 not in methods:
            self._writer.write(b"\x05\xff")
            return await self._writer.drain()
        self._writer.write(b"\x05\x00")
        version, command, _, kind = await self._read(4)
        if version != 5:
            return
        if kind == 0x01:
            host = str(ipaddress.IPv4Address(await self._read(4)))
        elif kind == 0x04:
            host = str(ipaddress.IPv6Address(await self._read(16)))
        elif kind == 0x03:
            host = (await self._read((await self._read(1))[0])).decode("idna")
        else:
            return await self._reply(self._BAD_ADDRESS)
        (port,) = struct.unpack("!H", await self._read(2))
        if command != 0x01:
            return await self._reply(self._UNSUPPORTED)
        try:
            reader, writer, _ = await self._policy.open_connection(host, port)
        except EgressRefused:
            return await self._reply(self._NOT_ALLOWED)
        await self._reply(0x00)
        await _relay(self._reader, self._writer, reader, writer)

    async def _reply(self, code: int) -> None:
        self._writer.write(bytes([5, code, 0, 1, 0, 0, 0, 0, 0, 0]))
        await self._writer.drain()


_HOP_BY_HOP = {
    b"host",
    b"proxy-connection",
    b"proxy-authorization",
    b"connection",
    b"keep-alive",
    b"te",
    b"upgrade",
}


_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def _malformed(lines: list[bytes]) -> str | None:
    """Why a request head is refused: a line break or control character inside a line (an
    upstream that accepts a bare LF would read headers the proxy never saw), a folded line,
    or a header name that is not a token."""
    if any(_CONTROL.search(line) or b"\t" in line[:1] for line in lines):
        return "control characters or bare line breaks in the request head"
    for line in lines[1:]:
        name, colon, _ = line.partition(b":")
        if not colon or line[:1] in (b" ", b"\t") or not _TOKEN.fullmatch(name):
            return "malformed header line in the request head"
    return None


def _field(line: bytes) -> tuple[bytes, bytes]:
    name, _, value = line.partition(b":")
    return name.strip().lower(), value


async def _copy_exactly(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, count: int
) -> None:
    while count > 0:
        chunk = await source.read(min(count, _CHUNK))
        if not chunk:
            return
        count -= len(chunk)
        sink.write(chunk)
        await sink.drain()


def _split_host_port(text: str, *, default: int | None) -> tuple[str, int | None]:
    """`host:port`, `[v6]:port` or a bare host (then `default`)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not port_text:
        return host, default
    port = int(port_text) if port_text.isdigit() else -1
    return host, port if 0 < port < 65536 else None


async def _relay(
    client_reader: asyncio.StreamReader,
    client_writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
) -> None:
    """Copy both ways until both sides are done; a half-close is passed on."""

    async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while chunk := await source.read(_CHUNK):
                sink.write(chunk)
                await sink.drain()
            if sink.can_write_eof():
                sink.write_eof()
        except OSError:
            sink.close()

    try:
        await asyncio.gather(
            pump(client_reader, upstream_writer), pump(upstream_reader, client_writer)
        )
    finally:
        upstream_writer.close()
        with contextlib.suppress(OSError):
            await upstream_writer.wait_closed()
