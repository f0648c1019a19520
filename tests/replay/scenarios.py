"""Sessions whose Temporal histories are saved for the replay test (`make histories`).

Not collected by a plain `pytest` run (the name does not start with `test_`); `record.py`
runs it on purpose. Each scenario drives one kind of session life to a settled state and
writes its history to `histories/<name>.json`.

The saved histories stand for sessions running in users' deployments: a scenario whose file
exists is skipped (unless `record.py --rerecord`), and a change of behaviour gets a NEW scenario
with a new name, recorded beside the old ones, which must all keep replaying.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from temporalio.client import Client

from reverie.activities.model import TEST_HOOK_FREEZE_AFTER_COMMIT
from reverie.models.webhooks import DispatcherInput, dispatcher_workflow_id, endpoint_workflow_id
from reverie.models.workflow_io import SessionOptions
from reverie.settings import Settings
from reverie.starter.client import ReverieClient
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import (
    kill,
    new_agent,
    refusing_events,
    wait_for_event,
    worker_process,
)
from tests.replay.record import RERECORD_ENV
from tests.webhook_support import hook_stack, receiver, wait_until

HISTORIES = Path(__file__).parent / "histories"


def _rerecord() -> bool:
    return os.environ.get(RERECORD_ENV) == "1"


@pytest.fixture(autouse=True)
def _only_missing(request: pytest.FixtureRequest) -> None:
    """Skip a scenario whose history is saved already, unless re-recording was asked for.
    Scenario `test_record_<name>` saves `histories/<name>.json`."""
    name = request.node.name.removeprefix("test_record_")
    if (HISTORIES / f"{name}.json").exists() and not _rerecord():
        pytest.skip(f"histories/{name}.json exists (re-record with record.py --rerecord)")


async def _save(temporal: Client, name: str, session_id: str) -> None:
    path = HISTORIES / f"{name}.json"
    if path.exists() and not _rerecord():
        raise FileExistsError(f"{path} exists: an old history is never overwritten by accident")
    history = await temporal.get_workflow_handle(session_id).fetch_history()
    HISTORIES.mkdir(exist_ok=True)
    path.write_text(history.to_json())


async def _session(client: ReverieClient, model: str, options: SessionOptions | None = None) -> str:
    agent_id = await new_agent(client, model, system="You are recorded for replay tests.")
    session = await client.create_session({"agent": agent_id, "title": model}, options=options)
    return session.id


# ---- webhooks (issue 19): an endpoint's workflow and the dispatcher ------------------------------


async def test_record_webhook_endpoint(settings: Settings, temporal_client: Client) -> None:
    """An endpoint's workflow: a delivery that fails twice before it succeeds (retry timers),
    a wake-up for the next event, then the endpoint disabled (the workflow ends)."""
    async with hook_stack(settings) as stack, receiver(answers=[500, 500]) as rx:
        endpoint = await stack.client.create_webhook(
            {"url": rx.url, "enabled_events": ["agent.created"]}
        )

        async def all_delivered(count: int) -> bool:
            page = await stack.client.list_webhook_deliveries(endpoint.id)
            return len(page.data) == count and all(d.state == "delivered" for d in page.data)

        await stack.client.create_agent({"name": "first", "model": "recorded"})
        await rx.wait_for(3)
        await wait_until(lambda: all_delivered(1), what="the first delivery")
        await stack.client.create_agent({"name": "second", "model": "recorded"})
        await rx.wait_for(4)
        await wait_until(lambda: all_delivered(2), what="the second delivery")
        await stack.client.disable_webhook(endpoint.id)
        handle = stack.temporal.get_workflow_handle(endpoint_workflow_id(endpoint.id))
        await handle.signal("wake")
        await handle.result()
        await _save(temporal_client, "webhook_endpoint", handle.id)


async def test_record_webhook_dispatcher(settings: Settings, temporal_client: Client) -> None:
    """The dispatcher's workflow running its activity round after round (short rounds here)."""
    quick = DispatcherInput(lifetime_seconds=1, heartbeat_timeout_seconds=3)
    async with hook_stack(settings, dispatcher=quick) as stack, receiver() as rx:
        await stack.client.create_webhook({"url": rx.url, "enabled_events": ["agent.created"]})
        await stack.client.create_agent({"name": "first", "model": "recorded"})
        await rx.wait_for(1)
        handle = stack.temporal.get_workflow_handle(
            dispatcher_workflow_id(stack.settings.task_queue)
        )

        async def rounds() -> bool:
            history = await handle.fetch_history()
            return (
                sum(e.HasField("activity_task_completed_event_attributes") for e in history.events)
                >= 3
            )

        await wait_until(rounds, what="three dispatch rounds")
        await _save(temporal_client, "webhook_dispatcher", handle.id)


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


