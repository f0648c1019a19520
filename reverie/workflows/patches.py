"""Ids of the `workflow.patched` guards in session workflows, one per change of commands.

Sessions run for weeks: a worker upgraded under a running session replays its history with the
new code, which must issue the same commands where the history has them. Each change that
alters the commands a workflow issues is therefore guarded: `workflow.patched(ID)` is False
while replaying a history recorded before the change (the old commands are issued) and True
otherwise (a marker is recorded, and the new commands follow). The saved histories in
`tests/replay/histories` hold sessions of every age and must all replay.

A guard may be dropped (`workflow.deprecate_patch`, then removed) only once no run older than it
can still be replaying; a run is renewed at every continue-as-new.

Workflow code asks `patched(ID)` (below), not `workflow.patched(ID)`: each patch Temporal records
is a marker and an upsert of the `TemporalChangeVersion` search attribute (a visibility write on
the server), and a new session used to record three of them in its first workflow task.
"""

from __future__ import annotations

from temporalio import workflow

# The workflow retries model errors itself (counting only the model's answers, sleeping the
# backoff in a timer, recording `rescheduling` as the session's own status); Temporal retries
# only attempts lost with a worker, promptly and within their own bound.
MODEL_RETRIES_IN_WORKFLOW = "model-retries-in-workflow"
# Before declaring a model step exhausted, terminal or interrupted, a local activity finds out
# whether it committed after all (then its answer is used) and otherwise closes its span.
SETTLE_FAILED_MODEL_STEP = "settle-failed-model-step"
# An interrupted turn writes its pending inputs into the transcript instead of carrying their
# ids, so the ids a session carries stay bounded.
ADOPT_INTERRUPTED_INPUTS = "adopt-interrupted-inputs"
# Every stop reason of the model's answer has a rule (`stop_reasons.STOP_REASON_RULES`): a tool use
# that `max_tokens` may have cut off is not run, `refusal` idles the session and runs nothing,
# `pause_turn` continues the answer, the context-window stop compacts; unknown ones end the turn.
STOP_REASON_RULES = "stop-reason-rules"
# Long sessions compact their transcript (Reverie's own summary, as an activity keyed by a
# workflow-made id) when it nears the model's context window or the model says it is too long.
COMPACTION = "compaction"
# Outcomes (`user.define_outcome`, workflows/outcome.py): the turns of a session with an active
# outcome record its state, run the grader and take further passes. Only sessions that define
# an outcome take these commands; older histories never reach them.
OUTCOMES = "outcomes"
# An input that starts a turn (messages into a session waiting for work) is recorded together
# with the turn's running status, in one local activity instead of two (issue 15).
PROMOTE_STARTS_TURN = "promote-starts-turn"
# A model step that may end its turn is given the turn's idle event (id, turn count): when its
# answer ends the turn and no input arrived meanwhile, it records the idle status with the answer,
# in one transaction, and the workflow records nothing more (issue 15: one local activity and
# its round trips fewer at the end of every turn).
IDLE_WITH_ANSWER = "idle-with-answer"
# A session created with messages starts with its first turn's running status recorded by its
# creator (with the messages, in one transaction): the first turn records none (issue 15).
CREATED_RUNNING = "created-running"
# Multi-agent orchestration (issue 18): a coordinator's delegation tool uses start subagent
# threads (child workflows), message and wait for them. Only coordinator sessions take these
# commands; older histories never reach them.
MULTIAGENT = "multiagent"
# (issue 18) A coordinator's session whose running threads all wait for the client's answers
# (their always_ask confirmations, custom tools) goes idle with `requires_action` naming the
# cross-posted tool uses, and running again once a thread goes on.
THREADS_REQUIRE_ACTION = "threads-require-action"
# (issue 20) A scheduled dream run that ends before all its dreams ran (canceled in the Web UI,
# or a child failed) records the dreams it did not start as canceled, instead of leaving them
# pending with no workflow.
SCHEDULED_RUN_ENDS_ITS_DREAMS = "scheduled-run-ends-its-dreams"
# (issue 18) A thread whose workflow ended outside Reverie (terminated in the Web UI or CLI)
# and so cannot take a signal: its session records it terminated and goes on.
THREAD_ENDED_OUTSIDE = "thread-ended-outside"
# (issue 20) A scheduled dream run canceled while it picks its sessions learns which dreams the
# pick made (it may have committed them, and moved the cursor past their sessions) and records
# them canceled, instead of leaving them pending for ever with no run to pick them again.
SCHEDULED_PICK_SURVIVES_CANCEL = "scheduled-pick-survives-cancel"

# (issue 15) Every patch above, taken together: a run that starts on code that has all of them
# records this one marker (one search-attribute upsert) instead of one per patch it reaches. A
# run that started on older code never has it, and asks for each patch as before.
BASELINE_2026_11 = "baseline-2026-11"
BASELINE_PATCHES = frozenset(
    {
        MODEL_RETRIES_IN_WORKFLOW,
        SETTLE_FAILED_MODEL_STEP,
        ADOPT_INTERRUPTED_INPUTS,
        STOP_REASON_RULES,
        COMPACTION,
        OUTCOMES,
        PROMOTE_STARTS_TURN,
        IDLE_WITH_ANSWER,
        CREATED_RUNNING,
        MULTIAGENT,
        THREADS_REQUIRE_ACTION,
        SCHEDULED_RUN_ENDS_ITS_DREAMS,
        THREAD_ENDED_OUTSIDE,
        SCHEDULED_PICK_SURVIVES_CANCEL,
    }
)


def patched(patch_id: str) -> bool:
    """`workflow.patched(patch_id)`, with the patches of the baseline implied by its marker.

    Why this is safe: Temporal answers a patch once per run and keeps the answer. The first call
    asks for the baseline; in a run started on this code it is recorded (True for the whole run,
    and no other baseline patch is recorded). Replaying a run from before the baseline, it is
    absent from the history (False for the whole run): each patch is then asked for itself and
    answers as it did when the run was recorded. A run from before the baseline that reaches its
    first patch only after a new worker took it over (not replaying) records the baseline then,
    which is right: every patch it had not asked for yet would have answered True there too.

    For operators: a run carrying the baseline's marker has every patch of the baseline (its
    `TemporalChangeVersion` names only the baseline); workers older than the baseline cannot
    replay such runs (deploy/README.md, "Upgrading").
    """
    if patch_id in BASELINE_PATCHES and workflow.patched(BASELINE_2026_11):
        return True
    return workflow.patched(patch_id)
