"""What `create_session` answers: the session as it was written, built without reading it
again, so it must match what a read of the new row shows."""

from __future__ import annotations

from reverie.starter.client import ReverieClient
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import new_agent


async def test_answer_of_a_session_without_events_is_what_get_reads(
    reverie: ReverieClient, model_name: str
) -> None:
    agent_id = await new_agent(reverie, model_name)
    created = await reverie.create_session(
        {"agent": agent_id, "title": "t", "metadata": {"k": "v"}}
    )
    read = await reverie.get_session(created.id)
    assert created.status == "idle" and created.stats.events == 0
    assert created.model_dump(exclude={"stats", "usage"}) == read.model_dump(
        exclude={"stats", "usage"}
    )
    assert created.stats.turns == read.stats.turns == 0


async def test_answer_of_a_session_started_running_counts_its_events(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(model_name, [Reply.text("hi")])
    agent_id = await new_agent(reverie, model_name)
    created = await reverie.create_session(
        {"agent": agent_id, "initial_events": [{"type": "user.message", "content": "ping"}]}
    )
    # The message and the running status, written with the row.
    assert created.status == "running" and created.stats.events == 2
    assert created.stats.turns == 0 and created.outcome_evaluations == []
    done = await reverie.wait_until_settled(created.id)
    assert (done.created_at, done.agent, done.resources) == (
        created.created_at,
        created.agent,
        created.resources,
    )


async def test_answer_shows_the_outcome_its_initial_events_define(
    reverie: ReverieClient, model_name: str
) -> None:
    agent_id = await new_agent(reverie, model_name)
    created = await reverie.create_session(
        {
            "agent": agent_id,
            "initial_events": [
                {
                    "type": "user.define_outcome",
                    "description": "Write a short report",
                    "rubric": {"type": "text", "content": "It is short."},
                }
            ],
        }
    )
    (evaluation,) = created.outcome_evaluations
    assert evaluation.description == "Write a short report"
    assert created.stats.events == 1
