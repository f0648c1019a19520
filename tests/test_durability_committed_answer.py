"""A model answer committed to PostgreSQL just before its worker died is kept, whatever attempt
it was: the turn goes on with it, its tool use gets a result, and the transcript sent to the
model agrees with the event log."""

from __future__ import annotations

from reverie.activities.model import TEST_HOOK_FREEZE_AFTER_COMMIT
from reverie.models.events import Event
from reverie.models.workflow_io import SessionOptions
from reverie.starter.client import ReverieClient
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import (
    all_events,
    assert_each_once,
    assert_spans_closed,
    kill,
    types_of,
    wait_for_event,
    worker_process,
)

FREEZE = {TEST_HOOK_FREEZE_AFTER_COMMIT: "1"}
WRITE_TOOLSET = {
    "type": "agent_toolset_20260401",
    "configs": [{"name": "web_search", "enabled": False}],
}


async def _commit_then_lose_the_worker(
    client: ReverieClient, fake_model: FakeModelServer, model: str, options: SessionOptions
) -> tuple[str, list[Event]]:
    """Run a session whose worker freezes right after committing an answer, SIGKILL it there,
    and let a fresh worker finish the session (which must end idle, not exhausted)."""
    agent = await client.create_agent({"name": "kept", "model": model, "tools": [WRITE_TOOLSET]})
    async with worker_process(client.settings, env=FREEZE) as frozen:
        session = await client.create_session({"agent": agent.id}, options=options)
        await client.send_message(session.id, "write the note")
        # The answer (and its tool use) is committed; Temporal has not heard of it.
        await wait_for_event(client, session.id, "agent.tool_use")
        await kill(frozen)
    async with worker_process(client.settings):
        done = await client.wait_until_settled(session.id, timeout=60)
    assert done.status == "idle"
    return session.id, await all_events(client, session.id)


def _assert_turn_went_on(
    client: ReverieClient,
    fake_model: FakeModelServer,
    model: str,
    session_id: str,
    events: list[Event],
) -> None:
    assert_each_once(events)
    assert_spans_closed(events)
    assert types_of(events)[-1] == "session.status_idle"
    assert events[-1].payload["stop_reason"] == {"type": "end_turn"}
    uses = [e for e in events if e.type == "agent.tool_use"]
    results = [e for e in events if e.type == "agent.tool_result"]
    assert len(uses) == 1 and len(results) == 1
    assert results[0].payload["tool_use_id"] == uses[0].id
    assert results[0].payload["is_error"] is False
    assert [e.payload["content"][0]["text"] for e in events if e.type == "agent.message"] == [
        "noted"
    ]
    note = client.settings.workspaces / session_id / "work" / "note.txt"
    assert note.read_text() == "kept"
    # What the model was sent last is what the event log says happened.
    last = fake_model.requests(model)[-1]["messages"]
    assert [m["role"] for m in last] == ["user", "assistant", "user"]
    sent_use = next(b for b in last[1]["content"] if b["type"] == "tool_use")
    sent_result = next(b for b in last[2]["content"] if b["type"] == "tool_result")
    assert sent_use["id"] == uses[0].id == sent_result["tool_use_id"]
    assert sent_result["is_error"] is False


async def test_answer_committed_on_the_last_model_attempt_is_kept(
    own_queue: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    """The reported case: five 429s, then an answer committed on the sixth and last attempt
    its budget allows, and the worker killed before Temporal heard of it."""
    fake_model.script(
        model_name,
        [Reply.error(429, retry_after=0)] * 5
        + [
            Reply.tool_use("write", {"file_path": "note.txt", "content": "kept"}),
            Reply.text("noted"),
        ],
    )
    options = SessionOptions(model_max_attempts=6, heartbeat_timeout_seconds=2)
    session_id, events = await _commit_then_lose_the_worker(
        own_queue, fake_model, model_name, options
    )
    _assert_turn_went_on(own_queue, fake_model, model_name, session_id, events)
    errors = [
        e.payload["error"]["retry_status"]["type"] for e in events if e.type == "session.error"
    ]
    assert errors == ["retrying"] * 5
    assert len(fake_model.requests(model_name)) == 7


async def test_a_step_given_up_is_settled_and_its_committed_answer_used(
    own_queue: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    """No attempt left after the worker died (no worker-loss retries allowed): before declaring
    the step exhausted, the workflow finds its answer committed and goes on with it."""
    fake_model.script(
        model_name,
        [
            Reply.tool_use("write", {"file_path": "note.txt", "content": "kept"}),
            Reply.text("noted"),
        ],
    )
    options = SessionOptions(heartbeat_timeout_seconds=2, worker_loss_retries=0)
    session_id, events = await _commit_then_lose_the_worker(
        own_queue, fake_model, model_name, options
    )
    _assert_turn_went_on(own_queue, fake_model, model_name, session_id, events)
    assert "session.error" not in types_of(events)
    assert len(fake_model.requests(model_name)) == 2
