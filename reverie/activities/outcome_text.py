"""What the agent reads of an outcome: the outcome itself (its first input) and the grader's
feedback (the input of each further pass), marked as such so that the agent can tell them
from a user's message. Used by `transcript.user_rows` for `user.define_outcome` and
`span.outcome_evaluation_end` events."""

from __future__ import annotations

from typing import Any

from reverie.activities.tools.models import OUTPUTS_VIRTUAL
from reverie.models.events import Event

OUTCOME_INPUT_TYPES = ("user.define_outcome", "span.outcome_evaluation_end")

DEFINED = """[Outcome {outcome_id} defined by the user]
Work toward the outcome below. Write your deliverables as files under {outputs}/. When you end \
your turn, a separate grader, which sees only the description, the rubric, your final message \
and those files (not your reasoning or tool calls), checks the work against each criterion of \
the rubric; if anything falls short you will get its feedback and take another pass (at most \
{max_iterations} evaluations).

Description:
{description}

Rubric:
{rubric}"""

REVISE = """[Grader feedback for outcome {outcome_id}: evaluation {number}, result \
needs_revision]
{explanation}

Revise your work to address every criterion that is not met, then end your turn: it will be \
graded again."""

FINAL = """[Grader feedback for outcome {outcome_id}: evaluation {number}, result \
max_iterations_reached]
{explanation}

No further evaluation will run. Make one final pass: finish what you can, then tell the user \
plainly what is done and what still falls short of the rubric."""


def outcome_blocks(event: Event) -> list[dict[str, Any]]:
    """The text block an outcome event contributes to the agent's next user turn."""
    data = event.payload
    if event.type == "user.define_outcome":
        rubric = data.get("rubric") or {}
        text = DEFINED.format(
            outcome_id=data.get("outcome_id", ""),
            outputs=OUTPUTS_VIRTUAL,
            max_iterations=data.get("max_iterations") or 3,
            description=data.get("description", ""),
            rubric=rubric.get("content") or f"(rubric file {rubric.get('file_id')})",
        )
        return [{"type": "text", "text": text}]
    if event.type == "span.outcome_evaluation_end":
        result = data.get("result")
        if result not in ("needs_revision", "max_iterations_reached"):
            return []
        template = REVISE if result == "needs_revision" else FINAL
        text = template.format(
            outcome_id=data.get("outcome_id", ""),
            number=int(data.get("iteration", 0)) + 1,
            explanation=data.get("explanation") or "(no explanation)",
        )
        return [{"type": "text", "text": text}]
    return []
