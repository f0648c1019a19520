"""A worker killed while it grades: the user sees only a delay. No verdict is lost, none is
recorded twice, and a verdict committed just before the crash is not asked for again."""

from __future__ import annotations

from reverie.activities.grader import TEST_HOOK_FREEZE_AFTER_VERDICT
from reverie.models.workflow_io import SessionOptions
from reverie.starter.client import ReverieClient
from reverie.store import outcomes as outcome_store
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import (
    all_events,
    assert_each_once,
    assert_spans_closed,
    kill,
    new_agent,
    types_of,
    wait_for_event,
    worker_process,
)

RUBRIC = "- the answer is polite\n- the answer is short"
VERDICT = {
    "result": "satisfied",
    "explanation": "fine",
    "criteria": [
        {"id": "C1", "met": True, "evidence": "polite"},
        {"id": "C2", "met": True, "evidence": "short"},
    ],
}


async def _session(client: ReverieClient, model: str, grader: str) -> str:
    agent_id = await new_agent(client, model)
    session = await client.create_session(
        {
            "agent": agent_id,
            "initial_events": [
                {
                    "type": "user.define_outcome",
                    "description": "Greet the user",
                    "rubric": {"type": "text", "content": RUBRIC},
                    "grader": {"model": grader},
                }
            ],
        },
        options=SessionOptions(heartbeat_timeout_seconds=2),
    )
    return session.id


async def _check_one_verdict(client: ReverieClient, session_id: str) -> None:
    events = await all_events(client, session_id)
    assert_each_once(events)
    assert_spans_closed(events)
    kinds = types_of(events)
    assert kinds.count("span.outcome_evaluation_start") == 1
    assert kinds.count("span.outcome_evaluation_end") == 1
    end = next(e for e in events if e.type == "span.outcome_evaluation_end")
    assert end.payload["result"] == "satisfied"
    assert events[-1].type == "session.status_idle"
    assert "session.error" not in kinds
    done = await client.get_session(session_id)
    assert [(o.result, o.iteration) for o in done.outcome_evaluations] == [("satisfied", 0)]
    rows = await outcome_store.evaluations(client.pool, done.outcome_evaluations[0].outcome_id)
    assert [r.result for r in rows] == ["satisfied"]


async def test_worker_killed_while_grading(
    own_queue: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    grader = f"{model_name}-grader"
    fake_model.script(model_name, [Reply.text("Hello!")])
    fake_model.script(
        grader,
        [
            Reply.tool_use("submit_verdict", VERDICT, delay=30),
            Reply.tool_use("submit_verdict", VERDICT),
        ],
    )
    async with worker_process(own_queue.settings) as first:
        session_id = await _session(own_queue, model_name, grader)
        await fake_model.wait_for_requests(grader, 1, timeout=60)
        await wait_for_event(own_queue, session_id, "span.outcome_evaluation_ongoing")
        await kill(first)
    async with worker_process(own_queue.settings):
        await own_queue.wait_until_settled(session_id, timeout=90)
    await _check_one_verdict(own_queue, session_id)
    assert len(fake_model.requests(grader)) == 2  # asked again after the crash, recorded once
    assert len(fake_model.requests(model_name)) == 1


async def test_worker_killed_after_the_verdict_committed(
    own_queue: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    grader = f"{model_name}-grader"
    fake_model.script(model_name, [Reply.text("Hello!")])
    fake_model.script(grader, [Reply.tool_use("submit_verdict", VERDICT)])
    frozen = {TEST_HOOK_FREEZE_AFTER_VERDICT: "1"}
    async with worker_process(own_queue.settings, env=frozen) as first:
        session_id = await _session(own_queue, model_name, grader)
        await wait_for_event(own_queue, session_id, "span.outcome_evaluation_end", timeout=60)
        await kill(first)
    async with worker_process(own_queue.settings):
        await own_queue.wait_until_settled(session_id, timeout=90)
    await _check_one_verdict(own_queue, session_id)
    # The verdict committed before the crash is the verdict: the grader is not asked again.
    assert len(fake_model.requests(grader)) == 1
