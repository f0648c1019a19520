"""Outcomes: their evaluation state (the session's `outcome_evaluations[]`), each evaluation's
verdict, and each grader sample's verdict.

Every write is keyed by an id the client or the workflow made, so a retried activity writes
nothing twice; an evaluation's verdict is decided by whoever inserts it first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from reverie.models.common import scrub_json
from reverie.models.errors import NotFoundError
from reverie.models.outcomes import TERMINAL_RESULTS, OutcomeEvaluation
from reverie.models.sessions import Usage
from reverie.store.pool import Connection, Pool


@dataclass(frozen=True)
class Outcome:
    id: str
    session_id: str
    event_id: str
    description: str
    rubric: dict[str, Any]
    max_iterations: int
    grader: dict[str, Any]
    result: str
    iteration: int
    explanation: str | None


async def define(conn: Connection, session_id: str, event_id: str, payload: dict[str, Any]) -> None:
    """The outcome of a `user.define_outcome` event, in the transaction that records it."""
    await conn.execute(
        """INSERT INTO outcomes (id, session_id, event_id, description, rubric, max_iterations,
                                 grader)
           VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING""",
        payload["outcome_id"],
        session_id,
        event_id,
        payload["description"],
        payload["rubric"],
        payload.get("max_iterations") or 3,
        payload.get("grader") or {},
    )


def _outcome(row: Any) -> Outcome:
    return Outcome(
        id=row["id"],
        session_id=row["session_id"],
        event_id=row["event_id"],
        description=row["description"],
        rubric=row["rubric"],
        max_iterations=row["max_iterations"],
        grader=row["grader"],
        result=row["result"],
        iteration=row["iteration"],
        explanation=row["explanation"],
    )


async def get(conn: Pool | Connection, outcome_id: str) -> Outcome:
    row = await conn.fetchrow("SELECT * FROM outcomes WHERE id = $1", outcome_id)
    if row is None:
        raise NotFoundError(f"no outcome with id {outcome_id!r}")
    return _outcome(row)


def _evaluation(row: Any) -> OutcomeEvaluation:
    return OutcomeEvaluation(
        outcome_id=row["id"],
        description=row["description"],
        iteration=row["iteration"],
        result=row["result"],
        explanation=row["explanation"],
        completed_at=row["completed_at"],
    )


async def for_sessions(
    conn: Pool | Connection, session_ids: Sequence[str]
) -> dict[str, list[OutcomeEvaluation]]:
    """Each session's outcomes, oldest first (the session object's `outcome_evaluations`)."""
    rows = await conn.fetch(
        """SELECT id, session_id, description, iteration, result, explanation, completed_at
           FROM outcomes WHERE session_id = ANY($1::text[]) ORDER BY created_at, id""",
        list(session_ids),
    )
    found: dict[str, list[OutcomeEvaluation]] = {session_id: [] for session_id in session_ids}
    for row in rows:
        found[row["session_id"]].append(_evaluation(row))
    return found


async def set_state(
    conn: Connection,
    outcome_id: str,
    result: str,
    iteration: int,
    explanation: str | None = None,
) -> None:
    """Move an outcome on. A terminal result is final: nothing moves it afterwards (a late
    retry of an earlier step must not revive it); `explanation` None keeps the last one."""
    explanation, _ = scrub_json(explanation)
    await conn.execute(
        """UPDATE outcomes SET
             result = $2,
             iteration = $3,
             explanation = coalesce($4, explanation),
             completed_at = CASE WHEN $2 = ANY($5::text[]) THEN coalesce(completed_at, now())
                                 ELSE completed_at END,
             updated_at = now()
           WHERE id = $1 AND NOT (result = ANY($5::text[]))""",
        outcome_id,
        result,
        iteration,
        explanation,
        list(TERMINAL_RESULTS),
    )


@dataclass(frozen=True)
class Evaluation:
    id: str
    result: str
    explanation: str
    verdict: dict[str, Any]
    usage: dict[str, Any]


async def evaluation(conn: Pool | Connection, evaluation_id: str) -> Evaluation | None:
    row = await conn.fetchrow("SELECT * FROM outcome_evaluations WHERE id = $1", evaluation_id)
    if row is None:
        return None
    return Evaluation(row["id"], row["result"], row["explanation"], row["verdict"], row["usage"])


async def evaluations(conn: Pool | Connection, outcome_id: str) -> list[Evaluation]:
    """An outcome's recorded verdicts, in order (with each sample's verdict)."""
    rows = await conn.fetch(
        "SELECT * FROM outcome_evaluations WHERE outcome_id = $1 ORDER BY iteration, created_at",
        outcome_id,
    )
    return [
        Evaluation(row["id"], row["result"], row["explanation"], row["verdict"], row["usage"])
        for row in rows
    ]


async def decide(
    conn: Connection,
    evaluation_id: str,
    *,
    outcome_id: str,
    session_id: str,
    iteration: int,
    result: str,
    explanation: str,
    verdict: dict[str, Any],
    usage: Usage,
) -> bool:
    """Record an evaluation's verdict; False when one was recorded first (keep that one)."""
    explanation, _ = scrub_json(explanation)
    verdict, _ = scrub_json(verdict)
    inserted = await conn.fetchval(
        """INSERT INTO outcome_evaluations (id, outcome_id, session_id, iteration, result,
                                            explanation, verdict, usage)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (id) DO NOTHING RETURNING true""",
        evaluation_id,
        outcome_id,
        session_id,
        iteration,
        result,
        explanation,
        verdict,
        usage.model_dump(exclude={"active_seconds"}),
    )
    return bool(inserted)


async def samples(conn: Pool | Connection, evaluation_id: str) -> dict[int, tuple[dict, Usage]]:
    rows = await conn.fetch(
        "SELECT sample, verdict, usage FROM outcome_samples WHERE evaluation_id = $1",
        evaluation_id,
    )
    return {row["sample"]: (row["verdict"], Usage.model_validate(row["usage"])) for row in rows}


async def add_sample(
    conn: Pool | Connection,
    evaluation_id: str,
    sample: int,
    session_id: str,
    verdict: dict[str, Any],
    usage: Usage,
) -> None:
    verdict, _ = scrub_json(verdict)
    await conn.execute(
        """INSERT INTO outcome_samples (evaluation_id, sample, session_id, verdict, usage)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING""",
        evaluation_id,
        sample,
        session_id,
        verdict,
        usage.model_dump(exclude={"active_seconds"}),
    )


async def add_grader_usage(conn: Connection, session_id: str, usage: Usage, requests: int) -> None:
    """The grader's tokens count in the session's usage, as every model request does."""
    await conn.execute(
        """UPDATE sessions SET
             input_tokens = input_tokens + $2,
             output_tokens = output_tokens + $3,
             cache_creation_input_tokens = cache_creation_input_tokens + $4,
             cache_read_input_tokens = cache_read_input_tokens + $5,
             model_requests = model_requests + $6,
             updated_at = now()
           WHERE id = $1""",
        session_id,
        usage.input_tokens,
        usage.output_tokens,
        usage.cache_creation_input_tokens,
        usage.cache_read_input_tokens,
        requests,
    )
