"""Tool activities: run one built-in tool use in the session's workspace and record its result.

The workflow names the result event; a result already recorded is never written again, and a
run lost with its worker is recorded as interrupted under that same id (first writer wins).
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from reverie.activities.events import refusals_are_final
from reverie.activities.memory import SessionMemory
from reverie.activities.tool_specs import builtin_enabled
from reverie.activities.tools import (
    SandboxMode,
    ToolOutcome,
    Workspace,
    run_builtin_tool,
)
from reverie.egress import EgressPolicy
from reverie.models.workflow_io import Activity, RunToolInput, ToolErrorInput
from reverie.observability.metrics import METRICS
from reverie.settings import Settings
from reverie.store import agents, environments, events
from reverie.store.pool import Pool

INTERRUPTED = (
    "The tool run was interrupted before it reported a result (its worker stopped or the "
    "user interrupted). It may or may not have taken effect; check before repeating it."
)
DENIED = "The user denied this tool use."
NO_SANDBOX = (
    "bash is unavailable: this worker has no sandbox (bubblewrap is missing or cannot run) and "
    "REVERIE_SANDBOX=none is not set"
)


# A test hook (issue 17): the tool activity stops without heartbeating right before (`before`)
# or right after (`after`) it writes back the memory mounts, so a test can kill the worker there.
TEST_HOOK_FREEZE_MEMORY_SYNC = "REVERIE_TEST_HOOK_FREEZE_MEMORY_SYNC"


def _text(message: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": message}]


def with_memory_notes(outcome: ToolOutcome, notes: list[str]) -> ToolOutcome:
    """The tool's result with what its write-back could not save: an error result, so the
    agent looks again."""
    if not notes:
        return outcome
    text = "Memory: " + "\n".join(notes)
    return ToolOutcome(content=[*outcome.content, {"type": "text", "text": text}], is_error=True)


class ToolActivities:
    def __init__(self, pool: Pool, settings: Settings, sandbox: SandboxMode | None) -> None:
        self._pool = pool
        self._settings = settings
        self._sandbox = sandbox
        self._freeze_memory_sync = os.environ.get(TEST_HOOK_FREEZE_MEMORY_SYNC)

    @activity.defn(name=Activity.RUN_TOOL)
    async def run_tool(self, params: RunToolInput) -> bool:
        """Run the tool use; answer whether its result is an error."""
        recorded = await events.get_many(self._pool, [params.result_event_id])
        if recorded:
            return bool(recorded[0].payload.get("is_error"))
        found = await events.get_many(self._pool, [params.tool_use_event_id])
        if not found:
            raise ApplicationError(
                f"no tool use event {params.tool_use_event_id}", non_retryable=True
            )
        use = found[0].payload
        with METRICS.tool_timer(use["name"]) as measured:  # (issue 21) tool durations
            outcome = await self._run(params, use["name"], use.get("input") or {})
            measured["is_error"] = outcome.is_error
        await self._record(
            params.session_id, params.tool_use_event_id, params.result_event_id, outcome
        )
        return outcome.is_error

    async def _run(
        self, params: RunToolInput, name: str, tool_input: dict[str, Any]
    ) -> ToolOutcome:
        agent = await agents.get(self._pool, params.agent_id, params.agent_version)
        if not builtin_enabled(agent, name):
            return ToolOutcome(
                content=_text(f"tool {name!r} is not enabled for this agent"), is_error=True
            )
        if name == "bash" and self._sandbox is None:
            return ToolOutcome(content=_text(NO_SANDBOX), is_error=True)
        environment = await environments.get(self._pool, params.environment_id)
        memory: SessionMemory | None = None
        if name not in ("web_fetch", "web_search"):  # the tools that see the mounts
            memory = await SessionMemory.load(
                self._pool,
                self._settings,
                params.workspace_session_id or params.session_id,
                activity.heartbeat,
            )
        if memory is not None:
            await memory.prepare()
        workspace = Workspace.for_session(
            self._settings.workspaces,
            # A subagent thread works in its session's workspace (issue 18).
            params.workspace_session_id or params.session_id,
            memory.mounts() if memory else None,
            hidden=self._hidden(),
        )
        plan = memory.plan(name, tool_input, workspace) if memory else None
        if memory is not None and plan is not None:
            memory.mark_pending(params.result_event_id)
        outcome = await run_builtin_tool(
            name,
            tool_input,
            workspace,
            EgressPolicy.for_networking(
                environment.networking.type,
                environment.config.egress_hosts(),
                self._settings.egress_networks,
            ),
            sandbox=self._sandbox or "none",
            heartbeat=activity.heartbeat,
            search_url=self._settings.web_search_url,
        )
        if memory is None or plan is None:
            return outcome
        await self._test_freeze("before")
        notes = await memory.write_back_guarded(plan)
        await self._test_freeze("after")
        memory.clear_pending(params.result_event_id)
        return with_memory_notes(outcome, notes)

    async def _test_freeze(self, point: str) -> None:
        if self._freeze_memory_sync == point:
            await asyncio.Event().wait()  # the test kills the worker here

    async def _owed_write_back(self, session_id: str, result_event_id: str) -> list[str]:
        """A run that stopped before its write-back (its worker died, or it was interrupted)
        left its marker: the write-back is made now, before its error result is recorded."""
        memory = await SessionMemory.load(self._pool, self._settings, session_id)
        if memory is None or not memory.pending(result_event_id):
            return []
        notes = await memory.write_back_guarded()
        memory.clear_pending(result_event_id)
        return notes

    def _hidden(self) -> list[Path]:
        """What bash must not see: Reverie's own state (the database, other sessions) and the
        worker user's home (credentials)."""
        return [path for path in (self._settings.home, Path.home()) if path.is_dir()]

    @activity.defn(name=Activity.RECORD_TOOL_ERROR)
    async def record_tool_error(self, params: ToolErrorInput) -> None:
        message = INTERRUPTED
        if params.reason == "denied":
            message = DENIED
            if params.confirmation_event_id:
                answer = await events.get_many(self._pool, [params.confirmation_event_id])
                if answer and answer[0].payload.get("deny_message"):
                    message = f"{DENIED} Their message: {answer[0].payload['deny_message']}"
        notes = await self._owed_write_back(params.session_id, params.result_event_id)
        await self._record(
            params.session_id,
            params.tool_use_event_id,
            params.result_event_id,
            with_memory_notes(ToolOutcome(content=_text(message), is_error=True), notes),
        )

    async def _record(
        self, session_id: str, tool_use_event_id: str, result_event_id: str, outcome: ToolOutcome
    ) -> None:
        payload = {
            "tool_use_id": tool_use_event_id,
            "content": outcome.content,
            "is_error": outcome.is_error,
        }
        # A result PostgreSQL refuses for good must end the session, not retry forever.
        with refusals_are_final(f"record tool result {result_event_id}"):
            await events.append(
                self._pool,
                session_id,
                [(result_event_id, "agent.tool_result", payload, datetime.now(UTC))],
            )
