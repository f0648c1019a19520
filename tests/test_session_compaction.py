"""Long sessions keep working (issue 13, item 6): a transcript that nears or outgrows the model's
context window is compacted, by the API itself where the model supports it and otherwise by
Reverie's own summary, without ever parting a tool use from its result. Against the real stack,
with a fake model whose context window is small (400 "prompt is too long" past it)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.testing import ActivityEnvironment

from reverie.activities.compaction import (
    TEST_HOOK_FREEZE_AFTER_COMPACTION,
    CompactionActivities,
    choose_cut,
)
from reverie.activities.model import model_client
from reverie.activities.model_facts import ModelCatalog
from reverie.activities.transcript import SUMMARY_PREAMBLE
from reverie.models.workflow_io import CompactInput, SessionOptions
from reverie.settings import Settings
from reverie.starter.client import ReverieClient
from reverie.store.transcript import Row
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

WINDOW = 2500  # tokens (characters / 4): the bash tool's definition alone is ~200
BASH_ONLY = {
    "type": "agent_toolset_20260401",
    "configs": [
        {"name": name, "enabled": False}
        for name in ("read", "write", "edit", "glob", "grep", "web_fetch", "web_search")
    ],
}
# ~1,500 characters of output per run: a dozen runs are several times the window.
COMMAND = "seq 1000 1300"
STEPS = 12


def _long_session_script() -> list[Reply]:
    return [
        *(Reply.tool_use("bash", {"command": COMMAND}, text=f"Run {n}.") for n in range(STEPS)),
        Reply.text("All runs done."),
        Reply.tool_use("bash", {"command": "echo again"}),
        Reply.text("Still going."),
    ]


async def _long_session(client: ReverieClient, model: str) -> str:
    agent = await client.create_agent({"name": "long", "model": model, "tools": [BASH_ONLY]})
    session = await client.create_session({"agent": agent.id})
    await client.send_message(session.id, "run the command many times")
    await client.wait_until_settled(session.id, timeout=120)
    await client.send_message(session.id, "once more")
    await client.wait_until_settled(session.id, timeout=60)
    return session.id


def assert_pairs_kept(request: dict[str, Any]) -> None:
    """Every tool use in the request is answered in the next message, and every tool result
    answers a tool use of the message before it."""
    messages = request["messages"]
    for index, message in enumerate(messages):
        blocks = message["content"] if isinstance(message["content"], list) else []
        if message["role"] == "assistant":
            used = {b["id"] for b in blocks if b.get("type") == "tool_use"}
            if used:
                following = messages[index + 1]["content"]
                answered = {b["tool_use_id"] for b in following if b.get("type") == "tool_result"}
                assert used <= answered, f"tool uses without results: {used - answered}"
        else:
            results = {b["tool_use_id"] for b in blocks if b.get("type") == "tool_result"}
            previous = messages[index - 1]["content"] if index else []
            used = {b["id"] for b in previous if b.get("type") == "tool_use"}
            assert results <= used, f"tool results without tool uses: {results - used}"


async def _assert_session_went_on(
    client: ReverieClient, fake: FakeModelServer, model: str, session_id: str
) -> list[Any]:
    events = await all_events(client, session_id)
    assert_each_once(events)
    assert_spans_closed(events)
    assert "session.error" not in types_of(events)
    idles = [e.payload["stop_reason"] for e in events if e.type == "session.status_idle"]
    assert idles == [{"type": "end_turn"}] * 2
    assert fake.remaining(model) == 0
    uses = [e.id for e in events if e.type == "agent.tool_use"]
    results = [e.payload["tool_use_id"] for e in events if e.type == "agent.tool_result"]
    assert sorted(uses) == sorted(results) and len(uses) == STEPS + 1
    for request in fake.requests(model):
        assert_pairs_kept(request)
    # Without compaction the transcript would be several windows long.
    outputs = [e for e in events if e.type == "agent.tool_result"]
    assert sum(len(str(e.payload["content"])) for e in outputs) // 4 > 2 * WINDOW
    return events


async def test_a_long_session_compacts_itself_before_the_window_fills(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    """The Models API reports the window (and no API compaction): Reverie summarises the older
    part of the transcript whenever the prompt passes 80% of it; no request is ever too long."""
    fake_model.set_context_window(model_name, WINDOW)
    fake_model.script(model_name, _long_session_script())
    session_id = await _long_session(reverie, model_name)

    events = await _assert_session_went_on(reverie, fake_model, model_name, session_id)
    assert fake_model.too_long(model_name) == 0
    compacted = types_of(events).count("agent.thread_context_compacted")
    assert compacted >= 2
    assert len(fake_model.summary_requests(model_name)) >= compacted
    after = [
        r
        for r in fake_model.requests(model_name)
        if r["messages"][0]["content"][0].get("text", "").startswith(SUMMARY_PREAMBLE)
    ]
    assert after, "no request was sent from a summary"
    assert all(FakeModelServer.counted_tokens(r) <= WINDOW for r in fake_model.requests(model_name))
    # Summarising calls are part of the session's usage.
    session = await reverie.get_session(session_id)
    assert session.usage.output_tokens > sum(
        e.payload["model_usage"]["output_tokens"]
        for e in events
        if e.type == "span.model_request_end"
    )


async def test_prompt_too_long_compacts_and_tries_the_step_again(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    """The window is reported nowhere: the model's 400 "prompt is too long" is what tells.
    The step is compacted and tried again, and the session goes on as if nothing happened."""
    fake_model.set_context_window(model_name, WINDOW, reported=False)
    fake_model.script(model_name, _long_session_script())
    session_id = await _long_session(reverie, model_name)

    events = await _assert_session_went_on(reverie, fake_model, model_name, session_id)
    assert fake_model.too_long(model_name) >= 1
    assert types_of(events).count("agent.thread_context_compacted") >= 1
    # Every refused request was followed by one that fits.
    requests = fake_model.requests(model_name)
    for index, request in enumerate(requests):
        if FakeModelServer.counted_tokens(request) > WINDOW:
            assert FakeModelServer.counted_tokens(requests[index + 1]) <= WINDOW


async def test_the_api_compacts_where_the_model_supports_it(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    """`context_management` with `compact_20260112` at the threshold; each answer's `compaction`
    block is sent back verbatim (the fake refuses an altered one) and the request starts from
    it; Reverie never summarises by itself."""
    fake_model.set_context_window(model_name, WINDOW, api_compaction=True)
    fake_model.script(model_name, _long_session_script())
    session_id = await _long_session(reverie, model_name)

    events = await _assert_session_went_on(reverie, fake_model, model_name, session_id)
    requests = fake_model.requests(model_name)
    assert fake_model.api_compactions(model_name) >= 2
    assert types_of(events).count("agent.thread_context_compacted") == (
        fake_model.api_compactions(model_name)
    )
    assert fake_model.summary_requests(model_name) == []
    assert fake_model.too_long(model_name) == 0
    for request in requests:
        edits = request["context_management"]["edits"]
        assert edits == [
            {
                "type": "compact_20260112",
                "trigger": {"type": "input_tokens", "value": WINDOW * 8 // 10},
            }
        ]
    from_block = [r for r in requests if r["messages"][0]["content"][0]["type"] == "compaction"]
    assert from_block and all(r["messages"][0]["role"] == "assistant" for r in from_block)
    # The compaction's own tokens count in the session's usage.
    session = await reverie.get_session(session_id)
    assert session.usage.output_tokens >= 20 * fake_model.api_compactions(model_name)


async def _compactable_session(client: ReverieClient, model: str) -> tuple[str, str]:
    agent_id = await new_agent(client, model)
    session = await client.create_session({"agent": agent_id})
    for text in ("one", "two", "three"):
        await client.send_message(session.id, text)
        await client.wait_until_settled(session.id)
    return agent_id, session.id


async def test_a_compaction_is_recorded_once_whatever_the_attempts(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    """The activity run twice with the workflow's id (a retry after a lost worker): one summary,
    one row, one event, usage counted once."""
    agent_id, session_id = await _compactable_session(reverie, model_name)
    settings = reverie.settings
    client = model_client(settings)
    activities = CompactionActivities(
        reverie.pool, settings, client, ModelCatalog(client, settings)
    )
    params = CompactInput(
        session_id=session_id,
        agent_id=agent_id,
        agent_version=1,
        compaction_id=f"cmpct_{session_id}",
        reason="context_window_exceeded",
    )
    before = (await reverie.get_session(session_id)).usage
    env = ActivityEnvironment()
    try:
        first = await env.run(activities.compact_transcript, params)
        second = await env.run(activities.compact_transcript, params)
    finally:
        await client.close()

    assert first.compacted and second.compacted
    assert len(fake_model.summary_requests(model_name)) == 1
    rows = await reverie.pool.fetchval(
        "SELECT count(*) FROM compactions WHERE session_id = $1", session_id
    )
    assert rows == 1
    events = await all_events(reverie, session_id)
    assert types_of(events).count("agent.thread_context_compacted") == 1
    after = (await reverie.get_session(session_id)).usage
    summary = fake_model.summary_requests(model_name)[0]
    assert after.input_tokens - before.input_tokens == FakeModelServer.counted_tokens(summary)


async def test_a_worker_killed_right_after_compacting_records_nothing_twice(
    own_queue: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(
        model_name,
        [
            Reply.text("First."),
            Reply.text("Second."),
            Reply.text("Filled the wi", stop_reason="model_context_window_exceeded"),
            Reply.text("ndow, and finished."),
        ],
    )
    agent_id = await new_agent(own_queue, model_name)
    options = SessionOptions(heartbeat_timeout_seconds=2)
    env = {TEST_HOOK_FREEZE_AFTER_COMPACTION: "1"}
    async with worker_process(own_queue.settings, env=env) as frozen:
        session = await own_queue.create_session({"agent": agent_id}, options=options)
        for text in ("one", "two"):
            await own_queue.send_message(session.id, text)
            await own_queue.wait_until_settled(session.id)
        await own_queue.send_message(session.id, "three")
        # Committed; Temporal has not heard of it.
        await wait_for_event(own_queue, session.id, "agent.thread_context_compacted")
        await kill(frozen)
    async with worker_process(own_queue.settings):
        done = await own_queue.wait_until_settled(session.id, timeout=60)

    assert done.status == "idle"
    events = await all_events(own_queue, session.id)
    assert_each_once(events)
    assert types_of(events).count("agent.thread_context_compacted") == 1
    assert len(fake_model.summary_requests(model_name)) == 1
    assert events[-1].payload["stop_reason"] == {"type": "end_turn"}
    assert fake_model.remaining(model_name) == 0


def _row(seq: int, role: str, *blocks: dict[str, Any]) -> Row:
    return Row(seq, role, list(blocks))


def _use(tool_id: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": tool_id, "name": "bash", "input": {}}


def _result(tool_id: str) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": tool_id, "content": "x" * 400}


def test_the_cut_never_parts_a_tool_use_from_its_result() -> None:
    text = {"type": "text", "text": "hello"}
    rows = [
        _row(1, "user", text),
        _row(2, "assistant", _use("a")),
        _row(3, "user", _result("a")),
        _row(4, "assistant", _use("b"), _use("c")),
        # A late result of an older tool use: no cut may leave it without its tool use.
        _row(5, "user", _result("b")),
        _row(6, "assistant", text),
        _row(7, "user", _result("c")),
        _row(8, "assistant", _use("d")),
    ]
    for keep in (0, 50, 150, 300, 10_000):
        cut = choose_cut(rows, keep)
        assert cut is not None and rows[cut].role == "assistant"
        kept = rows[cut:]
        used = {b["id"] for r in kept for b in r.content if b["type"] == "tool_use"}
        answered = {b["tool_use_id"] for r in kept for b in r.content if b["type"] == "tool_result"}
        assert answered <= used
    # Row 7 answers "c" of row 4: a cut at row 6 is invalid.
    assert choose_cut(rows, 10_000) == 1
    assert choose_cut(rows, 0) == 7
    assert choose_cut([_row(1, "user", text)], 100) is None


async def test_an_interrupt_stops_a_compaction_and_it_records_nothing(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(
        model_name,
        [
            Reply.text("First."),
            Reply.text("Filled the wi", stop_reason="model_context_window_exceeded"),
            Reply.text("A fresh answer."),
        ],
    )
    fake_model.delay_summaries(model_name, 30)
    agent_id = await new_agent(reverie, model_name)
    session_id = (await reverie.create_session({"agent": agent_id})).id
    await reverie.send_message(session_id, "one")
    await reverie.wait_until_settled(session_id)
    await reverie.send_message(session_id, "two")
    await _wait_for_summary_request(fake_model, model_name)
    await reverie.interrupt(session_id)
    done = await reverie.wait_until_settled(session_id, timeout=20)
    assert done.status == "idle"
    await reverie.send_message(session_id, "three")
    await reverie.wait_until_settled(session_id)

    events = await all_events(reverie, session_id)
    assert_each_once(events)
    assert_spans_closed(events)
    assert "agent.thread_context_compacted" not in types_of(events)
    assert "session.error" not in types_of(events)
    assert len(fake_model.summary_requests(model_name)) == 1
    idles = [e.payload["stop_reason"] for e in events if e.type == "session.status_idle"]
    assert idles == [{"type": "end_turn"}] * 3
    assert events[-2].type == "span.model_request_end"
    assert fake_model.remaining(model_name) == 0
    compacted = await reverie.pool.fetchval(
        "SELECT count(*) FROM compactions WHERE session_id = $1", session_id
    )
    assert compacted == 0


async def _wait_for_summary_request(fake: FakeModelServer, model: str) -> None:
    for _ in range(400):
        if fake.summary_requests(model):
            return
        await asyncio.sleep(0.05)
    raise TimeoutError("no summarising request")


async def test_thresholds_are_settings(
    own_queue: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    """REVERIE_COMPACTION_THRESHOLD_TOKENS applies to every model (here, ones whose window
    nothing reports); REVERIE_COMPACTION_MODEL_THRESHOLDS overrides it per model."""
    other = f"{model_name}-other"
    env = {
        "REVERIE_COMPACTION_THRESHOLD_TOKENS": "1200",
        "REVERIE_COMPACTION_MODEL_THRESHOLDS": f"{other}=1000000",
    }
    script = [Reply.tool_use("bash", {"command": COMMAND}) for _ in range(5)]
    compacted: dict[str, int] = {}
    async with worker_process(own_queue.settings, env=env):
        for model in (model_name, other):
            fake_model.script(model, [*script, Reply.text("done")])
            agent = await own_queue.create_agent(
                {"name": "threshold", "model": model, "tools": [BASH_ONLY]}
            )
            session = await own_queue.create_session({"agent": agent.id})
            await own_queue.send_message(session.id, "go")
            await own_queue.wait_until_settled(session.id, timeout=60)
            events = await all_events(own_queue, session.id)
            assert events[-1].payload["stop_reason"] == {"type": "end_turn"}
            compacted[model] = types_of(events).count("agent.thread_context_compacted")
    assert compacted[model_name] >= 1
    assert compacted[other] == 0
    assert all(
        FakeModelServer.counted_tokens(r) < 1200 + 600 for r in fake_model.requests(model_name)
    )


def test_threshold_settings_are_checked() -> None:
    settings = Settings(REVERIE_COMPACTION_MODEL_THRESHOLDS="claude-a=1000, vendor/model=2000")
    assert settings.compaction_threshold_for("claude-a") == 1000
    assert settings.compaction_threshold_for("vendor/model") == 2000
    assert settings.compaction_threshold_for("claude-b") is None
    with pytest.raises(ValidationError, match="REVERIE_COMPACTION_MODEL_THRESHOLDS"):
        Settings(REVERIE_COMPACTION_MODEL_THRESHOLDS="claude-a:1000")
    with pytest.raises(ValidationError):
        Settings(REVERIE_COMPACTION_THRESHOLD_TOKENS="0")
