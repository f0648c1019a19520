"""The embedded stack: a Temporal dev server and an embedded PostgreSQL, neither reachable from
beyond this machine, nor (PostgreSQL) by anyone without the password kept in REVERIE_HOME.

Security model: REVERIE_HOME is private to the user running the stack (0700; 0710 when running
as root, so that PostgreSQL's own account may pass through to its data folder). PostgreSQL asks
every connection for a SCRAM password, generated at first start into a 0600 file beside its data
folder; it listens on a unix socket inside that data folder (0700) and on no TCP address, or on
127.0.0.1 only when the folder's path is too long for a socket. Temporal and its Web UI bind
127.0.0.1.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import hmac
import importlib.util
import json
import logging
import os
import pwd
import secrets
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# The Temporal dev server lives in its own module; these names stay importable from here.
from reverie.starter.temporal_dev import (  # noqa: E402
    FAST_DEV_SERVER,
    SEARCH_ATTRIBUTE_FLAGS,
    TemporalDevServer,
    free_port,
    temporal_binary,
    wait_for_port,
)

__all__ = [
    "FAST_DEV_SERVER",
    "SEARCH_ATTRIBUTE_FLAGS",
    "TemporalDevServer",
    "free_port",
    "temporal_binary",
    "wait_for_port",
]


# PostgreSQL refuses to run as root; as root, it runs as this account (pgserver's choice of name,
# so that data folders pgserver created keep their owner).
SERVER_ACCOUNT = "pgserver"
POSTGRES_ROLE = "postgres"
# The port names the socket file (.s.PGSQL.<port>); with no TCP listener it needs no choosing.
SOCKET_PORT = 5432
# sun_path holds 108 bytes on Linux (104 on macOS), the terminating NUL included.
MAX_SOCKET_PATH = 103 if sys.platform == "darwin" else 107
SCRAM_ITERATIONS = 4096
HBA = """\
# Written by Reverie at every start of the embedded PostgreSQL: edits here are overwritten.
# Every connection, over the unix socket or loopback TCP, must give the password (SCRAM).
local   all           all                   scram-sha-256
host    all           all     127.0.0.1/32  scram-sha-256
local   replication   all                   scram-sha-256
host    replication   all     127.0.0.1/32  scram-sha-256
"""


@dataclass(frozen=True)
class Account:
    """The user PostgreSQL runs as: this process's own, or a dedicated one when we are root."""

    uid: int
    gid: int

    @property
    def is_self(self) -> bool:
        return self.uid == os.geteuid()

    def run_options(self) -> dict[str, Any]:
        """subprocess options running a command as this account, with no supplementary group
        (root's groups would otherwise come along)."""
        if self.is_self:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": [], "cwd": "/"}

    def can_pass(self, folder: Path) -> bool:
        """Whether this account may traverse `folder` (the x bit that applies to it)."""
        info = folder.stat()
        if info.st_uid == self.uid:
            return bool(info.st_mode & stat.S_IXUSR)
        if info.st_gid == self.gid:
            return bool(info.st_mode & stat.S_IXGRP)
        return bool(info.st_mode & stat.S_IXOTH)


def server_account() -> Account:
    """This user, or when root the `pgserver` system user (created, without a login, if missing)."""
    if os.geteuid() != 0:
        return Account(os.geteuid(), os.getegid())
    try:
        entry = pwd.getpwnam(SERVER_ACCOUNT)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", SERVER_ACCOUNT],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(SERVER_ACCOUNT)
    return Account(entry.pw_uid, entry.pw_gid)


def private_folder(path: Path, group: int | None = None) -> None:
    """Create `path` 0700, or bring an existing folder to it, saying so in one log line: it holds
    the database password. With `group`, 0710 and that group: its members may pass through to a
    folder inside (PostgreSQL's data, when we are root) but neither list nor read anything."""
    wanted = 0o700 if group is None else 0o710
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=wanted)
        existed = False
    except FileExistsError:
        existed = True
    info = path.stat()
    mode = stat.S_IMODE(info.st_mode)
    regroup = group is not None and info.st_gid != group
    if regroup:
        os.chown(path, -1, group)
    if mode != wanted:
        os.chmod(path, wanted)
    if existed and (mode != wanted or regroup):
        log.warning(
            "%s was mode %04o; made it %04o (it holds the database password)", path, mode, wanted
        )


