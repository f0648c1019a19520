"""Defence in depth on the embedded stack, against the real thing: PostgreSQL asks everyone for
the password (over its socket and over TCP), keeps its socket in a private folder and listens on
no address beyond loopback; Temporal and its Web UI bind loopback only; REVERIE_HOME, the
password file and the stack file are private to the user running the stack."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from reverie.starter.stack import (
    SERVER_ACCOUNT,
    EmbeddedPostgres,
    TemporalDevServer,
    free_port,
    postgres_install,
    read_or_create_password,
    secure_home,
    write_stack_file,
)

ROOT = os.geteuid() == 0
# Running as root, PostgreSQL runs as its own account, whose group may pass through the home.
HOME_MODE = 0o710 if ROOT else 0o700


@contextlib.contextmanager
def scratch() -> Iterator[Path]:
    """A folder straight under the system's temp folder, not pytest's: each pytest run starting
    makes /tmp/pytest-of-<user> 0700 again, which (when root) would lock PostgreSQL's own account
    out of a data folder beneath it while another run is going."""
    folder = Path(tempfile.mkdtemp(prefix="reverie-security-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    with scratch() as folder:
        yield folder


def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket process `pid` listens on, read from /proc."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add((str(ipaddress.ip_address(packed)), int(port, 16)))
    return found


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie waiting to be reaped is not)."""
    try:
        return bool(Path(f"/proc/{pid}/cmdline").read_bytes())
    except FileNotFoundError:
        return False


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def psql_without_password(*args: str) -> subprocess.CompletedProcess[str]:
    """What the hostile agent ran: psql, with no password at hand and never prompting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    psql = str(postgres_install() / "bin" / "psql")
    return subprocess.run(
        [psql, *args, "-U", "postgres", "-w", "-d", "postgres", "-c", "SELECT 1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture(scope="module")
def secured() -> Iterator[tuple[EmbeddedPostgres, str]]:
    """An embedded PostgreSQL in a home that starts out readable by everyone."""
    with scratch() as folder:
        home = folder / "home"
        home.mkdir()
        home.chmod(0o755)
        postgres = EmbeddedPostgres(home / "postgres")
        url = postgres.start()
        yield postgres, url
        postgres.stop()


def test_the_password_is_kept_private_beside_the_data(
    secured: tuple[EmbeddedPostgres, str],
) -> None:
    postgres, url = secured
    password_file = postgres.password_file
    assert password_file == postgres.data_dir.parent / "postgres.password"
    info = password_file.stat()
    assert mode(password_file) == 0o600 and info.st_uid == os.geteuid()
    password = password_file.read_text().strip()
    assert len(password) >= 40 and urlsplit(url).password == password
    home = postgres.data_dir.parent
    assert mode(home) == HOME_MODE and home.stat().st_uid == os.geteuid()
    if ROOT:
        assert home.stat().st_gid == pwd.getpwnam(SERVER_ACCOUNT).pw_gid
    assert mode(postgres.data_dir) == 0o700


async def test_no_connection_without_the_password(
    secured: tuple[EmbeddedPostgres, str],
) -> None:
    postgres, url = secured
    connection = await asyncpg.connect(url)
    try:
        assert await connection.fetchval("SELECT current_user") == "postgres"
        assert await connection.fetchval("SHOW listen_addresses") == ""
    finally:
        await connection.close()
    socket_dir = str(postgres.socket_dir)
    for password in (None, "guessed"):
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(
                host=socket_dir, user="postgres", database="postgres", password=password
            )
    attack = psql_without_password("-h", socket_dir)
    assert attack.returncode != 0 and "password" in attack.stderr, attack.stderr
    # No TCP listener at all while the socket serves: nothing to knock on over the network.
    assert postgres.process is not None and listening(postgres.process.pid) == set()


async def test_every_rule_asks_for_a_scram_password(
    secured: tuple[EmbeddedPostgres, str],
) -> None:
    postgres, url = secured
    hba = postgres.data_dir / "pg_hba.conf"
    rules = [line.split() for line in hba.read_text().splitlines()]
    rules = [rule for rule in rules if rule and not rule[0].startswith("#")]
    assert {rule[0] for rule in rules} == {"local", "host"}
    assert all(rule[-1] == "scram-sha-256" for rule in rules) and "trust" not in hba.read_text()
    connection = await asyncpg.connect(url)
    try:
        served = await connection.fetch("SELECT type, auth_method, error FROM pg_hba_file_rules")
        assert served and all(
            row["auth_method"] == "scram-sha-256" and row["error"] is None for row in served
        )
        assert await connection.fetchval("SHOW password_encryption") == "scram-sha-256"
        assert await connection.fetchval("SHOW hba_file") == str(hba)
        verifier = await connection.fetchval(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'postgres'"
        )
        assert verifier.startswith("SCRAM-SHA-256$")
    finally:
        await connection.close()


async def test_the_socket_lives_in_the_private_data_folder(
    secured: tuple[EmbeddedPostgres, str],
) -> None:
    postgres, url = secured
    assert postgres.socket_dir == postgres.data_dir
    assert urlsplit(url).query == f"host={postgres.data_dir}"
    connection = await asyncpg.connect(url)
    try:
        directories = await connection.fetchval("SHOW unix_socket_directories")
        permissions = await connection.fetchval("SHOW unix_socket_permissions")
    finally:
        await connection.close()
    assert directories.strip('"') == str(postgres.data_dir) and permissions == "0700"
    sockets = list(postgres.data_dir.glob(".s.PGSQL.*[0-9]"))
    assert len(sockets) == 1 and stat.S_ISSOCK(sockets[0].lstat().st_mode)
    assert mode(sockets[0]) == 0o700 and mode(postgres.data_dir) == 0o700


async def test_tcp_on_loopback_only_when_the_socket_path_is_too_long(scratch_dir: Path) -> None:
    postgres = EmbeddedPostgres(scratch_dir / ("d" * 100) / "postgres")
    url = postgres.start()
    try:
        assert postgres.socket_dir is None
        assert urlsplit(url).hostname == "127.0.0.1" and urlsplit(url).port == postgres.port
        assert postgres.process is not None
        assert listening(postgres.process.pid) == {("127.0.0.1", postgres.port)}
        connection = await asyncpg.connect(url)
        try:
            assert await connection.fetchval("SHOW listen_addresses") == "127.0.0.1"
            assert await connection.fetchval("SHOW unix_socket_directories") == ""
        finally:
            await connection.close()
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(host="127.0.0.1", port=postgres.port, user="postgres")
        attack = psql_without_password("-h", "127.0.0.1", "-p", str(postgres.port))
        assert attack.returncode != 0 and "password" in attack.stderr, attack.stderr
    finally:
        postgres.stop()


async def test_a_trusting_folder_from_pgserver_is_upgraded_in_place(
    scratch_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A data folder made (and left running) by pgserver itself, as older versions did."""
    import pgserver

    data_dir = scratch_dir / "home" / "postgres"
    data_dir.parent.mkdir()
    old = pgserver.get_server(str(data_dir), cleanup_mode=None)
    old.psql("CREATE TABLE kept (note text); INSERT INTO kept VALUES ('still here');")
    old_url, old_pid = old.get_uri(), old.get_pid()
    assert "trust" in (data_dir / "pg_hba.conf").read_text()

    postgres = EmbeddedPostgres(data_dir)
    with caplog.at_level(logging.WARNING, logger="reverie.starter.stack"):
        url = postgres.start()
    try:
        assert "trusted local connections" in caplog.text and "left running" in caplog.text
        assert not running(old_pid)
        with pytest.raises(asyncpg.InvalidPasswordError):
            await asyncpg.connect(old_url)
        connection = await asyncpg.connect(url)
        try:
            assert await connection.fetchval("SELECT note FROM kept") == "still here"
        finally:
            await connection.close()
        assert "trust" not in (data_dir / "pg_hba.conf").read_text()
        assert mode(data_dir.parent) == HOME_MODE and mode(postgres.password_file) == 0o600
    finally:
        postgres.stop()


