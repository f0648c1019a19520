"""Outcomes through the HTTP API, driven by the official SDK: `user.define_outcome` through the
events route (its echo with `outcome_id`), the span events in lists and streams, and
`outcome_evaluations` on the session, each fitting the SDK's own types."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import pytest
from anthropic.types.beta import BetaManagedAgentsSession
from anthropic.types.beta.sessions import (
    BetaManagedAgentsSendSessionEvents,
    BetaManagedAgentsSessionEvent,
)

from tests.fake_model import FakeModelServer, Reply
from tests.sdk_conformance import assert_fits
from tests.test_api_sdk import raw_json, stream_until

RUBRIC = "- says hello\n- names the user"


def verdict(result: str, met: list[bool]) -> dict[str, Any]:
    return {
        "result": result,
        "explanation": f"grader: {result}",
        "criteria": [
            {"id": f"C{n}", "met": ok, **({"evidence": "yes"} if ok else {"gap": "name them"})}
            for n, ok in enumerate(met, start=1)
        ],
    }


async def test_an_outcome_through_the_sdk(
    sdk: anthropic.AsyncAnthropic, fake_model: FakeModelServer, model_name: str
) -> None:
    grader = f"{model_name}-grader"
    fake_model.script(model_name, [Reply.text("Hello."), Reply.text("Hello, Ada.")])
    fake_model.script(
        grader,
        [
            Reply.tool_use("submit_verdict", verdict("needs_revision", [True, False]), delay=1.5),
            Reply.tool_use("submit_verdict", verdict("satisfied", [True, True])),
        ],
    )
    agent = await sdk.beta.agents.create(name="greeter", model=model_name)
    session = await sdk.beta.sessions.create(agent=agent.id, environment_id="env_default")

    seen: list[Any] = []
    streaming = asyncio.create_task(stream_until(sdk, session.id, "session.status_idle", seen))
    await asyncio.sleep(0.3)
    event: Any = {
        "type": "user.define_outcome",
        "description": "Greet Ada",
        "rubric": {"type": "text", "content": RUBRIC},
        "max_iterations": 4,
        "grader": {"model": grader},
    }
    sent = await raw_json(
        sdk.beta.sessions.events.with_raw_response.send(session.id, events=[event])
    )
    assert_fits(sent, BetaManagedAgentsSendSessionEvents)
    echo = sent["data"][0]
    assert echo["outcome_id"].startswith("outc_") and echo["max_iterations"] == 4
    assert echo["rubric"] == {"type": "text", "content": RUBRIC}

    # While it is active, another outcome is refused; a file rubric is refused always.
    with pytest.raises(anthropic.BadRequestError, match="still active"):
        await sdk.beta.sessions.events.send(session.id, events=[event])
    with pytest.raises(anthropic.BadRequestError, match="file rubrics"):
        await sdk.beta.sessions.events.send(
            session.id,
            events=[{**event, "rubric": {"type": "file", "file_id": "file_abc"}}],
        )
    await asyncio.wait_for(streaming, 60)

    # Streamed, parsed by the SDK's own event types.
    ends = [e for e in seen if e.type == "span.outcome_evaluation_end"]
    assert [(e.result, e.iteration, e.outcome_id) for e in ends] == [
        ("needs_revision", 0, echo["outcome_id"]),
        ("satisfied", 1, echo["outcome_id"]),
    ]
    starts = [e for e in seen if e.type == "span.outcome_evaluation_start"]
    assert [e.id for e in starts] == [e.outcome_evaluation_start_id for e in ends]
    assert ends[1].usage.output_tokens > 0
    assert any(e.type == "span.outcome_evaluation_ongoing" for e in seen)

    # Listed: every event fits.
    page = await raw_json(sdk.beta.sessions.events.with_raw_response.list(session.id, limit=100))
    for item in page["data"]:
        assert_fits(item, BetaManagedAgentsSessionEvent)
    listed = [e.type async for e in sdk.beta.sessions.events.list(session.id)]
    assert listed.count("span.outcome_evaluation_end") == 2

    # The session shows the outcome.
    raw = await raw_json(sdk.beta.sessions.with_raw_response.retrieve(session.id))
    assert_fits(raw, BetaManagedAgentsSession)
    retrieved = await sdk.beta.sessions.retrieve(session.id)
    (evaluation,) = retrieved.outcome_evaluations
    assert evaluation.type == "outcome_evaluation"
    assert (evaluation.outcome_id, evaluation.result, evaluation.iteration) == (
        echo["outcome_id"],
        "satisfied",
        1,
    )
    assert evaluation.description == "Greet Ada" and evaluation.completed_at is not None
    listed_sessions = [s async for s in sdk.beta.sessions.list(agent_id=agent.id)]
    assert listed_sessions[0].outcome_evaluations[0].result == "satisfied"


async def test_an_outcome_in_initial_events_through_the_sdk(
    sdk: anthropic.AsyncAnthropic, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(
        model_name,
        [
            Reply.text("Hello, Ada."),
            Reply.tool_use("submit_verdict", verdict("satisfied", [True, True])),
        ],
    )
    agent = await sdk.beta.agents.create(name="greeter", model=model_name)
    created = await raw_json(
        sdk.beta.sessions.with_raw_response.create(
            agent=agent.id,
            environment_id="env_default",
            initial_events=[
                {
                    "type": "user.define_outcome",
                    "description": "Greet Ada",
                    "rubric": {"type": "text", "content": RUBRIC},
                }
            ],
        )
    )
    assert_fits(created, BetaManagedAgentsSession)
    for _ in range(200):
        session = await sdk.beta.sessions.retrieve(created["id"])
        if session.outcome_evaluations and session.outcome_evaluations[0].result == "satisfied":
            break
        await asyncio.sleep(0.1)
    assert session.outcome_evaluations[0].result == "satisfied"
    assert session.outcome_evaluations[0].explanation
