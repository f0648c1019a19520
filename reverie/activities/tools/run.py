"""`run_builtin_tool`: validate a tool use's input and hand it to the tool that runs it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError

from reverie.activities.tools.bash import run_bash
from reverie.activities.tools.files import FILE_INPUTS, run_file_tool
from reverie.activities.tools.inputs import (
    BashInput,
    ToolInput,
    WebFetchInput,
    WebSearchInput,
    describe,
)
from reverie.activities.tools.models import ToolOutcome
from reverie.activities.tools.sandbox import SandboxMode
from reverie.activities.tools.web import run_web_fetch
from reverie.activities.tools.web_search import run_web_search
from reverie.activities.tools.workspace import Workspace
from reverie.egress import EgressPolicy

log = logging.getLogger(__name__)

KNOWN_TOOLS = ("bash", *FILE_INPUTS, "web_fetch", "web_search")
_OTHER_INPUTS: dict[str, type[ToolInput]] = {
    "bash": BashInput,
    "web_fetch": WebFetchInput,
    "web_search": WebSearchInput,
}


def _no_heartbeat() -> None:
    return None


async def run_builtin_tool(
    name: str,
    tool_input: dict[str, Any],
    workspace: Workspace,
    policy: EgressPolicy,
    *,
    sandbox: SandboxMode,
    heartbeat: Callable[[], None] = _no_heartbeat,
    search_url: str | None = None,
) -> ToolOutcome:
    """Run one `agent_toolset_20260401` tool use in the session's workspace.

    Whatever the agent asked for, the answer is an outcome (with `is_error` set when it failed
    or was refused), never an exception; only the caller's cancellation propagates.
    `search_url` is the operator's search provider (`REVERIE_WEB_SEARCH_URL`), if any.
    """
    model = FILE_INPUTS.get(name) or _OTHER_INPUTS.get(name)
    if model is None:
        return ToolOutcome.error(
            f"unknown tool {name!r}; the built-in tools are {', '.join(KNOWN_TOOLS)}"
        )
    if not isinstance(tool_input, dict):
        return ToolOutcome.error(f"invalid input for {name}: expected an object")
    try:
        params = model.model_validate(tool_input)
    except ValidationError as error:
        return ToolOutcome.error(f"invalid input for {name}: {describe(error)}")
    try:
        if isinstance(params, BashInput):
            return await run_bash(params, workspace, policy, sandbox, heartbeat)
        if isinstance(params, WebFetchInput):
            return await run_web_fetch(params, policy, heartbeat)
        if isinstance(params, WebSearchInput):
            return await run_web_search(params, search_url, heartbeat)
        return await run_file_tool(name, params, workspace)
    except OSError as error:
        log.exception("built-in tool %s failed in session %s", name, workspace.session_id)
        return ToolOutcome.error(f"{name} failed: {error.strerror or error}")
