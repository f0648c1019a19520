"""A model step of a run older than the patch `model-retries-in-workflow` (Temporal retried its
model errors, and the session shows `rescheduling` meanwhile): when it succeeds, its commit
records the session running again before its answer; an attempt whose twin committed first
keeps nothing, not even that status."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from temporalio.testing import ActivityEnvironment

from reverie.activities.model import ModelActivities, model_client
from reverie.models.workflow_io import ModelStepInput
from reverie.service.client import ReverieClient
from reverie.store import events
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import new_agent


async def _status(reverie: ReverieClient, session_id: str) -> str:
    return await reverie.pool.fetchval("SELECT status FROM sessions WHERE id = $1", session_id)


async def _rescheduling(reverie: ReverieClient, session_id: str) -> None:
    """As an old run's activity leaves a session after a model error it will retry."""
    await reverie.pool.execute(
        "UPDATE sessions SET status = 'rescheduling', running_since = now() WHERE id = $1",
        session_id,
    )


async def test_an_old_runs_step_records_running_again_before_its_answer_once(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    agent_id = await new_agent(reverie, model_name)
    session = await reverie.create_session({"agent": agent_id})
    message = f"sevt_{uuid.uuid4().hex}"  # the turn's input, as the old run recorded it
    content = {"content": [{"type": "text", "text": "hi"}]}
    await events.append(
        reverie.pool, session.id, [(message, "user.message", content, datetime.now(UTC))]
    )
    await _rescheduling(reverie, session.id)
    fake_model.script(model_name, [Reply.text("the answer"), Reply.text("a twin's answer")])
    client = model_client(reverie.settings)
    activities = ModelActivities(reverie.pool, reverie.settings, client)
    params = ModelStepInput(
        session_id=session.id,
        agent_id=agent_id,
        agent_version=1,
        step_id=f"stp_{uuid.uuid4().hex}",
        input_event_ids=[message],
        max_attempts=3,
    )
    try:
        first = await ActivityEnvironment().run(activities.model_step, params)
        types = [e.type for e in await reverie.list_events(session.id, limit=100)]
        assert types[-4:] == [
            "span.model_request_start",
            "session.status_running",
            "agent.message",
            "span.model_request_end",
        ]
        assert await _status(reverie, session.id) == "running"

        # A twin attempt of the same step (its worker was thought lost) reaches its commit
        # after the first one committed: the first answer stands, and nothing is written.
        await _rescheduling(reverie, session.id)
        twin = await ActivityEnvironment().run(activities.model_step, params)
    finally:
        await client.close()
    assert twin == first
    assert [e.type for e in await reverie.list_events(session.id, limit=100)] == types
    assert await _status(reverie, session.id) == "rescheduling"
