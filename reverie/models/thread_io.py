"""Inputs of a subagent thread's workflow (issue 18): small, ids not content."""

from __future__ import annotations

from pydantic import BaseModel

from reverie.models.threads import ThreadRef
from reverie.models.workflow_io import SessionOptions, ThreadState


class ThreadWorkflowInput(BaseModel):
    ref: ThreadRef
    options: SessionOptions = SessionOptions()
    carried: ThreadState | None = None
    # Turns the thread has finished (each one's reply went to the coordinator once).
    replies: int = 0
    # The running status event of a turn under way when the run continued as new: its reply is
    # what the thread answered after it.
    turn_start: str | None = None
