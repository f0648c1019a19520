"""Outcomes: rubric-graded work (`user.define_outcome`), as the SDK shapes them, plus Reverie's
grader options and the grader's structured verdict.

The verdict is the trust boundary of the loop: a grader answer becomes a verdict only if it
parses, names every rubric criterion exactly once, and its overall result agrees with its
criteria (satisfied only if every criterion is met; needs_revision only if one is not).
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from reverie.models.common import StrictModel

# The SDK's bound on a text rubric.
MAX_RUBRIC_CHARS = 262_144
# Reverie's bound on an outcome's description (the hosted API states none).
MAX_DESCRIPTION_CHARS = 262_144
DEFAULT_MAX_ITERATIONS = 3
MAX_ITERATIONS = 20
MAX_SAMPLES = 5
MAX_GRADER_MODEL = 256

# The evaluation states of `outcome_evaluations[].result`: live ones, then terminal ones.
LIVE_RESULTS = ("pending", "running", "evaluating")
TERMINAL_RESULTS = ("satisfied", "max_iterations_reached", "failed", "interrupted")
# What a `span.outcome_evaluation_end` may say.
END_RESULTS = ("satisfied", "needs_revision", "max_iterations_reached", "failed", "interrupted")
OutcomeState = Literal[
    "pending",
    "running",
    "evaluating",
    "satisfied",
    "max_iterations_reached",
    "failed",
    "interrupted",
]
EndResult = Literal[
    "satisfied", "needs_revision", "max_iterations_reached", "failed", "interrupted"
]


def not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


class TextRubric(StrictModel):
    """`BetaManagedAgentsTextRubric`: the rubric inline, freeform text or markdown."""

    type: Literal["text"] = "text"
    content: str = Field(min_length=1, max_length=MAX_RUBRIC_CHARS)

    _blank = field_validator("content")(not_blank)


class FileRubric(StrictModel):
    """`BetaManagedAgentsFileRubric`: accepted in the SDK's shape, refused by the client until
    Reverie has a Files API."""

    type: Literal["file"] = "file"
    file_id: str = Field(min_length=1, max_length=256)


Rubric = Annotated[TextRubric | FileRubric, Field(discriminator="type")]


class GraderOptions(StrictModel):
    """Reverie's own options under `grader` (the defaults are the hosted behaviour).

    - `model`: the grader's model (default: the agent's).
    - `samples`: independent gradings of each attempt (1-5), decided by majority vote.
    - `inspect`: the grader may examine the deliverables with read-only tools (read, glob,
      grep, within the session's outputs folder) before its verdict.
    """

    model: str | None = Field(default=None, min_length=1, max_length=MAX_GRADER_MODEL)
    samples: int = Field(default=1, ge=1, le=MAX_SAMPLES)
    inspect: bool = False


class OutcomeEvaluation(BaseModel):
    """`BetaManagedAgentsOutcomeEvaluationResource`: one outcome's evaluation state on the
    session object."""

    type: Literal["outcome_evaluation"] = "outcome_evaluation"
    outcome_id: str
    description: str
    iteration: int
    result: str
    explanation: str | None = None
    completed_at: datetime | None = None


# ---- the grader's verdict ------------------------------------------------------------------

# A criterion is a top-level list item of the rubric: `- x`, `* x`, `• x`, `1. x`, `1) x`,
# `[ ] x`, `- [ ] x`.
_ITEM = re.compile(
    r"^(?P<indent>[ \t]*)(?:[-*•+]\s+(?:\[[ xX]?\]\s+)?|\d{1,3}[.)]\s+|\[[ xX]?\]\s+)(?P<text>\S.*)$"
)


class Criterion(BaseModel):
    id: str
    text: str


def rubric_criteria(rubric: str) -> list[Criterion]:
    """The rubric's criteria: its list items at the outermost indentation used by any item
    (nested items belong to their parent), numbered C1, C2, ... Empty when the rubric has no
    list: the grader then names the criteria it reads in the prose."""
    items: list[tuple[int, str]] = []
    for line in rubric.splitlines():
        found = _ITEM.match(line)
        if found:
            indent = len(found.group("indent").expandtabs(4))
            items.append((indent, found.group("text").strip()))
    if not items:
        return []
    top = min(indent for indent, _ in items)
    texts = [text for indent, text in items if indent == top]
    return [Criterion(id=f"C{n}", text=text) for n, text in enumerate(texts, start=1)]


MAX_VERDICT_TEXT = 4_000
# The feedback an evaluation records (and the agent reads), at most.
MAX_FEEDBACK = 20_000


class CriterionResult(BaseModel):
    """One criterion's result: met with the evidence for it, or not met with the gap."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    met: bool
    evidence: str = Field(default="", max_length=MAX_VERDICT_TEXT)
    gap: str = Field(default="", max_length=MAX_VERDICT_TEXT)

    @model_validator(mode="after")
    def _reasoned(self) -> CriterionResult:
        if self.met and not self.evidence.strip():
            raise ValueError(f"criterion {self.id} is met but gives no evidence")
        if not self.met and not self.gap.strip():
            raise ValueError(f"criterion {self.id} is not met but names no gap")
        return self


class Verdict(BaseModel):
    """The grader's answer (the `submit_verdict` tool's input).

    Validate with `context={"criteria": ["C1", ...]}` to require exactly one entry per rubric
    criterion; without it (a rubric without a list) at least one criterion is required."""

    model_config = ConfigDict(extra="forbid")

    criteria: list[CriterionResult] = Field(min_length=1, max_length=200)
    result: Literal["satisfied", "needs_revision", "failed"]
    explanation: str = Field(min_length=1, max_length=MAX_VERDICT_TEXT)

    @model_validator(mode="after")
    def _agrees(self, info: ValidationInfo) -> Verdict:
        ids = [c.id for c in self.criteria]
        twice = sorted(i for i, n in Counter(ids).items() if n > 1)
        if twice:
            raise ValueError(f"criteria {twice} appear more than once")
        expected = (info.context or {}).get("criteria")
        if expected:
            missing = [i for i in expected if i not in ids]
            unknown = [i for i in ids if i not in expected]
            if missing or unknown:
                raise ValueError(
                    f"the verdict must have one entry per rubric criterion {expected}: "
                    + "; ".join(
                        part
                        for part in (
                            f"missing {missing}" if missing else "",
                            f"unknown {unknown}" if unknown else "",
                        )
                        if part
                    )
                )
        unmet = [c.id for c in self.criteria if not c.met]
        if self.result == "satisfied" and unmet:
            raise ValueError(
                f"result 'satisfied' contradicts the criteria: {unmet} are not met (satisfied "
                "only if every criterion is met)"
            )
        if self.result == "needs_revision" and not unmet:
            raise ValueError(
                "result 'needs_revision' contradicts the criteria: every criterion is met "
                "(name the unmet criterion and its gap, or answer 'satisfied')"
            )
        if not self.explanation.strip():
            raise ValueError("explanation must not be blank")
        return self

    def feedback(self) -> str:
        """The explanation with each criterion's result: what the agent reads on revision, and
        what the session shows as the evaluation's explanation."""
        lines = [self.explanation.strip()]
        unmet = [c for c in self.criteria if not c.met]
        met = [c for c in self.criteria if c.met]
        if unmet:
            lines += ["", "Criteria not met:"]
            lines += [f"- {c.id}: {c.gap.strip()}" for c in unmet]
        if met:
            lines += ["", "Criteria met:"]
            lines += [f"- {c.id}: {c.evidence.strip()}" for c in met]
        text = "\n".join(lines)
        if len(text) > MAX_FEEDBACK:
            text = text[:MAX_FEEDBACK] + f"\n[feedback truncated at {MAX_FEEDBACK:,} characters]"
        return text


def verdict_schema() -> dict[str, Any]:
    """The `submit_verdict` tool's input schema (a plain JSON schema, no `$ref`s)."""
    criterion = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "The criterion's id (C1, C2, ...)."},
            "met": {"type": "boolean"},
            "evidence": {
                "type": "string",
                "description": "When met: what in the deliverables shows it (quote or point).",
            },
            "gap": {
                "type": "string",
                "description": "When not met: what is missing or wrong, specific and actionable.",
            },
        },
        "required": ["id", "met"],
        "additionalProperties": False,
    }
    return {
        "type": "object",
        "properties": {
            "criteria": {
                "type": "array",
                "items": criterion,
                "description": "One entry per rubric criterion, in the rubric's order.",
            },
            "result": {
                "type": "string",
                "enum": ["satisfied", "needs_revision", "failed"],
                "description": (
                    "satisfied: every criterion is met. needs_revision: at least one is not. "
                    "failed: the rubric does not fit the task (it contradicts the description "
                    "or cannot be applied to any deliverable)."
                ),
            },
            "explanation": {
                "type": "string",
                "description": "A short summary of the verdict, written to the agent.",
            },
        },
        "required": ["criteria", "result", "explanation"],
        "additionalProperties": False,
    }


def majority(results: list[str]) -> str:
    """The majority result of several samples' verdicts. A tie never ends in `satisfied`
    (the conservative side wins: needs_revision, then failed)."""
    counts = Counter(results)
    best = max(counts.values())
    for result in ("needs_revision", "failed", "satisfied"):
        if counts.get(result) == best:
            return result
    raise ValueError("no results to vote on")
