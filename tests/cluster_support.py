"""A small cluster on this machine, without containers: Debian's PostgreSQL server and a Temporal
dev server that Reverie does not start, with Reverie's workers and API processes as processes of
their own, run as unprivileged users (issue 21)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from reverie.starter.temporal_dev import free_port, temporal_binary, wait_for_frontend

NAMESPACE = "reverie-ops"
# Unprivileged users (no passwd entry needed) sharing one group: the workspace root's.
SHARED_GID = 64100
FIRST_UID = 64101
REPO = Path(__file__).resolve().parent.parent
# A port picked free may be taken before the server binds it: so many tries with another.
PORT_ATTEMPTS = 3


def postgres_bin() -> Path | None:
    """Debian's PostgreSQL server binaries (package `postgresql`), newest version."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@functools.cache
def why_not_runnable() -> str | None:
    """Why this machine cannot run the cluster tests, or None."""
    if os.geteuid() != 0:
        return "needs root, to run workers as other users and PostgreSQL as `postgres`"
    if shutil.which("setpriv") is None:
        return "needs setpriv (util-linux)"
    if postgres_bin() is None:
        return "needs Debian's PostgreSQL server (deploy/system-packages.sh installs it)"
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError:
        return "needs the `postgres` user that Debian's postgresql package creates"
    probe = subprocess.run(
        [*as_user(FIRST_UID), sys.executable, "-c", "import reverie.worker"],
        capture_output=True,
        cwd="/",
    )
    if probe.returncode != 0:
        return (
            f"an unprivileged user cannot run {sys.executable} with Reverie from {REPO} "
            "(the checkout and its .venv must be readable by other users)"
        )
    return None


def as_user(uid: int | str, gid: int | str = SHARED_GID) -> list[str]:
    if isinstance(uid, str):
        return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", "--"]
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]


def private_dir(prefix: str) -> Path:
    """Outside pytest's folders (0700 as root): other users must reach what is inside."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


class DebianPostgres:
    """PostgreSQL's own server, initialised in a folder of its own and run as `postgres`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.port = free_port()
        self.bin = postgres_bin()

    def _as_postgres(self, *args: str) -> None:
        subprocess.run(
            [*as_user("postgres", "postgres"), *args],
            check=True,
            capture_output=True,
            cwd="/",
        )

    def start(self) -> str:
        shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "-U", "reverie", "-A", "trust"
        )
        for attempt in range(PORT_ATTEMPTS):
            options = (
                f"-p {self.port} -k {self.root} -h 127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            try:
                self._as_postgres(
                    str(self.bin / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-o",
                    options,
                    "-l",
                    str(self.root / "log"),
                    "-w",
                    "start",
                )
                break
            except subprocess.CalledProcessError:
                if attempt == PORT_ATTEMPTS - 1:
                    raise
                self.port = free_port()  # taken since it was picked: another one
        return f"postgresql://reverie@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._as_postgres(
                str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"
            )


class OwnTemporal:
    """`temporal server start-dev` as an operator would run it: its own namespace, none of
    Reverie's search attributes (the first Reverie process adds them)."""

    def __init__(self, log_file: Path) -> None:
        self.port = free_port()
        self.log_file = log_file
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        for attempt in range(PORT_ATTEMPTS):
            try:
                return self._start()
            except RuntimeError:  # it exited before serving: a port it needs was taken
                if attempt == PORT_ATTEMPTS - 1:
                    raise
                self.port = free_port()

    def _start(self) -> None:
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    temporal_binary(),
                    "server",
                    "start-dev",
                    "--headless",
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--namespace",
                    NAMESPACE,
                    "--log-level",
                    "error",
                    "--dynamic-config-value",
                    "history.transferProcessorMaxPollRPS=10000",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for_frontend(self.address, 60.0, self.process)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Cluster:
    temporal_address: str
    database_url: str
    root: Path

    def env(self, **extra: str) -> dict[str, str]:
        """What a Reverie process on another host would be given: environment variables only."""
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
        return {
            **keep,
            "TEMPORAL_ADDRESS": self.temporal_address,
            "TEMPORAL_NAMESPACE": NAMESPACE,
            "DATABASE_URL": self.database_url,
            "REVERIE_SANDBOX": "none",
            "PYTHONPATH": str(REPO),
            **extra,
        }


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    root = private_dir("reverie-cluster-")
    postgres = DebianPostgres(private_dir("reverie-cluster-pg-"))
    temporal = OwnTemporal(root / "temporal.log")
    try:
        url = postgres.start()
        temporal.start()
        yield Cluster(temporal.address, url, root)
    finally:
        temporal.stop()
        postgres.stop()
        shutil.rmtree(postgres.root, ignore_errors=True)
        if not os.environ.get("REVERIE_KEEP_CLUSTER"):  # to read its processes' logs
            shutil.rmtree(root, ignore_errors=True)


@contextlib.asynccontextmanager
async def user_process(
    uid: int, args: list[str], env: dict[str, str], home: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python ARGS` as user `uid` (group SHARED_GID, umask 002, so its workspace files are
    its group's too), with its own home; stopped (SIGTERM, then SIGKILL) on the way out."""
    home.mkdir(parents=True, exist_ok=True)
    os.chown(home, uid, SHARED_GID)
    home.chmod(0o700)
    # The umask is set by a shell in between: uvloop's subprocesses take no `umask` argument.
    command = [
        *as_user(uid),
        "/bin/sh",
        "-c",
        'umask 002 && exec "$@"',
        "sh",
        sys.executable,
        *args,
    ]
    log = (home.parent / f"{home.name}.log").open("ab")
    process = await asyncio.create_subprocess_exec(
        *command,
        env={**env, "HOME": str(home), "REVERIE_HOME": str(home)},
        stdout=log,
        stderr=log,
        cwd="/",
    )
    try:
        yield process
    finally:
        log.close()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def wait_healthy(base_url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with http.get(f"{base_url}/healthz") as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{base_url} did not answer /healthz within {timeout}s")
            await asyncio.sleep(0.1)


@dataclass
class Certificates:
    """A throwaway CA, a server certificate for `temporal.test` and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(folder: Path) -> Certificates:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def issue(name: str, issuer: Any = None) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer[1].subject if issuer else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), True)
        )
        if issuer is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name)]), False
            )
        return key, builder.sign(issuer[0] if issuer else key, hashes.SHA256())

    ca = issue("reverie test ca")
    paths = {}
    for name, (key, cert) in (
        ("ca", ca),
        ("server", issue("temporal.test", ca)),
        ("client", issue("reverie-worker", ca)),
    ):
        paths[f"{name}_cert"] = folder / f"{name}.pem"
        paths[f"{name}_cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        paths[f"{name}_key"] = folder / f"{name}.key"
        paths[f"{name}_key"].write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return Certificates(
        ca=paths["ca_cert"],
        server_cert=paths["server_cert"],
        server_key=paths["server_key"],
        client_cert=paths["client_cert"],
        client_key=paths["client_key"],
    )


@contextlib.asynccontextmanager
async def tls_front(target: str, certs: Certificates, *, mutual: bool) -> AsyncIterator[str]:
    """TLS (HTTP/2 by ALPN, as gRPC wants) in front of a plaintext Temporal frontend, as a
    TLS cluster or a load balancer would terminate it; `mutual` demands a client certificate
    from the test CA. Answers the address to connect to."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs.server_cert, certs.server_key)
    context.set_alpn_protocols(["h2"])
    if mutual:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(certs.ca)
    host, _, port = target.rpartition(":")

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