def secure_home(home: Path, *, embedded_postgres: bool) -> None:
    """REVERIE_HOME private to this user before anything is written in it; when the embedded
    PostgreSQL runs under its own account (we are root), that account may pass through it."""
    group = None
    if embedded_postgres and not (account := server_account()).is_self:
        group = account.gid
    private_folder(home, group)


def _let_through(path: Path, account: Account) -> None:
    """Let `account` traverse every folder above `path`: others' x bit where it lacks one (no r,
    so nothing can be listed), each change logged. Only needed when we are root."""
    for folder in reversed(path.parents):
        if not account.can_pass(folder):
            mode = stat.S_IMODE(folder.stat().st_mode)
            os.chmod(folder, mode | stat.S_IXOTH)
            log.warning(
                "%s was mode %04o; made it %04o so PostgreSQL's account can reach %s",
                folder,
                mode,
                mode | stat.S_IXOTH,
                path,
            )


def _let_run(install: Path, account: Account) -> None:
    """Let `account` run pgserver's binaries (when we are root and they were installed 0700)."""
    _let_through(install, account)
    if all(p.stat().st_mode & stat.S_IXOTH for p in (install, install / "bin" / "postgres")):
        return
    for folder, _, files in os.walk(install):
        os.chmod(folder, stat.S_IMODE(os.stat(folder).st_mode) | 0o005)
        for name in files:
            file = Path(folder, name)
            if not file.is_symlink():
                mode = stat.S_IMODE(file.stat().st_mode)
                os.chmod(file, mode | stat.S_IROTH | (stat.S_IXOTH if mode & stat.S_IXUSR else 0))


def postgres_install() -> Path:
    """pgserver's PostgreSQL build, found without importing pgserver: its import creates a lock
    folder under the runtime directory, and only its binaries are used."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded PostgreSQL is missing: `pip install pgserver`")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def read_or_create_password(path: Path) -> str:
    """The database password, made at first start. It is written to a file created 0600 with
    O_EXCL, then linked to its name: never readable by others, never seen half-written, and when
    two processes race, the first link wins and both use it."""
    with contextlib.suppress(FileNotFoundError):
        return _read_password(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, f"{secrets.token_urlsafe(32)}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        with contextlib.suppress(FileExistsError):
            os.link(partial, path)
    finally:
        partial.unlink()
    return _read_password(path)


def _read_password(path: Path) -> str:
    """The password in `path`, which must be ours and is made 0600 again if it was looser."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
            raise RuntimeError(f"{path} must be a regular file owned by this user")
        if info.st_mode & 0o077:
            os.fchmod(fd, 0o600)
            log.warning(
                "%s was mode %04o; made it 0600 (delete it and restart to change the password)",
                path,
                stat.S_IMODE(info.st_mode),
            )
        password = os.read(fd, 4096).decode().strip()
    finally:
        os.close(fd)
    if not password:
        raise RuntimeError(f"{path} is empty: delete it, and the next start makes a new password")
    return password


def scram_verifier(password: str, salt: bytes | None = None) -> str:
    """What PostgreSQL stores for a SCRAM-SHA-256 password (RFC 5802, 7677), computed here so
    that the password itself never reaches the server's input or its logs."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    stored_key = hashlib.sha256(hmac.digest(salted, b"Client Key", "sha256")).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")
    b64 = [base64.b64encode(value).decode() for value in (salt, stored_key, server_key)]
    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64[0]}${b64[1]}:{b64[2]}"


def redact_password(url: str) -> str:
    """The URL with its password replaced by `***`, for banners and logs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _socket_fits(folder: Path) -> bool:
    """Whether `folder` can hold the server's socket: short enough for sun_path, and free of
    the two characters unix_socket_directories' list syntax would misread."""
    name = os.fsencode(folder / f".s.PGSQL.{SOCKET_PORT}")
    return len(name) <= MAX_SOCKET_PATH and not {b",", b'"'} & {bytes([c]) for c in name}


