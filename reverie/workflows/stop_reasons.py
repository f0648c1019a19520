"""What the agent loop does with an answer, by its stop reason: one rule per value of the SDK's
`BetaStopReason` (a test checks the table covers the enum, as the SDK's own tool runner does).

Pure data, imported by the workflow: no SDK import here (the test compares with it).
"""

from __future__ import annotations

from enum import StrEnum


class AnswerRule(StrEnum):
    # Run the answer's tool uses, then another model step with their results.
    RUN_TOOLS = "run_tools"
    # The answer is final: the turn ends (messages sent meanwhile start another step). Tool uses
    # in it (the API sends none) are not run; each gets an error result saying so.
    FINAL = "final"
    # The answer stopped at `max_tokens`: a tool use that ends it may be cut off, so it is not
    # run and the agent gets an error result saying so; complete ones run and the turn goes on.
    # With no tool use, the answer is final.
    CUT_OFF = "cut_off"
    # The turn is not finished (`pause_turn`, or the API paused after compacting): another
    # model step with the transcript as it is, so the model continues its answer. No tool runs.
    RESUME = "resume"
    # The model refused: none of the answer's tool uses run, the session idles with
    # `stop_reason: {"type": "refusal"}`.
    REFUSED = "refused"
    # The context window is full: like CUT_OFF for tool uses, then the transcript is compacted
    # before the next model step, which continues the turn.
    COMPACT = "compact"


STOP_REASON_RULES: dict[str, AnswerRule] = {
    "tool_use": AnswerRule.RUN_TOOLS,
    "end_turn": AnswerRule.FINAL,
    "stop_sequence": AnswerRule.FINAL,
    "max_tokens": AnswerRule.CUT_OFF,
    "pause_turn": AnswerRule.RESUME,
    "compaction": AnswerRule.RESUME,
    "refusal": AnswerRule.REFUSED,
    "model_context_window_exceeded": AnswerRule.COMPACT,
}
# A stop reason newer than this table: end the turn (safe: nothing runs), and log it.
UNKNOWN_STOP_REASON_RULE = AnswerRule.FINAL


def rule_for(stop_reason: str) -> AnswerRule | None:
    """The rule of a known stop reason; None for one this table does not know yet."""
    return STOP_REASON_RULES.get(stop_reason)
