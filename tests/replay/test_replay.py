"""Replays saved session histories against today's workflow code.

A change to `SessionWorkflow` that would break sessions already running (a command added,
removed or reordered without `workflow.patched`) fails here with a NondeterminismError.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from reverie.workflows.dream import DreamWorkflow
from reverie.workflows.dream_schedule import ScheduledDreamWorkflow
from reverie.workflows.session import SessionWorkflow
from reverie.workflows.thread import ThreadWorkflow
from reverie.workflows.webhooks import WORKFLOWS as WEBHOOK_WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_histories_are_saved() -> None:
    assert {p.stem for p in HISTORIES} >= {
        "conversation",
        "retries",
        "interrupt_archive",
        "terminal_error",
        "tools",
        "long_turn",
        # webhooks (issue 19): an endpoint's workflow, the dispatcher
        "webhook_endpoint",
        "webhook_dispatcher",
        # after the patches of issue 13 (see reverie/workflows/patches.py)
        "retries_in_workflow",
        "interrupt_in_backoff",
        "committed_answer_settled",
        "record_refused",
        # after the patches `stop-reason-rules` and `compaction` (issue 13, items 5 and 6)
        "stop_reasons",
        "compaction_threshold",
        "compaction_prompt_too_long",
        # after the patches `promote-starts-turn` and `idle-with-answer` (issue 15)
        "promote_starts_turn",
        "idle_with_answer",
        "created_running",
        # after the patch `outcomes` (issue 16)
        "outcomes",
        # after the patch `multiagent` (issue 18): a coordinator's session and its thread
        "multiagent",
        "multiagent_thread",
        # after the patch `threads-require-action` (issue 18)
        "multiagent_requires_action",
        # after the patch `thread-ended-outside` (issue 18)
        "multiagent_thread_ended_outside",
        # dreams (issue 20): a dream, a scheduled run with its child dream
        "dream",
        "scheduled_dream",
        # after the patch `baseline-2026-11` (issue 15): the same lives, one marker for all
        "baseline_created_running",
        "baseline_tools",
        "baseline_retries_in_workflow",
        "baseline_interrupt_in_backoff",
        "baseline_committed_answer_settled",
        "baseline_stop_reasons",
        "baseline_compaction_threshold",
        "baseline_idle_with_answer",
        "baseline_outcomes",
        "baseline_multiagent",
        "baseline_multiagent_thread",
        "baseline_multiagent_requires_action",
        "baseline_scheduled_dream",
        "dream_canceled",
        # after the patch `scheduled-pick-survives-cancel` (issue 20)
        "scheduled_dream_pick_canceled",
    }


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replay(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(
        workflows=[
            SessionWorkflow,
            ThreadWorkflow,
            *WEBHOOK_WORKFLOWS,
            DreamWorkflow,
            ScheduledDreamWorkflow,
        ],
        data_converter=pydantic_data_converter,
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.stem}: {result.replay_failure!r}"
