"""Running one command to completion: bounded output, a deadline, heartbeats, nothing left over.

The command runs as the leader of a new process group. When it ends, times out or the caller is
cancelled, the whole group is killed, so background children never outlive the call (under
bubblewrap its own PID namespace guarantees the same even for children that leave the group).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from reverie.activities.tools.output import CappedOutput
from reverie.activities.tools.process_loop import from_any_thread, on_process_loop

HEARTBEAT_SECONDS = 1.0
# After the command ends, how long leftover output may take to arrive once its group is killed.
DRAIN_SECONDS = 2.0


@dataclass(frozen=True)
class ProcessResult:
    output: str
    exit_code: int | None  # None when the deadline killed it
    timed_out: bool


async def run_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    timeout: float,
    heartbeat: Callable[[], None],
    pass_fds: Sequence[int] = (),
) -> ProcessResult:
    """Run `argv` with stdout and stderr combined, calling `heartbeat` about every second.

    `pass_fds` are inherited by the command (bwrap reads its generated files from them), and
    no other descriptor of the worker is (see process_loop.py)."""
    return await on_process_loop(
        _run(argv, env, cwd, timeout, from_any_thread(heartbeat), tuple(pass_fds))
    )


async def _run(
    argv: Sequence[str],
    env: Mapping[str, str],
    cwd: Path,
    timeout: float,
    heartbeat: Callable[[], None],
    pass_fds: tuple[int, ...],
) -> ProcessResult:
    output = CappedOutput()
    # Our own pipe rather than asyncio's: its `wait()` would also wait for the pipe to close,
    # and only we can close our end to cut loose from a process that escaped the group.
    read_fd, write_fd = os.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=write_fd,
            stderr=write_fd,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
            pass_fds=tuple(pass_fds),
        )
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    transport, reader = await _read_pipe(read_fd, output)
    ended = False
    try:
        ended = await _wait(proc, timeout, heartbeat)
    finally:
        _kill_group(proc.pid)
        # Shielded: the caller's cancellation must not leave the process unreaped or the pipe open.
        await asyncio.shield(_reap(proc, transport, reader))
    return ProcessResult(
        output=output.text(),
        exit_code=proc.returncode if ended else None,
        timed_out=not ended,
    )


async def _read_pipe(
    fd: int, output: CappedOutput
) -> tuple[asyncio.ReadTransport, asyncio.Task[None]]:
    loop = asyncio.get_running_loop()
    stream = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stream), os.fdopen(fd, "rb", buffering=0)
    )
    return transport, asyncio.create_task(_pump(stream, output))


async def _pump(stream: asyncio.StreamReader, output: CappedOutput) -> None:
    while chunk := await stream.read(65536):
        output.feed(chunk)


async def _wait(
    proc: asyncio.subprocess.Process, timeout: float, heartbeat: Callable[[], None]
) -> bool:
    """True if the process ended before `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    waiter = asyncio.ensure_future(proc.wait())
    try:
        while (remaining := deadline - loop.time()) > 0:
            done, _ = await asyncio.wait({waiter}, timeout=min(HEARTBEAT_SECONDS, remaining))
            if done:
                return True
            heartbeat()
        return waiter.done()
    finally:
        waiter.cancel()


async def _reap(
    proc: asyncio.subprocess.Process, transport: asyncio.ReadTransport, reader: asyncio.Task[None]
) -> None:
    """Collect the exit status and the output left in the pipe; a pipe still held open after
    the group is dead (by a process that left it, possible only without bubblewrap) is closed."""
    await proc.wait()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.wait({reader}), DRAIN_SECONDS)
    transport.close()
    if not reader.done():
        reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