@dataclass
class EmbeddedPostgres:
    """PostgreSQL from the `pgserver` wheel's build, run by Reverie itself: no system install,
    data in a folder we own.

    pgserver's own server class initialises with `trust` (whoever reaches the socket is the
    superuser), may put the socket in the user's runtime folder (world-writable when root), and
    when root opens every folder above the data to all users; so only its binaries are used.
    The password lives beside the data folder, in `<parent>/<name>.password` (for `reverie up`,
    REVERIE_HOME/postgres.password), and that parent is made private: give a data folder whose
    parent belongs to Reverie alone.
    """

    data_dir: Path
    process: subprocess.Popen | None = field(default=None, init=False)
    # Where the socket is (inside the data folder), or None when only 127.0.0.1 TCP is served.
    socket_dir: Path | None = field(default=None, init=False)
    port: int = field(default=SOCKET_PORT, init=False)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.expanduser().resolve()

    @property
    def password_file(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.password"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "log"

    def start(self, timeout: float = 60.0) -> str:
        """Initialise (first start) or secure (a folder from an older, trusting version), then
        serve; answers the database URL, password included."""
        account = server_account()
        install = postgres_install()
        binaries = install / "bin"
        if not account.is_self:
            _let_run(install, account)
        # Before any folder changes: a server left running must still reach its own files.
        self._stop_left_running(binaries, account)
        private_folder(self.data_dir.parent, None if account.is_self else account.gid)
        if not account.is_self:
            _let_through(self.data_dir, account)
        password = read_or_create_password(self.password_file)
        self._initialise(binaries, account)
        self._write_hba(account)
        self._set_password(binaries, account, password)
        self._serve(binaries, account, timeout)
        return self.url(password)

    def url(self, password: str) -> str:
        """What Reverie connects with: the socket's folder when there is one, else loopback."""
        if self.socket_dir is not None:
            host = quote(str(self.socket_dir), safe="/")
            return f"postgresql://{POSTGRES_ROLE}:{password}@/postgres?host={host}"
        return f"postgresql://{POSTGRES_ROLE}:{password}@{LOOPBACK}:{self.port}/postgres"

    def stop(self) -> None:
        """A fast shutdown (open transactions roll back, then a checkpoint)."""
        process, self.process = self.process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _initialise(self, binaries: Path, account: Account) -> None:
        """initdb at first start. Its `reject` rules never serve: pg_hba.conf is rewritten
        before the server first starts."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        if not account.is_self:
            os.chown(self.data_dir, account.uid, account.gid)
        _run(
            account,
            binaries / "initdb",
            *("-D", self.data_dir, "-U", POSTGRES_ROLE, "--auth=reject", "--encoding=utf8"),
            "--no-instructions",
        )

    def _stop_left_running(self, binaries: Path, account: Account) -> None:
        """A server still running on this folder (a crashed run's, or an older version's that
        trusts everyone) is stopped, so that the next one starts with these settings."""
        try:
            pid = int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            return
        if not _serves(pid, self.data_dir):
            return  # a stale pid file; postgres clears it
        log.warning("stopping the PostgreSQL left running on %s (pid %d)", self.data_dir, pid)
        _run(account, binaries / "pg_ctl", "stop", "-D", self.data_dir, "-m", "fast", "-w")

    def _write_hba(self, account: Account) -> None:
        """Password (SCRAM) for every connection, written whole at every start."""
        hba = self.data_dir / "pg_hba.conf"
        with contextlib.suppress(FileNotFoundError):
            rules = [line.split() for line in hba.read_text().splitlines()]
            if any(r and not r[0].startswith("#") and "trust" in r for r in rules):
                log.warning(
                    "PostgreSQL in %s trusted local connections; from now on it asks for the "
                    "password in %s",
                    self.data_dir,
                    self.password_file,
                )
        _write_owned(hba, HBA, account)

    def _set_password(self, binaries: Path, account: Account, password: str) -> None:
        """The role's password from the file, at every start, in single-user mode: no listener
        exists meanwhile, an older trusting folder is upgraded with no window, and deleting the
        file then restarting changes the password."""
        statement = f"ALTER ROLE {POSTGRES_ROLE} WITH PASSWORD '{scram_verifier(password)}';\n"
        result = subprocess.run(
            [binaries / "postgres", "--single", "-D", self.data_dir, "postgres"],
            input=statement,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            **account.run_options(),
        )
        if result.returncode != 0 or "ERROR:" in result.stderr:
            raise RuntimeError(f"could not set the database password: {result.stderr.strip()}")

    def _serve(self, binaries: Path, account: Account, timeout: float) -> None:
        """The server with its network settings on the command line, where neither
        postgresql.conf nor ALTER SYSTEM can override them; a TCP port lost to a race between
        choosing and binding is chosen again."""
        self.socket_dir = self.data_dir if _socket_fits(self.data_dir) else None
        attempts = 1 if self.socket_dir else 3
        for attempt in range(attempts):
            self.port = SOCKET_PORT if self.socket_dir else free_port()
            self._launch(binaries, account)
            try:
                self._wait_ready(timeout)
                return
            except RuntimeError:
                self.stop()
                if attempt == attempts - 1:
                    raise

    def _launch(self, binaries: Path, account: Account) -> None:
        sockets = f'"{self.socket_dir}"' if self.socket_dir else ""
        settings = {
            "listen_addresses": "" if self.socket_dir else LOOPBACK,
            "unix_socket_directories": sockets,
            "unix_socket_permissions": "0700",
            "hba_file": str(self.data_dir / "pg_hba.conf"),
            "password_encryption": "scram-sha-256",
        }
        options = [f"-c{name}={value}" for name, value in settings.items()]
        log_fd = os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            if not account.is_self:
                os.fchown(log_fd, account.uid, account.gid)
            self.process = subprocess.Popen(
                [binaries / "postgres", "-D", self.data_dir, "-p", str(self.port), *options],
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **account.run_options(),
            )
        finally:
            os.close(log_fd)
        atexit.register(self.stop)

    def _wait_ready(self, timeout: float) -> None:
        """Until postmaster.pid names this process and says `ready`."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-5:])
                raise RuntimeError(f"PostgreSQL exited with {self.process.returncode}:\n{tail}")
            with contextlib.suppress(FileNotFoundError):
                lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
                mine = len(lines) >= 8 and lines[0] == str(self.process.pid)
                if mine and lines[7].strip() == "ready":
                    return
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"PostgreSQL was not ready within {timeout:.0f}s (see {self.log_file})")


