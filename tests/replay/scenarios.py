"""Sessions whose Temporal histories are saved for the replay test (`make histories`).

Not collected by a plain `pytest` run (the name does not start with `test_`); `record.py`
runs it on purpose. Each scenario drives one kind of session life to a settled state and
writes its history to `histories/<name>.json`.
"""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client

from reverie.models.workflow_io import SessionOptions
from reverie.starter.client import ReverieClient
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import new_agent

HISTORIES = Path(__file__).parent / "histories"


async def _save(temporal: Client, name: str, session_id: str) -> None:
    history = await temporal.get_workflow_handle(session_id).fetch_history()
    HISTORIES.mkdir(exist_ok=True)
    (HISTORIES / f"{name}.json").write_text(history.to_json())


async def _session(client: ReverieClient, model: str, options: SessionOptions | None = None) -> str:
    agent_id = await new_agent(client, model, system="You are recorded for replay tests.")
    session = await client.create_session({"agent": agent_id, "title": model}, options=options)
    return session.id


async def test_record_conversation(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(
        model_name, [Reply.text("one", delay=1), Reply.text("two"), Reply.text("three")]
    )
    session_id = await _session(reverie, model_name)
    await reverie.send_message(session_id, "first")
    await fake_model.wait_for_requests(model_name, 1)
    await reverie.send_message(session_id, "sent mid-turn")
    await reverie.wait_until_settled(session_id)
    await reverie.send_message(session_id, "third")
    await reverie.wait_until_settled(session_id)
    await _save(temporal_client, "conversation", session_id)


async def test_record_retries(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(
        model_name,
        [Reply.error(429, retry_after=0.2), Reply.text("ok"), Reply.error(500), Reply.error(500)],
    )
    session_id = await _session(reverie, model_name, SessionOptions(model_max_attempts=2))
    await reverie.send_message(session_id, "retried then fine")
    await reverie.wait_until_settled(session_id, timeout=30)
    await reverie.send_message(session_id, "exhausted")
    await reverie.wait_until_settled(session_id, timeout=30)
    await _save(temporal_client, "retries", session_id)


async def test_record_interrupt_and_archive(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(model_name, [Reply.text("never", delay=30), Reply.text("after")])
    session_id = await _session(reverie, model_name)
    await reverie.send_message(session_id, "slow one")
    await fake_model.wait_for_requests(model_name, 1)
    await reverie.interrupt(session_id)
    await reverie.wait_until_settled(session_id)
    await reverie.send_message(session_id, "again")
    await reverie.wait_until_settled(session_id)
    await reverie.archive_session(session_id)
    await _save(temporal_client, "interrupt_archive", session_id)


async def test_record_terminal_error(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(model_name, [Reply.error(400, message="bad request")])
    session_id = await _session(reverie, model_name)
    await reverie.send_message(session_id, "this fails")
    await reverie.wait_until_settled(session_id)
    await _save(temporal_client, "terminal_error", session_id)


async def test_record_tools(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    toolset = {
        "type": "agent_toolset_20260401",
        "configs": [
            {"name": "web_search", "enabled": False},
            {"name": "write", "permission_policy": {"type": "always_ask"}},
        ],
    }
    custom = {"type": "custom", "name": "lookup", "input_schema": {"type": "object"}}
    fake_model.script(
        model_name,
        [
            Reply.tool_uses(
                [
                    ("bash", {"command": "echo hi"}),
                    ("write", {"file_path": "a.txt", "content": "a"}),
                    ("lookup", {"q": "x"}),
                ]
            ),
            Reply.text("done"),
        ],
    )
    agent = await reverie.create_agent(
        {"name": "replay-tools", "model": model_name, "tools": [toolset, custom]}
    )
    session = await reverie.create_session({"agent": agent.id})
    await reverie.send_message(session.id, "use tools")
    await reverie.wait_until_settled(session.id, timeout=30)
    events = await reverie.list_events(session.id, limit=1000)
    write = next(e for e in events if e.type == "agent.tool_use" and e.payload["name"] == "write")
    lookup = next(e for e in events if e.type == "agent.custom_tool_use")
    await reverie.send_events(
        session.id, [{"type": "user.tool_confirmation", "tool_use_id": write.id, "result": "allow"}]
    )
    await reverie.send_events(
        session.id,
        [{"type": "user.custom_tool_result", "custom_tool_use_id": lookup.id, "content": "found"}],
    )
    await reverie.wait_until_settled(session.id, timeout=30)
    await _save(temporal_client, "tools", session.id)


async def test_record_long_turn(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    """A turn long enough to continue as new between model steps (the test server suggests
    continue-as-new early); the saved history is the run that resumed the turn."""
    steps = 25
    fake_model.script(
        model_name,
        [Reply.tool_use("bash", {"command": f"echo {n}"}) for n in range(steps)]
        + [Reply.text("done")],
    )
    toolset = {
        "type": "agent_toolset_20260401",
        "configs": [{"name": "web_search", "enabled": False}],
    }
    agent = await reverie.create_agent({"name": "long", "model": model_name, "tools": [toolset]})
    session = await reverie.create_session({"agent": agent.id})
    await reverie.send_message(session.id, "many steps")
    await reverie.wait_until_settled(session.id, timeout=120)
    await _save(temporal_client, "long_turn", session.id)