async def test_record_interrupt_archive(
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
    reverie: ReverieClient,
    temporal_client: Client,
    fake_model: FakeModelServer,
    model_name: str,
    prefix: str = "",
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
    await _save(temporal_client, prefix + "tools", session.id)


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


# ---- recorded after the `patches` of issue 13 (model retries in the workflow, settled steps,
# adopted inputs, refusals); the histories above are older and keep the old commands ----------


async def test_record_retries_in_workflow(
    reverie: ReverieClient,
    temporal_client: Client,
    fake_model: FakeModelServer,
    model_name: str,
    prefix: str = "",
) -> None:
    """A 429 retried by the workflow (status rescheduling, a backoff timer, running again), an
    exhausted step (settled: its span closed), then a terminal 400 (settled too)."""
    fake_model.script(
        model_name,
        [
            Reply.error(429, retry_after=0.2),
            Reply.text("ok"),
            Reply.error(500),
            Reply.error(500),
            Reply.error(400, message="bad request"),
        ],
    )
    session_id = await _session(reverie, model_name, SessionOptions(model_max_attempts=2))
    await reverie.send_message(session_id, "retried then fine")
    await reverie.wait_until_settled(session_id, timeout=30)
    await reverie.send_message(session_id, "exhausted")
    await reverie.wait_until_settled(session_id, timeout=30)
    await reverie.send_message(session_id, "terminal")
    await reverie.wait_until_settled(session_id, timeout=30)
    await _save(temporal_client, prefix + "retries_in_workflow", session_id)


async def test_record_interrupt_in_backoff(
    own_queue: ReverieClient,
    temporal_client: Client,
    fake_model: FakeModelServer,
    model_name: str,
    prefix: str = "",
) -> None:
    """An interrupt while the workflow waits to retry a 429, then a turn with a tool use that is
    interrupted while it waits for a confirmation: inputs adopted into the transcript."""
    toolset = {
        "type": "agent_toolset_20260401",
        "configs": [
            {"name": "web_search", "enabled": False},
            {"name": "write", "permission_policy": {"type": "always_ask"}},
        ],
    }
    fake_model.script(
        model_name,
        [
            Reply.error(429, retry_after=60),
            Reply.tool_use("write", {"file_path": "a.txt", "content": "a"}),
            Reply.text("after"),
        ],
    )
    agent = await own_queue.create_agent(
        {"name": "replay-backoff", "model": model_name, "tools": [toolset]}
    )
    async with worker_process(own_queue.settings):
        session = await own_queue.create_session({"agent": agent.id})
        await own_queue.send_message(session.id, "first")
        await wait_for_event(own_queue, session.id, "session.status_rescheduled")
        await own_queue.interrupt(session.id)
        await own_queue.wait_until_settled(session.id)
        await own_queue.send_message(session.id, "write it")
        await own_queue.wait_until_settled(session.id)
        await own_queue.interrupt(session.id)
        await own_queue.wait_until_settled(session.id)
        await own_queue.send_message(session.id, "never mind")
        await own_queue.wait_until_settled(session.id)
    await _save(temporal_client, prefix + "interrupt_in_backoff", session.id)


async def test_record_committed_answer_settled(
    own_queue: ReverieClient,
    temporal_client: Client,
    fake_model: FakeModelServer,
    model_name: str,
    prefix: str = "",
) -> None:
    """The worker dies right after committing an answer, with no worker-loss retry allowed:
    the workflow settles the step, finds the answer and goes on with it."""
    fake_model.script(model_name, [Reply.text("committed, then the worker died"), Reply.text("2")])
    agent_id = await new_agent(own_queue, model_name)
    options = SessionOptions(heartbeat_timeout_seconds=2, worker_loss_retries=0)
    async with worker_process(own_queue.settings, env={TEST_HOOK_FREEZE_AFTER_COMMIT: "1"}) as w:
        session = await own_queue.create_session({"agent": agent_id}, options=options)
        await own_queue.send_message(session.id, "one")
        await wait_for_event(own_queue, session.id, "agent.message")
        await kill(w)
    async with worker_process(own_queue.settings):
        await own_queue.wait_until_settled(session.id, timeout=60)
        await own_queue.send_message(session.id, "two")
        await own_queue.wait_until_settled(session.id, timeout=60)
    await _save(temporal_client, prefix + "committed_answer_settled", session.id)


async def test_record_record_refused(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    """PostgreSQL refuses the status a turn starts with: `session.error`, then terminated."""
    session_id = await _session(reverie, model_name)
    async with refusing_events(reverie.pool) as refuse:
        await refuse(session_id, "session.status_running")
        await reverie.send_message(session_id, "refused")
        await reverie.wait_until_settled(session_id, timeout=30)
    await _save(temporal_client, "record_refused", session_id)


# ---- recorded after the patches `stop-reason-rules` and `compaction` (issue 13, items 5 and 6) --


def _stop_tool(name: str, tool_input: dict) -> dict:
    return Reply.tool_use(name, tool_input).content[0]


async def test_record_stop_reasons(
    reverie: ReverieClient,
    temporal_client: Client,
    fake_model: FakeModelServer,
    model_name: str,
    prefix: str = "",
) -> None:
    """One turn per rule: a `max_tokens` answer whose last tool use is cut off (the complete one
    runs), a refusal (idle `refusal`, its tool use not run), `pause_turn` continued, a stop
    reason from the future (the turn ends, its tool use not run), and the context-window stop
    (compacted by Reverie's own summary, then continued)."""
    toolset = {
        "type": "agent_toolset_20260401",
        "configs": [{"name": "web_search", "enabled": False}],
    }
    write = _stop_tool("write", {"file_path": "a.txt", "content": "a"})
    cut = _stop_tool("write", {"file_path": "b.txt", "content": "b"})
    refused = _stop_tool("write", {"file_path": "c.txt", "content": "c"})
    future = _stop_tool("write", {"file_path": "d.txt", "content": "d"})
    fake_model.script(
        model_name,
        [
            Reply([write, cut], "max_tokens"),
            Reply.text("cut off, noted"),
            Reply([refused], "refusal", stop_details={"type": "refusal", "category": "cyber"}),
            Reply.text("paused", stop_reason="pause_turn"),
            Reply.text("continued"),
            Reply([future], "a_stop_reason_from_the_future"),
            Reply.text("the window filled", stop_reason="model_context_window_exceeded"),
            Reply.text("compacted and finished"),
        ],
    )
    agent = await reverie.create_agent(
        {"name": "replay-stops", "model": model_name, "tools": [toolset]}
    )
    session = await reverie.create_session({"agent": agent.id})
    for text in ("cut off", "refuse", "pause", "future", "fill the window"):
        await reverie.send_message(session.id, text)
        await reverie.wait_until_settled(session.id, timeout=30)
    await _save(temporal_client, prefix + "stop_reasons", session.id)


def _bash_only() -> dict:
    return {
        "type": "agent_toolset_20260401",
        "configs": [
            {"name": name, "enabled": False}
            for name in ("read", "write", "edit", "glob", "grep", "web_fetch", "web_search")
        ],
    }


async def _long_compacting_session(
    client: ReverieClient, fake_model: FakeModelServer, model: str
) -> str:
    steps = 6
    fake_model.script(
        model,
        [Reply.tool_use("bash", {"command": "seq 1000 1300"}) for _ in range(steps)]
        + [Reply.text("done")],
    )
    agent = await client.create_agent(
        {"name": "replay-compaction", "model": model, "tools": [_bash_only()]}
    )
    session = await client.create_session({"agent": agent.id})
    await client.send_message(session.id, "many long outputs")
    await client.wait_until_settled(session.id, timeout=120)
    return session.id


async def test_record_compaction_threshold(
    reverie: ReverieClient,
    temporal_client: Client,
    fake_model: FakeModelServer,
    model_name: str,
    prefix: str = "",
) -> None:
    """The model's small window is reported: Reverie compacts before the step after an answer
    that neared it."""
    fake_model.set_context_window(model_name, 1500)
    session_id = await _long_compacting_session(reverie, fake_model, model_name)
    assert fake_model.too_long(model_name) == 0
    await _save(temporal_client, prefix + "compaction_threshold", session_id)


async def test_record_compaction_prompt_too_long(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    """The window is reported nowhere: a 400 "prompt is too long" compacts, and the same step is
    tried again."""
    fake_model.set_context_window(model_name, 1500, reported=False)
    session_id = await _long_compacting_session(reverie, fake_model, model_name)
    assert fake_model.too_long(model_name) >= 1
    await _save(temporal_client, "compaction_prompt_too_long", session_id)


# ---- recorded after the patch `promote-starts-turn` (issue 15) ---------------------------------


async def test_record_promote_starts_turn(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    """Messages into a session waiting for work are recorded with the turn's running status (one
    local activity); a message sent mid-turn is taken up by that turn; an interrupt sent right
    after the message that started a turn ends it; two messages in one request start one turn."""
    fake_model.script(
        model_name,
        [
            Reply.text("one", delay=1),
            Reply.text("two"),
            Reply.text("slow", delay=0.5),
            Reply.text("three"),
            Reply.text("four"),
        ],
    )
    session_id = await _session(reverie, model_name)
    await reverie.send_message(session_id, "first")
    await fake_model.wait_for_requests(model_name, 1)
    await reverie.send_message(session_id, "sent mid-turn")
    await reverie.wait_until_settled(session_id)
    await reverie.send_message(session_id, "interrupted at once")
    await reverie.interrupt(session_id)
    await reverie.wait_until_settled(session_id)
    await reverie.send_events(
        session_id,
        [{"type": "user.message", "content": "a"}, {"type": "user.message", "content": "b"}],
    )
    await reverie.wait_until_settled(session_id)
    await _save(temporal_client, "promote_starts_turn", session_id)


# ---- recorded after the patch `idle-with-answer` (issue 15) -------------------------------------


async def test_record_idle_with_answer(
    reverie: ReverieClient,
    temporal_client: Client,
    fake_model: FakeModelServer,
    model_name: str,
    prefix: str = "",
) -> None:
    """A step whose answer ends the turn records the idle status with it; one during which a
    message arrived does not (the turn goes on); a tool use, then an answer; an interrupt
    sent right after a turn ended."""
    fake_model.script(
        model_name,
        [
            Reply.text("one"),
            Reply.text("slow", delay=1),
            Reply.text("took up the second"),
            Reply.tool_use("bash", {"command": "echo hi"}),
            Reply.text("ran it"),
            Reply.text("last"),
        ],
    )
    toolset = {
        "type": "agent_toolset_20260401",
        "configs": [{"name": "web_search", "enabled": False}],
    }
    agent = await reverie.create_agent(
        {"name": "replay-idle", "model": model_name, "tools": [toolset]}
    )
    session_id = (await reverie.create_session({"agent": agent.id})).id
    await reverie.send_message(session_id, "first")
    await reverie.wait_until_settled(session_id)
    await reverie.send_message(session_id, "slow one")
    await fake_model.wait_for_requests(model_name, 2)
    await reverie.send_message(session_id, "sent mid-turn")
    await reverie.wait_until_settled(session_id)
    await reverie.send_message(session_id, "use bash")
    await reverie.wait_until_settled(session_id, timeout=30)
    await reverie.send_message(session_id, "last")
    await reverie.interrupt(session_id)
    await reverie.wait_until_settled(session_id)
    await _save(temporal_client, prefix + "idle_with_answer", session_id)


# ---- recorded after the patch `created-running` (issue 15) --------------------------------------


async def test_record_created_running(
    reverie: ReverieClient,
    temporal_client: Client,
    fake_model: FakeModelServer,
    model_name: str,
    prefix: str = "",
) -> None:
    """A session created with messages: its creator recorded the first turn's running status;
    then a turn as any other."""
    fake_model.script(model_name, [Reply.text("first answer"), Reply.text("second answer")])
    agent_id = await new_agent(reverie, model_name, system="You are recorded for replay tests.")
    session = await reverie.create_session(
        {
            "agent": agent_id,
            "initial_events": [
                {"type": "user.message", "content": "one"},
                {"type": "user.message", "content": "two"},
            ],
        }
    )
    await reverie.wait_until_settled(session.id)
    await reverie.send_message(session.id, "three")
    await reverie.wait_until_settled(session.id)
    await _save(temporal_client, prefix + "created_running", session.id)


# ---- recorded after the patch `outcomes` (issue 16) -----------------------------------------


def _verdict(result: str, met: list[bool]) -> dict:
    return {
        "result": result,
        "explanation": f"recorded verdict: {result}",
        "criteria": [
            {"id": f"C{n}", "met": ok, **({"evidence": "seen"} if ok else {"gap": "missing"})}
            for n, ok in enumerate(met, start=1)
        ],
    }


async def test_record_outcomes(
    reverie: ReverieClient,
    temporal_client: Client,
    fake_model: FakeModelServer,
    model_name: str,
    prefix: str = "",
) -> None:
    """After the patch `outcomes`: an outcome revised once then satisfied (from initial_events),
    one interrupted while graded, one that reaches max_iterations and takes its final pass."""
    grader = f"{model_name}-grader"
    rubric = {"type": "text", "content": "- is polite\n- is short"}

    def outcome(**extra: object) -> dict:
        return {
            "type": "user.define_outcome",
            "description": "Greet the user",
            "rubric": rubric,
            "grader": {"model": grader},
            **extra,
        }

    fake_model.script(
        model_name,
        [
            Reply.text("hi"),
            Reply.text("Hello!"),
            Reply.text("Hello."),
            Reply.text("Hey."),
            Reply.text("Final."),
        ],
    )
    fake_model.script(
        grader,
        [
            Reply.tool_use("submit_verdict", _verdict("needs_revision", [True, False])),
            Reply.tool_use("submit_verdict", _verdict("satisfied", [True, True])),
            Reply.tool_use("submit_verdict", _verdict("satisfied", [True, True]), delay=30),
            Reply.tool_use("submit_verdict", _verdict("needs_revision", [False, True])),
        ],
    )
    agent_id = await new_agent(reverie, model_name, system="You are recorded for replay tests.")
    session = await reverie.create_session(
        {"agent": agent_id, "title": model_name, "initial_events": [outcome()]}
    )
    await reverie.wait_until_settled(session.id, timeout=60)
    await reverie.send_events(session.id, [outcome()])
    await fake_model.wait_for_requests(grader, 3, timeout=30)
    await reverie.interrupt(session.id)
    await reverie.wait_until_settled(session.id, timeout=60)
    await reverie.send_events(session.id, [outcome(max_iterations=1)])
    await reverie.wait_until_settled(session.id, timeout=60)
    await reverie.send_message(session.id, "thanks")
    await reverie.wait_until_settled(session.id, timeout=60)
    results = [o.result for o in (await reverie.get_session(session.id)).outcome_evaluations]
    assert results == ["satisfied", "interrupted", "max_iterations_reached"], results
    await _save(temporal_client, prefix + "outcomes", session.id)


# ---- multi-agent (issue 18): a coordinator's session and one of its threads ----------------------


async def test_record_multiagent(
    reverie: ReverieClient,
    temporal_client: Client,
    fake_model: FakeModelServer,
    model_name: str,
    prefix: str = "",
) -> None:
    """A coordinator fans out to two subagent threads and waits for them, then sends one a
    follow-up; saves the session's history (patch `multiagent`) and the thread's
    (`multiagent_thread`, a `ThreadWorkflow`)."""
    members = [
        await reverie.create_agent({"name": name, "model": f"{model_name}-{name}"})
        for name in ("alpha", "beta")
    ]
    lead = await reverie.create_agent(
        {
            "name": "lead",
            "model": model_name,
            "multiagent": {"type": "coordinator", "agents": [m.id for m in members]},
        }
    )
    fake_model.script(
        model_name,
        [
            Reply.tool_uses(
                [
                    ("start_thread", {"agent": "alpha", "task": "first part"}),
                    ("start_thread", {"agent": "beta", "task": "second part"}),
                ]
            ),
            Reply.tool_use("wait_for_threads", {}),
            Reply.text("both parts in"),
        ],
    )
    fake_model.script(f"{model_name}-alpha", [Reply.text("alpha's part", delay=0.5)])
    fake_model.script(f"{model_name}-beta", [Reply.text("beta's part")])
    session = await reverie.create_session({"agent": lead.id, "title": model_name})
    await reverie.send_message(session.id, "split the work")
    await reverie.wait_until_settled(session.id)
    alpha = (await reverie.list_threads(session.id)).data[1]
    fake_model.script(
        model_name,
        [
            Reply.tool_use("message_thread", {"thread_id": alpha.id, "message": "more"}),
            Reply.tool_use("wait_for_threads", {"thread_ids": [alpha.id]}),
            Reply.text("done"),
        ],
    )
    fake_model.script(f"{model_name}-alpha", [Reply.text("more of alpha")])
    await reverie.send_message(session.id, "ask alpha again")
    await reverie.wait_until_settled(session.id)
    await _save(temporal_client, prefix + "multiagent", session.id)
    await _save(temporal_client, prefix + "multiagent_thread", alpha.id)


async def test_record_multiagent_requires_action(
    reverie: ReverieClient,
    temporal_client: Client,
    fake_model: FakeModelServer,
    model_name: str,
    prefix: str = "",
) -> None:
    """A coordinator waits for a thread whose tool use waits for the client: the session idles
    with requires_action (patch `threads-require-action`), then runs again once answered."""
    asker = await reverie.create_agent(
        {
            "name": "asker",
            "model": f"{model_name}-asker",
            "tools": [
                {
                    "type": "agent_toolset_20260401",
                    "default_config": {"permission_policy": {"type": "always_ask"}},
                }
            ],
        }
    )
    lead = await reverie.create_agent(
        {
            "name": "lead",
            "model": model_name,
            "multiagent": {"type": "coordinator", "agents": [asker.id]},
        }
    )
    fake_model.script(
        model_name,
        [
            Reply.tool_use("start_thread", {"agent": "asker", "task": "write it"}),
            Reply.tool_use("wait_for_threads", {}),
            Reply.text("written"),
        ],
    )
    fake_model.script(
        f"{model_name}-asker",
        [Reply.tool_use("write", {"file_path": "a.txt", "content": "a"}), Reply.text("did it")],
    )
    session = await reverie.create_session({"agent": lead.id, "title": model_name})
    await reverie.send_message(session.id, "have it written")
    idle = await wait_for_event(reverie, session.id, "session.status_idle")
    (asked,) = idle.payload["stop_reason"]["event_ids"]
    await reverie.send_events(
        session.id, [{"type": "user.tool_confirmation", "tool_use_id": asked, "result": "allow"}]
    )
    await reverie.wait_until_settled(session.id)
    await _save(temporal_client, prefix + "multiagent_requires_action", session.id)


async def test_record_multiagent_thread_ended_outside(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    """A thread's workflow is terminated by hand; the coordinator then messages it: the session
    records it terminated and goes on (patch `thread-ended-outside`)."""
    alpha = await reverie.create_agent({"name": "alpha", "model": f"{model_name}-alpha"})
    lead = await reverie.create_agent(
        {
            "name": "lead",
            "model": model_name,
            "multiagent": {"type": "coordinator", "agents": [alpha.id]},
        }
    )
    fake_model.script(
        model_name,
        [
            Reply.tool_use("start_thread", {"agent": "alpha", "task": "a part"}),
            Reply.tool_use("wait_for_threads", {}),
            Reply.text("in"),
        ],
    )
    session = await reverie.create_session({"agent": lead.id, "title": model_name})
    await reverie.send_message(session.id, "start it")
    await reverie.wait_until_settled(session.id)
    thread = (await reverie.list_threads(session.id)).data[1]
    await temporal_client.get_workflow_handle(thread.id).terminate(reason="by hand")
    fake_model.script(
        model_name,
        [
            Reply.tool_use("message_thread", {"thread_id": thread.id, "message": "there?"}),
            Reply.tool_use("wait_for_threads", {}),
            Reply.text("gone"),
        ],
    )
    await reverie.send_message(session.id, "ask it")
    await reverie.wait_until_settled(session.id)
    await _save(temporal_client, "multiagent_thread_ended_outside", session.id)


# ---- dreams (issue 20): a dream, and a scheduled run that starts one -----------------------------


async def test_record_dream(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    """A dream over two sessions: start, two reads in parallel, plan, one topic, finish."""
    from tests.dream_support import findings, operations, session_with, store_with

    agent = await new_agent(reverie, model_name)
    store = await store_with(reverie, "Recorded", {"/notes/a.md": "old"})
    sessions = sorted([await session_with(reverie, agent, store, f"s{n}") for n in range(2)])
    fake_model.script(
        model_name,
        [findings(("notes", "new", "s"))] * 2
        + [operations({"op": "update", "path": "/notes/a.md", "content": "new",
                       "supporting_sessions": sessions})],
    )  # fmt: skip
    dream = await reverie.create_dream(
        {
            "inputs": [
                {"type": "memory_store", "memory_store_id": store},
                {"type": "sessions", "session_ids": sessions},
            ],
            "model": model_name,
        }
    )
    assert (await reverie.wait_for_dream(dream.id)).status == "completed"
    await _save(temporal_client, "dream", dream.id)


async def test_record_scheduled_dream(
    reverie: ReverieClient,
    temporal_client: Client,
    settings: Settings,
    fake_model: FakeModelServer,
    model_name: str,
    prefix: str = "",
) -> None:
    """A scheduled run: it picks one new session and runs its dream as a child workflow."""
    from datetime import UTC, datetime

    from reverie.models.dreams import ScheduledDreamInput
    from reverie.workflows.dream_schedule import ScheduledDreamWorkflow
    from tests.dream_support import findings, session_with, store_with

    agent = await new_agent(reverie, model_name)
    store = await store_with(reverie, "Recorded schedule", {})
    await session_with(reverie, agent, store, "one")
    schedule = await reverie.create_dream_schedule(
        {"memory_store_id": store, "agent_id": agent, "cron": "0 3 * * *"}
    )
    fake_model.script(model_name, [findings(("notes", "one", "one"))])
    run_id = f"{schedule.id}-recorded"
    await temporal_client.execute_workflow(
        ScheduledDreamWorkflow.run,
        ScheduledDreamInput(schedule_id=schedule.id, scheduled_time=datetime.now(UTC)),
        id=run_id,
        task_queue=settings.task_queue,
    )
    await _save(temporal_client, prefix + "scheduled_dream", run_id)
    await reverie.delete_dream_schedule(schedule.id)


async def test_record_dream_canceled(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    """A dream canceled while it reads a session: the read is cancelled, the dream ends."""
    from tests.dream_support import session_with, store_with

    agent = await new_agent(reverie, model_name)
    store = await store_with(reverie, "Recorded cancel", {})
    session = await session_with(reverie, agent, store, "slow")
    fake_model.script(model_name, [Reply.tool_use("record_findings", {"findings": []}, delay=30)])
    dream = await reverie.create_dream(
        {
            "inputs": [
                {"type": "memory_store", "memory_store_id": store},
                {"type": "sessions", "session_ids": [session]},
            ],
            "model": model_name,
        }
    )
    await fake_model.wait_for_requests(model_name, 1)
    await reverie.cancel_dream(dream.id)
    assert (await reverie.wait_for_dream(dream.id)).status == "canceled"
    await _save(temporal_client, "dream_canceled", dream.id)


async def test_record_scheduled_dream_canceled(
    reverie: ReverieClient,
    temporal_client: Client,
    settings: Settings,
    fake_model: FakeModelServer,
    model_name: str,
) -> None:
    """A scheduled run of two dreams canceled while its first reads a session (patch
    scheduled-run-ends-its-dreams): the first is canceled, the second ended without running."""
    import contextlib
    from datetime import UTC, datetime

    from reverie.models.dreams import ScheduledDreamInput
    from reverie.workflows.dream_schedule import ScheduledDreamWorkflow
    from tests.dream_support import session_with, store_with

    agent = await new_agent(reverie, model_name)
    store = await store_with(reverie, "Recorded schedule cancel", {})
    for n in range(2):
        await session_with(reverie, agent, store, f"s{n}")
    schedule = await reverie.create_dream_schedule(
        {"memory_store_id": store, "agent_id": agent, "cron": "0 3 * * *"}
    )
    fake_model.script(model_name, [Reply.tool_use("record_findings", {"findings": []}, delay=30)])
    run_id = f"{schedule.id}-recorded-cancel"
    handle = await temporal_client.start_workflow(
        ScheduledDreamWorkflow.run,
        ScheduledDreamInput(schedule_id=schedule.id, scheduled_time=datetime.now(UTC), batch=1),
        id=run_id,
        task_queue=settings.task_queue,
    )
    await fake_model.wait_for_requests(model_name, 1)
    await handle.cancel()
    with contextlib.suppress(Exception):
        await handle.result()
    await _save(temporal_client, "scheduled_dream_canceled", run_id)
    await reverie.delete_dream_schedule(schedule.id)


async def test_record_scheduled_dream_pick_canceled(
    own_queue: ReverieClient, temporal_client: Client, model_name: str
) -> None:
    """A scheduled run canceled while it picks its sessions (patch
    scheduled-pick-survives-cancel): it waits for the pick's answer and ends its dream."""
    from datetime import UTC, datetime

    from temporalio.client import WorkflowFailureError

    from reverie.activities.dream import TEST_HOOK_SLOW_SCHEDULE_PICK
    from reverie.models.dreams import ScheduledDreamInput
    from reverie.workflows.dream_schedule import ScheduledDreamWorkflow
    from tests.dream_support import session_with, store_with
    from tests.helpers import worker_process

    client = own_queue
    agent = await new_agent(client, model_name)
    store = await store_with(client, "Recorded pick cancel", {})
    await session_with(client, agent, store, "one")
    schedule = await client.create_dream_schedule(
        {"memory_store_id": store, "agent_id": agent, "cron": "0 3 1 1 *"}
    )
    run_id = f"{schedule.id}-recorded-pick-cancel"
    async with worker_process(client.settings, env={TEST_HOOK_SLOW_SCHEDULE_PICK: "3"}):
        handle = await temporal_client.start_workflow(
            ScheduledDreamWorkflow.run,
            ScheduledDreamInput(schedule_id=schedule.id, scheduled_time=datetime.now(UTC)),
            id=run_id,
            task_queue=client.settings.task_queue,
        )
        for _ in range(100):
            if await client.pool.fetchval(
                "SELECT count(*) FROM dreams WHERE schedule_id = $1", schedule.id
            ):
                break
            await asyncio.sleep(0.1)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    await _save(temporal_client, "scheduled_dream_pick_canceled", run_id)
    await client.delete_dream_schedule(schedule.id)


# ---- recorded after the patch `baseline-2026-11` (issue 15) --------------------------------------
# The same lives as above, on code where one marker stands for every earlier patch: a run that
# starts there records only it, and asks for no patch of the baseline one by one.


async def test_record_baseline_tools(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    await test_record_tools(reverie, temporal_client, fake_model, model_name, prefix="baseline_")


async def test_record_baseline_retries_in_workflow(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    await test_record_retries_in_workflow(
        reverie, temporal_client, fake_model, model_name, prefix="baseline_"
    )


async def test_record_baseline_interrupt_in_backoff(
    own_queue: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    await test_record_interrupt_in_backoff(
        own_queue, temporal_client, fake_model, model_name, prefix="baseline_"
    )


async def test_record_baseline_committed_answer_settled(
    own_queue: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    await test_record_committed_answer_settled(
        own_queue, temporal_client, fake_model, model_name, prefix="baseline_"
    )


async def test_record_baseline_stop_reasons(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    await test_record_stop_reasons(
        reverie, temporal_client, fake_model, model_name, prefix="baseline_"
    )


async def test_record_baseline_compaction_threshold(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    await test_record_compaction_threshold(
        reverie, temporal_client, fake_model, model_name, prefix="baseline_"
    )


async def test_record_baseline_idle_with_answer(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    await test_record_idle_with_answer(
        reverie, temporal_client, fake_model, model_name, prefix="baseline_"
    )


async def test_record_baseline_created_running(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    await test_record_created_running(
        reverie, temporal_client, fake_model, model_name, prefix="baseline_"
    )


async def test_record_baseline_outcomes(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    await test_record_outcomes(reverie, temporal_client, fake_model, model_name, prefix="baseline_")


async def test_record_baseline_multiagent(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    await test_record_multiagent(
        reverie, temporal_client, fake_model, model_name, prefix="baseline_"
    )


async def test_record_baseline_multiagent_requires_action(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    await test_record_multiagent_requires_action(
        reverie, temporal_client, fake_model, model_name, prefix="baseline_"
    )


async def test_record_baseline_scheduled_dream(
    reverie: ReverieClient,
    temporal_client: Client,
    settings: Settings,
    fake_model: FakeModelServer,
    model_name: str,
) -> None:
    await test_record_scheduled_dream(
        reverie, temporal_client, settings, fake_model, model_name, prefix="baseline_"
    )