def _serves(pid: int, data_dir: Path) -> bool:
    """Whether process `pid` is a PostgreSQL serving `data_dir` (the pid may have been reused);
    without /proc (macOS), whether it is alive at all."""
    if not Path("/proc/self").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return False
    return os.fsencode(data_dir) in command


def _run(account: Account, *args: Path | str) -> None:
    """A PostgreSQL tool as `account`; its own message when it fails."""
    result = subprocess.run(
        [str(arg) for arg in args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        **account.run_options(),
    )
    if result.returncode != 0:
        message = result.stderr.strip() or result.stdout.strip()
        raise RuntimeError(f"{Path(args[0]).name} failed ({result.returncode}): {message}")


def _write_owned(path: Path, text: str, account: Account) -> None:
    """Replace `path` whole with a 0600 file owned by `account`."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        if not account.is_self:
            os.fchown(fd, account.uid, account.gid)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    partial.replace(path)


def write_stack_file(path: Path, **addresses: Any) -> None:
    """Written whole or not at all (a rename), so another shell never reads half of it; 0600
    from its creation, since the database URL in it carries the password."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        partial.unlink()
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump({"pid": os.getpid(), **addresses}, file, indent=2)
    partial.replace(path)


def remove_stack_file(path: Path) -> None:
    """Remove the stack file this process wrote; one another process wrote since stays."""
    with contextlib.suppress(FileNotFoundError, ValueError, AttributeError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
