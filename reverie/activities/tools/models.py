"""The shapes at the toolset's boundary: what the caller passes in and what a tool run returns."""

from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

# Where the agent sees its folders. Every path it uses or is shown is one of these, never a
# host path, so the same transcript makes sense whichever worker ran the tools.
WORK_VIRTUAL = "/workspace"
OUTPUTS_VIRTUAL = "/mnt/session/outputs"
MEMORY_VIRTUAL = "/mnt/memory"
# Mounts live under /mnt: the sandbox gives /mnt its own empty tmpfs, so any path below it can
# be created as a mount point while the rest of the system stays read-only.
MOUNTS_PARENT = "/mnt"
SESSION_VIRTUAL = "/mnt/session"


class Mount(BaseModel):
    """A host folder shown to the agent at `virtual_path` (memory stores, later)."""

    model_config = ConfigDict(frozen=True)

    host_path: Path
    virtual_path: str
    read_only: bool

    @field_validator("virtual_path")
    @classmethod
    def _under_mnt(cls, value: str) -> str:
        normal = posixpath.normpath(value)
        if normal != value.rstrip("/") or not normal.startswith(MOUNTS_PARENT + "/"):
            raise ValueError(
                f"a mount's virtual path must be a normalised path under /mnt/: {value!r}"
            )
        if normal == SESSION_VIRTUAL or normal.startswith(SESSION_VIRTUAL + "/"):
            raise ValueError(f"{SESSION_VIRTUAL} is reserved for the session's own folders")
        return normal


class ToolOutcome(BaseModel):
    """A tool run's result: Messages API `tool_result` content blocks and whether it failed."""

    content: list[dict[str, Any]]
    is_error: bool

    @classmethod
    def text(cls, text: str, *, is_error: bool = False) -> ToolOutcome:
        # The Messages API refuses empty text blocks, so an empty result still says something.
        return cls(content=[{"type": "text", "text": text or "(no output)"}], is_error=is_error)

    @classmethod
    def error(cls, message: str) -> ToolOutcome:
        return cls.text(message, is_error=True)
