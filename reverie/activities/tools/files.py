"""The file tools (`read`, `write`, `edit`, `glob`, `grep`): the SDK's own, behind path mapping.

The SDK's implementations confine every path to the working folder and the allowed roots after
following symlinks, and refuse writes under read-only roots; this module only maps the agent's
virtual paths to host paths and back, so the agent sees `/workspace/...` and never the host.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from anthropic.lib.tools import ToolError
from anthropic.lib.tools.agent_toolset import (
    AgentToolContext,
    beta_edit_tool,
    beta_glob_tool,
    beta_grep_tool,
    beta_read_tool,
    beta_write_tool,
)

from reverie.activities.tools.inputs import (
    EditInput,
    GlobInput,
    GrepInput,
    ReadInput,
    ToolInput,
    WriteInput,
)
from reverie.activities.tools.models import ToolOutcome
from reverie.activities.tools.paths import PathRefused, to_host, to_virtual_text
from reverie.activities.tools.workspace import Workspace

_SDK_TOOLS = {
    "read": beta_read_tool,
    "write": beta_write_tool,
    "edit": beta_edit_tool,
    "glob": beta_glob_tool,
    "grep": beta_grep_tool,
}
FILE_INPUTS: dict[str, type[ToolInput]] = {
    "read": ReadInput,
    "write": WriteInput,
    "edit": EditInput,
    "glob": GlobInput,
    "grep": GrepInput,
}
_WRITES = {"write", "edit"}


def tool_context(workspace: Workspace) -> AgentToolContext:
    """The SDK's path policy for this workspace: work folder, outputs, mounts (some read-only)."""
    others = [root for root in workspace.roots() if root.host != workspace.work_dir]
    return AgentToolContext(
        workdir=workspace.work_dir,
        allowed_roots=[root.host for root in others],
        read_only_roots=[root.host for root in others if root.read_only],
    )


def _host_input(name: str, params: ToolInput, workspace: Workspace) -> dict[str, Any]:
    """The SDK call's input, with every path argument mapped to the host."""
    data = params.model_dump(exclude_none=True)
    if name == "glob" and data["pattern"].startswith("/") and "path" not in data:
        data["path"], data["pattern"] = _split_absolute_pattern(workspace, data["pattern"])
    key = "file_path" if "file_path" in data else "path"
    if key in data:
        target = to_host(workspace, data[key])
        if name in _WRITES and target.root.read_only:
            raise PathRefused(f"{data[key]} is inside read-only directory {target.root.virtual}")
        data[key] = str(target.path)
    return data


def _split_absolute_pattern(workspace: Workspace, pattern: str) -> tuple[str, str]:
    """`/workspace/src/**/*.py` as root `/workspace` and pattern `src/**/*.py`.

    The SDK only takes relative patterns; an absolute one under a known folder is what the
    agent will naturally write, so it is split rather than refused.
    """
    for root in workspace.roots():
        if pattern.startswith(root.virtual + "/"):
            return root.virtual, pattern[len(root.virtual) + 1 :]
    raise PathRefused(f"pattern {pattern!r} is not under a folder this session can use")


def _blocks(result: Any, workspace: Workspace) -> list[dict[str, Any]]:
    if isinstance(result, str):
        return ToolOutcome.text(to_virtual_text(workspace, result)).content
    blocks = []
    for block in result:
        block = dict(block)
        if block.get("type") == "text":
            block["text"] = (
                to_virtual_text(workspace, str(block.get("text") or "")) or "(no output)"
            )
        blocks.append(block)
    return blocks or ToolOutcome.text("").content


async def run_file_tool(name: str, params: ToolInput, workspace: Workspace) -> ToolOutcome:
    """Run one file tool; every refusal or failure becomes an error outcome, never an exception."""
    try:
        host_input = _host_input(name, params, workspace)
    except PathRefused as refused:
        return ToolOutcome.error(f"{name}: {refused}")
    call: Callable[[dict[str, Any]], Awaitable[Any]] = _SDK_TOOLS[name](
        tool_context(workspace)
    ).call
    try:
        result = await call(host_input)
    except ToolError as error:
        content = error.content
        if isinstance(content, str):
            return ToolOutcome.error(to_virtual_text(workspace, content))
        return ToolOutcome(content=_blocks(content, workspace), is_error=True)
    except (ValueError, TypeError, OSError) as error:
        return ToolOutcome.error(to_virtual_text(workspace, f"{name}: {error}"))
    return ToolOutcome(content=_blocks(result, workspace), is_error=False)
