"""The built-in tools (`agent_toolset_20260401`), run in a session's sandboxed workspace.

A library without Temporal or the database: the tool activity builds a `Workspace` for the
session, picks the sandbox once per worker with `detect_sandbox`, and calls `run_builtin_tool`.
"""

from __future__ import annotations

from reverie.activities.tools.models import (
    MEMORY_VIRTUAL,
    OUTPUTS_VIRTUAL,
    WORK_VIRTUAL,
    Mount,
    ToolOutcome,
)
from reverie.activities.tools.run import run_builtin_tool
from reverie.activities.tools.sandbox import (
    SandboxMode,
    SandboxUnavailableError,
    bwrap_unavailable_reason,
    detect_sandbox,
)
from reverie.activities.tools.workspace import Workspace

__all__ = [
    "MEMORY_VIRTUAL",
    "OUTPUTS_VIRTUAL",
    "WORK_VIRTUAL",
    "Mount",
    "SandboxMode",
    "SandboxUnavailableError",
    "ToolOutcome",
    "Workspace",
    "bwrap_unavailable_reason",
    "detect_sandbox",
    "run_builtin_tool",
]
