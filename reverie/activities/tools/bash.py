"""The `bash` tool: one shell per session, rebuilt from saved state for every call.

Differences from the SDK's `BashSession` (one long-lived process): the working directory and
exported variables survive worker restarts; shell functions, aliases, options and background
jobs do not outlive a call (a job started with `&` is killed when the command returns).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from reverie.activities.tools.inputs import BashInput
from reverie.activities.tools.models import OUTPUTS_VIRTUAL, WORK_VIRTUAL, ToolOutcome
from reverie.activities.tools.paths import to_virtual_text
from reverie.activities.tools.process import ProcessResult, run_process
from reverie.activities.tools.proxy import EgressProxy
from reverie.activities.tools.sandbox import (
    STATE_VIRTUAL,
    SandboxMode,
    bwrap_args,
    bwrap_command,
    hand_over,
    host_user,
    privilege_drop,
    proxy_bridge,
    proxy_environment,
    sandbox_files,
    socat_missing,
)
from reverie.activities.tools.shell_state import WRAPPER, ShellState
from reverie.activities.tools.workspace import Workspace
from reverie.egress import EgressPolicy

# Handing a large old workspace over takes a while: in threads of its own, never in the loop's
# default executor, which DNS lookups and other sessions share.
_HANDOVER_THREADS = ThreadPoolExecutor(max_workers=2, thread_name_prefix="reverie-hand-over")
DEFAULT_TIMEOUT_MS = 120_000
MAX_TIMEOUT_MS = 600_000
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_VIRTUAL_PATHS = re.compile(r"(^|[\s'\"=:])(/workspace|/mnt/)")
UNSANDBOXED_NOTE = (
    "[note: this worker runs commands without a sandbox, so /workspace and /mnt/session/outputs "
    "are not real paths here; use $WORKSPACE and $OUTPUTS_DIR (the shell starts in $WORKSPACE)]\n"
)
NO_SOCAT_NOTE = (
    "[note: this worker lacks socat, so the sandbox has no network although the environment "
    "allows it; the operator can install it with `apt-get install socat`]\n"
)


def _env(home: str, outputs: str) -> dict[str, str]:
    """A clean environment: none of the worker's variables (API keys, database URLs) leak in."""
    return {
        "PATH": _PATH,
        "HOME": home,
        "WORKSPACE": home,
        "OUTPUTS_DIR": outputs,
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "PAGER": "cat",
        "GIT_PAGER": "cat",
    }


async def _execute(
    workspace: Workspace,
    policy: EgressPolicy,
    sandbox: SandboxMode,
    state: ShellState,
    file: str,
    timeout: float,
    heartbeat: Callable[[], None],
) -> ProcessResult:
    """Run the stored command through the wrapper, inside bubblewrap or directly."""
    shell = ["bash", "--noprofile", "--norc", "-c", WRAPPER, "bash"]
    if sandbox == "none":
        home = str(workspace.work_dir)
        return await run_process(
            [*shell, str(state.folder), home, file],
            env=_env(home, str(workspace.outputs_dir)),
            cwd=workspace.work_dir,
            timeout=timeout,
            heartbeat=heartbeat,
        )
    env = _env(WORK_VIRTUAL, OUTPUTS_VIRTUAL)
    proxy_env = proxy_environment()
    uid = host_user()
    writable = [m.host_path for m in workspace.mounts if not m.read_only]
    folders = [workspace.work_dir, workspace.outputs_dir, state.folder, *writable]
    await asyncio.get_running_loop().run_in_executor(_HANDOVER_THREADS, hand_over, folders, uid)
    async with contextlib.AsyncExitStack() as stack:
        files = stack.enter_context(sandbox_files())
        proxy = None
        if _uses_network(policy):
            proxy = await stack.enter_async_context(EgressProxy(policy))
            env = {**env, **proxy_env}
        # The proxy's variables are set after the saved shell state (or cleared without one).
        fixed = _export_lines(proxy_env) if proxy else _unset_lines(proxy_env)
        command = [*shell, STATE_VIRTUAL, WORK_VIRTUAL, file, fixed]
        if proxy:
            command = ["/bin/sh", "-c", f'{proxy_bridge()}; exec "$@"', "sh", *command]
        options = bwrap_args(
            workspace,
            files,
            state_dir=state.folder,
            proxy_socket=proxy.socket_path if proxy else None,
            uid=uid,
        )
        return await run_process(
            [*bwrap_command(options, files), *privilege_drop(uid), *command],
            env=env,
            cwd=workspace.work_dir,
            timeout=timeout,
            heartbeat=heartbeat,
            pass_fds=files.fds,
        )


def _export_lines(variables: dict[str, str]) -> str:
    return "; ".join(
        f"builtin export {name}={shlex.quote(value)}" for name, value in variables.items()
    )


def _unset_lines(variables: dict[str, str]) -> str:
    return "builtin unset -v " + " ".join(variables)


def _uses_network(policy: EgressPolicy) -> bool:
    return policy.reaches_network and not socat_missing()


def _timeout_ms(requested: int | None) -> int:
    return min(requested or DEFAULT_TIMEOUT_MS, MAX_TIMEOUT_MS)


async def run_bash(
    params: BashInput,
    workspace: Workspace,
    policy: EgressPolicy,
    sandbox: SandboxMode,
    heartbeat: Callable[[], None],
) -> ToolOutcome:
    state = ShellState(workspace.state_dir / "bash")
    if params.restart:
        state.reset()
        if not params.command:
            return ToolOutcome.text("bash session restarted")
    if not params.command:
        return ToolOutcome.error("bash: command is required (or restart: true to reset the shell)")
    timeout_ms = _timeout_ms(params.timeout_ms)
    file = state.write_command(params.command)
    try:
        result = await _execute(
            workspace, policy, sandbox, state, file, timeout_ms / 1000, heartbeat
        )
        started = state.saved_by_run()
        if result.timed_out:
            state.discard_pending()
        else:
            state.commit()
    finally:
        state.remove_command(file)
    output = result.output.rstrip("\n")
    if sandbox == "bwrap" and not started and output.startswith("bwrap:"):
        return ToolOutcome.error(
            f"bash: the sandbox could not start: {_hide_host(workspace, output)}"
        )
    if sandbox == "none" and _VIRTUAL_PATHS.search(params.command):
        output = UNSANDBOXED_NOTE + output
    if sandbox == "bwrap" and policy.reaches_network and socat_missing():
        output = NO_SOCAT_NOTE + output
    if result.timed_out:
        return ToolOutcome.error(_join(output, f"timed out after {timeout_ms} ms"))
    if result.exit_code is not None and result.exit_code < 0:
        return ToolOutcome.text(_join(output, f"killed by signal {-result.exit_code}"))
    if result.exit_code:
        return ToolOutcome.text(_join(output, f"exit code: {result.exit_code}"))
    return ToolOutcome.text(output)


def _join(output: str, status: str) -> str:
    return f"{output}\n{status}" if output else status


def _hide_host(workspace: Workspace, text: str) -> str:
    """A sandbox failure names host folders; the agent gets their virtual names or a stand-in."""
    return to_virtual_text(workspace, text).replace(str(workspace.root), "<workspaces>")
