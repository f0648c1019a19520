"""The outcome state machine (workflows/outcome.py) hosted by a small workflow of the test's own,
with a scripted agent pass: every transition, driven by the real grader activity, PostgreSQL and
the fake model. It shows the loop needs nothing of its host but the narrow interface (a pass
from given inputs, the inputs that arrived meanwhile, an interrupt)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import anthropic
from pydantic import BaseModel
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from reverie.activities.grader import GraderActivities
from reverie.models.common import new_id
from reverie.models.workflow_io import (
    CarriedState,
    InputRef,
    SessionOptions,
    SessionWorkflowInput,
)
from reverie.settings import Settings
from reverie.starter.client import ReverieClient
from reverie.store import events as event_store
from reverie.store import outcomes as outcome_store
from reverie.workflows.agent_loop import TurnEnd, TurnOutcome
from reverie.workflows.outcome import OutcomeLoop
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import all_events, assert_each_once, new_agent, types_of


class HostInput(BaseModel):
    session: SessionWorkflowInput
    event_id: str
    outcome_id: str
    max_iterations: int
    # How each agent pass ends (END_TURN when the list runs out).
    ends: list[str] = []


class HostResult(BaseModel):
    passes: list[list[str]]
    end: str
    error: dict | None = None
    last_outcome: str | None = None


@workflow.defn
class OutcomeHost:
    def __init__(self) -> None:
        self._loop: OutcomeLoop | None = None

    @workflow.run
    async def run(self, params: HostInput) -> HostResult:
        state = CarriedState()
        passes: list[list[str]] = []
        ends = list(params.ends)

        async def agent_pass(inputs: list[str]) -> TurnOutcome:
            passes.append(inputs)
            return TurnOutcome(TurnEnd(ends.pop(0) if ends else "end_turn"))

        loop = OutcomeLoop(params.session, state, agent_pass, list)
        self._loop = loop
        ref = InputRef(
            id=params.event_id,
            type="user.define_outcome",
            outcome_id=params.outcome_id,
            max_iterations=params.max_iterations,
        )
        loop.validate([ref])
        loop.define(ref)
        state.queued.append(ref)

        async def first_pass() -> TurnOutcome:
            state.queued.clear()  # the turn takes the outcome up
            return await agent_pass([params.event_id])

        turn = await loop.run(first_pass)
        return HostResult(
            passes=passes, end=turn.end.value, error=turn.error, last_outcome=state.last_outcome
        )

    @workflow.signal
    def interrupt(self) -> None:
        assert self._loop is not None
        self._loop.interrupt()


async def _host(
    reverie: ReverieClient,
    temporal: Client,
    settings: Settings,
    fake_model: FakeModelServer,
    model: str,
    *,
    max_iterations: int = 3,
    ends: list[str] | None = None,
    rubric: str = "- report.md exists\n- it names three risks",
    grader: dict | None = None,
    during=None,
    options: SessionOptions | None = None,
) -> tuple[HostResult, str, str]:
    """Run one outcome in the host; (its result, the session id, the outcome id)."""
    agent_id = await new_agent(reverie, model)
    session = await reverie.create_session({"agent": agent_id})
    agent = await reverie.get_agent(agent_id)
    outcome_id, event_id = new_id("outc"), new_id("sevt")
    payload = {
        "description": "Write a risk report",
        "rubric": {"type": "text", "content": rubric},
        "max_iterations": max_iterations,
        "outcome_id": outcome_id,
        **({"grader": grader} if grader else {}),
    }
    now = datetime.now(UTC)
    await event_store.append(
        reverie.pool,
        session.id,
        [
            (event_id, "user.define_outcome", payload, now),
            (
                new_id("sevt"),
                "agent.message",
                {"content": [{"type": "text", "text": "Done."}]},
                now,
            ),
        ],
    )
    queue = f"outcome-host-{uuid.uuid4().hex[:6]}"
    client = anthropic.AsyncAnthropic(
        api_key="test", base_url=settings.anthropic_base_url, max_retries=0
    )
    grading = GraderActivities(reverie.pool, settings, client)
    params = HostInput(
        session=SessionWorkflowInput(
            session_id=session.id,
            agent_id=agent.id,
            agent_version=agent.version,
            options=options or SessionOptions(model_max_attempts=3),
        ),
        event_id=event_id,
        outcome_id=outcome_id,
        max_iterations=max_iterations,
        ends=ends or [],
    )
    async with Worker(
        temporal,
        task_queue=queue,
        workflows=[OutcomeHost],
        activities=[
            grading.grade_outcome,
            grading.record_outcome,
            grading.settle_outcome_evaluation,
        ],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        handle = await temporal.start_workflow(
            OutcomeHost.run, params, id=f"host-{session.id}", task_queue=queue
        )
        if during is not None:
            await during(handle)
        result = await handle.result()
    return HostResult.model_validate(result), session.id, outcome_id


def _verdict(result: str, met: list[bool]) -> dict:
    return {
        "result": result,
        "explanation": f"verdict {result}",
        "criteria": [
            {"id": f"C{n}", "met": ok, **({"evidence": "ok"} if ok else {"gap": f"gap {n}"})}
            for n, ok in enumerate(met, start=1)
        ],
    }


def _says(result: str, met: list[bool]) -> Reply:
    return Reply.tool_use("submit_verdict", _verdict(result, met))


async def _spans(reverie: ReverieClient, session_id: str) -> list:
    events = await all_events(reverie, session_id)
    assert_each_once(events)
    return [e for e in events if e.type.startswith("span.outcome_evaluation")]


async def test_satisfied_at_once(
    reverie: ReverieClient,
    temporal_client: Client,
    settings: Settings,
    fake_model: FakeModelServer,
    model_name: str,
) -> None:
    fake_model.script(model_name, [_says("satisfied", [True, True])])
    result, session_id, outcome_id = await _host(
        reverie, temporal_client, settings, fake_model, model_name
    )
    assert result.end == "end_turn" and len(result.passes) == 1
    assert result.last_outcome == f"{outcome_id}: satisfied"
    spans = await _spans(reverie, session_id)
    kinds = [e.type for e in spans]
    assert (
        kinds[0] == "span.outcome_evaluation_start" and kinds[-1] == "span.outcome_evaluation_end"
    )
    assert "span.outcome_evaluation_ongoing" in kinds
    end = spans[-1].payload
    assert end["result"] == "satisfied" and end["outcome_evaluation_start_id"] == spans[0].id
    assert end["iteration"] == 0 and end["usage"]["output_tokens"] > 0
    outcome = (await reverie.get_session(session_id)).outcome_evaluations[0]
    assert (outcome.result, outcome.iteration) == ("satisfied", 0)
    assert outcome.completed_at is not None and "verdict satisfied" in (outcome.explanation or "")


async def test_needs_revision_hands_the_feedback_to_the_next_pass(
    reverie: ReverieClient,
    temporal_client: Client,
    settings: Settings,
    fake_model: FakeModelServer,
    model_name: str,
) -> None:
    fake_model.script(
        model_name, [_says("needs_revision", [True, False]), _says("satisfied", [True, True])]
    )
    result, session_id, _ = await _host(reverie, temporal_client, settings, fake_model, model_name)
    ends = [e for e in await _spans(reverie, session_id) if e.type.endswith("_end")]
    assert [e.payload["result"] for e in ends] == ["needs_revision", "satisfied"]
    assert [e.payload["iteration"] for e in ends] == [0, 1]
    # The second pass's input is the first evaluation's end event: the grader's feedback.
    assert result.passes[1] == [ends[0].id]
    assert "C2: gap 2" in ends[0].payload["explanation"]
    outcome = (await reverie.get_session(session_id)).outcome_evaluations[0]
    assert (outcome.result, outcome.iteration) == ("satisfied", 1)


async def test_max_iterations_reached_allows_one_final_pass(
    reverie: ReverieClient,
    temporal_client: Client,
    settings: Settings,
    fake_model: FakeModelServer,
    model_name: str,
) -> None:
    fake_model.script(model_name, [_says("needs_revision", [False, False])] * 2)
    result, session_id, outcome_id = await _host(
        reverie, temporal_client, settings, fake_model, model_name, max_iterations=2
    )
    ends = [e for e in await _spans(reverie, session_id) if e.type.endswith("_end")]
    assert [e.payload["result"] for e in ends] == ["needs_revision", "max_iterations_reached"]
    assert len(result.passes) == 3 and result.passes[2] == [ends[1].id]
    assert len(fake_model.requests(model_name)) == 2  # the final pass is not graded
    assert result.last_outcome == f"{outcome_id}: max_iterations_reached"
    outcome = (await reverie.get_session(session_id)).outcome_evaluations[0]
    assert outcome.result == "max_iterations_reached" and outcome.completed_at is not None


async def test_failed_rubric_ends_the_outcome(
    reverie: ReverieClient,
    temporal_client: Client,
    settings: Settings,
    fake_model: FakeModelServer,
    model_name: str,
) -> None:
    fake_model.script(model_name, [_says("failed", [False, False])])
    result, session_id, _ = await _host(reverie, temporal_client, settings, fake_model, model_name)
    assert result.end == "end_turn" and len(result.passes) == 1
    ends = [e for e in await _spans(reverie, session_id) if e.type.endswith("_end")]
    assert [e.payload["result"] for e in ends] == ["failed"]
    assert (await reverie.get_session(session_id)).outcome_evaluations[0].result == "failed"


async def test_a_grader_that_never_gives_a_valid_verdict(
    reverie: ReverieClient,
    temporal_client: Client,
    settings: Settings,
    fake_model: FakeModelServer,
    model_name: str,
) -> None:
    fake_model.script(
        model_name,
        [
            Reply.text("looks good to me"),
            Reply.tool_use("submit_verdict", {"result": "satisfied"}),
            _says("satisfied", [True, False]),
        ],
    )
    result, session_id, _ = await _host(reverie, temporal_client, settings, fake_model, model_name)
    assert result.end == "retries_exhausted"
    assert result.error is not None and result.error["retry_status"] == {"type": "exhausted"}
    assert "no valid verdict" in result.error["message"]
    ends = [e for e in await _spans(reverie, session_id) if e.type.endswith("_end")]
    assert [e.payload["result"] for e in ends] == ["failed"]
    assert len(fake_model.requests(model_name)) == 3


async def test_interrupted_while_grading(
    reverie: ReverieClient,
    temporal_client: Client,
    settings: Settings,
    fake_model: FakeModelServer,
    model_name: str,
) -> None:
    fake_model.script(model_name, [Reply.tool_use("submit_verdict", {}, delay=30)])

    async def interrupt(handle) -> None:
        await fake_model.wait_for_requests(model_name, 1, timeout=30)
        await handle.signal(OutcomeHost.interrupt)

    result, session_id, _ = await _host(
        reverie, temporal_client, settings, fake_model, model_name, during=interrupt
    )
    assert result.end == "interrupted"
    ends = [e for e in await _spans(reverie, session_id) if e.type.endswith("_end")]
    assert [e.payload["result"] for e in ends] == ["interrupted"]
    assert (await reverie.get_session(session_id)).outcome_evaluations[0].result == "interrupted"


async def test_model_errors_while_grading_are_retried(
    reverie: ReverieClient,
    temporal_client: Client,
    settings: Settings,
    fake_model: FakeModelServer,
    model_name: str,
) -> None:
    fake_model.script(
        model_name,
        [Reply.error(529), Reply.error(429, retry_after=0), _says("satisfied", [True, True])],
    )
    result, session_id, _ = await _host(reverie, temporal_client, settings, fake_model, model_name)
    assert result.end == "end_turn"
    events = await all_events(reverie, session_id)
    errors = [e.payload["error"] for e in events if e.type == "session.error"]
    assert [(e["type"], e["retry_status"]["type"]) for e in errors] == [
        ("model_overloaded_error", "retrying"),
        ("model_rate_limited_error", "retrying"),
    ]
    assert types_of(events)[-1] == "span.outcome_evaluation_end"


async def test_model_errors_beyond_the_budget_fail_the_evaluation(
    reverie: ReverieClient,
    temporal_client: Client,
    settings: Settings,
    fake_model: FakeModelServer,
    model_name: str,
) -> None:
    fake_model.script(model_name, [Reply.error(500, message="boom")] * 2)
    result, session_id, _ = await _host(
        reverie,
        temporal_client,
        settings,
        fake_model,
        model_name,
        options=SessionOptions(model_max_attempts=2),
    )
    assert result.end == "retries_exhausted"
    assert result.error is not None and result.error["type"] == "model_request_failed_error"
    ends = [e for e in await _spans(reverie, session_id) if e.type.endswith("_end")]
    assert [e.payload["result"] for e in ends] == ["failed"]


async def test_majority_of_samples_and_every_sample_kept(
    reverie: ReverieClient,
    temporal_client: Client,
    settings: Settings,
    fake_model: FakeModelServer,
    model_name: str,
) -> None:
    grader_model = f"{model_name}-grader"
    fake_model.script(
        grader_model,
        [
            _says("satisfied", [True, True]),
            _says("needs_revision", [True, False]),
            _says("satisfied", [True, True]),
        ],
    )
    result, _, outcome_id = await _host(
        reverie,
        temporal_client,
        settings,
        fake_model,
        model_name,
        grader={"model": grader_model, "samples": 3},
    )
    assert result.end == "end_turn"
    assert fake_model.requests(model_name) == []  # the grader used its own model
    assert len(fake_model.requests(grader_model)) == 3
    evaluations = await outcome_store.evaluations(reverie.pool, outcome_id)
    assert [e.result for e in evaluations] == ["satisfied"]
    samples = evaluations[0].verdict["samples"]
    assert sorted(s["result"] for s in samples) == ["needs_revision", "satisfied", "satisfied"]
    assert "satisfied 2" in evaluations[0].explanation
