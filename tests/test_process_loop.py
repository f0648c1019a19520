"""Tools' child processes (activities/tools/process_loop.py): on the worker's uvloop they start
on an asyncio loop of their own, inherit nothing else of the worker, and a cancelled call returns
only once its process group is dead and reaped."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from reverie.activities.tools.process import run_process
from reverie.activities.tools.process_loop import uses_own_loop


async def _run(argv: list[str], cwd: Path, timeout: float = 30.0) -> str:
    result = await run_process(
        argv, env={"PATH": "/usr/bin:/bin"}, cwd=cwd, timeout=timeout, heartbeat=lambda: None
    )
    return result.output


async def test_a_child_inherits_no_other_descriptor_of_the_worker(tmp_path: Path) -> None:
    """A descriptor the worker holds inheritable (as a library might leave one) does not reach a
    tool's child, on whichever loop the worker runs."""
    fd = os.memfd_create("worker-secret", 0)  # inheritable, on purpose
    os.set_inheritable(fd, True)
    try:
        out = await _run(["/bin/ls", "-l", "/proc/self/fd/"], tmp_path)
    finally:
        os.close(fd)
    assert "worker-secret" not in out, out


async def test_a_cancelled_call_returns_once_its_child_is_dead_and_reaped(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    call = asyncio.ensure_future(
        _run(["/bin/sh", "-c", f"echo $$ > {pid_file}; exec sleep 30"], tmp_path)
    )
    for _ in range(500):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        await asyncio.sleep(0.01)
    pid = int(pid_file.read_text())
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    with pytest.raises(ProcessLookupError):  # killed, and reaped: no such process any more
        os.kill(pid, 0)


async def test_errors_reach_the_caller(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await _run([str(tmp_path / "no-such-program")], tmp_path)
    assert uses_own_loop() == (os.environ.get("REVERIE_EVENT_LOOP", "uvloop") == "uvloop")