def test_temporal_and_its_web_ui_listen_on_loopback_only(tmp_path: Path) -> None:
    server = TemporalDevServer(
        db_file=None, port=free_port(), ui_port=free_port(), log_file=tmp_path / "t.log"
    )
    server.start()
    try:
        assert server.process is not None and server.ui_port is not None
        deadline = time.monotonic() + 30
        while True:  # the Web UI may come up a moment after the frontend
            found = listening(server.process.pid)
            if server.ui_port in {port for _, port in found} or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert {server.port, server.ui_port} <= {port for _, port in found}
        assert {address for address, _ in found} == {"127.0.0.1"}, found
    finally:
        server.stop()


def test_home_is_tightened_and_secrets_are_written_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o755)
    with caplog.at_level(logging.WARNING, logger="reverie.starter.stack"):
        secure_home(home, embedded_postgres=False)
    assert mode(home) == 0o700
    assert [r.getMessage() for r in caplog.records] == [
        f"{home} was mode 0755; made it 0700 (it holds the database password)"
    ]
    fresh = tmp_path / "fresh" / "home"
    secure_home(fresh, embedded_postgres=False)
    assert mode(fresh) == 0o700

    previous = os.umask(0)  # even a careless umask cannot widen them
    try:
        write_stack_file(home / "stack.json", database_url="postgresql://postgres:secret@/x")
        password = read_or_create_password(home / "postgres.password")
    finally:
        os.umask(previous)
    assert mode(home / "stack.json") == 0o600 and mode(home / "postgres.password") == 0o600
    assert sorted(p.name for p in home.iterdir()) == ["postgres.password", "stack.json"]
    assert read_or_create_password(home / "postgres.password") == password

    (home / "postgres.password").chmod(0o644)
    assert read_or_create_password(home / "postgres.password") == password
    assert mode(home / "postgres.password") == 0o600


async def test_up_hands_out_the_password_only_through_the_private_stack_file(
    scratch_dir: Path,
) -> None:
    """`reverie up` with the embedded PostgreSQL: stack.json carries a working URL with the
    password; the banner and --json output do not."""
    home = scratch_dir / "home"
    home.mkdir()
    home.chmod(0o755)
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "TEMPORAL_ADDRESS")},
        "REVERIE_HOME": str(home),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "reverie.starter.cli", "up", "--no-worker", "--json",
        "--port", str(free_port()), "--ui-port", str(free_port()),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stderr is not None
        line = await asyncio.wait_for(process.stdout.readline(), 90)
        assert line, await process.stderr.read()
        printed = json.loads(line)
        stack = json.loads((home / "stack.json").read_text())
        password = (home / "postgres.password").read_text().strip()
        assert urlsplit(stack["database_url"]).password == password
        assert password not in line.decode() and ":***@" in printed["database_url"]
        assert mode(home / "stack.json") == 0o600 and mode(home) == HOME_MODE
        connection = await asyncpg.connect(stack["database_url"])
        await connection.close()
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode == 0, err.decode()
        assert f"{home} was mode 0755; made it {HOME_MODE:04o}" in err.decode()
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()
