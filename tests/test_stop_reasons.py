"""Every stop reason of the model's answer has a rule (issue 13, item 5), against the real stack."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, get_args

import pytest
from anthropic.types.beta import BetaStopReason
from anthropic.types.beta.sessions import BetaManagedAgentsSessionStatusIdleEvent

from reverie.activities.transcript import SUMMARY_PREAMBLE
from reverie.starter.client import ReverieClient
from reverie.workflows.stop_reasons import STOP_REASON_RULES, UNKNOWN_STOP_REASON_RULE, AnswerRule
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import all_events, assert_each_once, assert_spans_closed, types_of

TOOLSET = {"type": "agent_toolset_20260401", "configs": [{"name": "web_search", "enabled": False}]}


def _tool_use(name: str, tool_input: dict[str, Any]) -> dict[str, Any]:
    return Reply.tool_use(name, tool_input).content[0]


def _work(client: ReverieClient, session_id: str) -> Path:
    return client.settings.workspaces / session_id / "work"


async def _tool_agent(client: ReverieClient, model: str) -> str:
    agent = await client.create_agent({"name": "stops", "model": model, "tools": [TOOLSET]})
    return agent.id


def _results(events: list[Any]) -> dict[str, Any]:
    """Tool use event id -> its one `agent.tool_result` payload."""
    return {e.payload["tool_use_id"]: e.payload for e in events if e.type == "agent.tool_result"}


def _result_text(payload: dict[str, Any]) -> str:
    return "".join(block.get("text", "") for block in payload["content"])


def test_the_table_covers_every_sdk_stop_reason() -> None:
    """A stop reason the SDK adds must be classified here (as the SDK's own tool runner does)."""
    assert set(STOP_REASON_RULES) == set(get_args(BetaStopReason))
    assert STOP_REASON_RULES["max_tokens"] == AnswerRule.CUT_OFF
    assert STOP_REASON_RULES["refusal"] == AnswerRule.REFUSED
    assert STOP_REASON_RULES["pause_turn"] == AnswerRule.RESUME
    assert STOP_REASON_RULES["model_context_window_exceeded"] == AnswerRule.COMPACT
    assert UNKNOWN_STOP_REASON_RULE == AnswerRule.FINAL


async def test_max_tokens_never_runs_a_tool_use_that_may_be_cut_off(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    """The answer's last block, a tool use, may be incomplete: it gets an error result and is not
    run; the complete tool use before it runs; the model is asked again with both results."""
    complete = _tool_use("write", {"file_path": "complete.txt", "content": "whole"})
    cut = _tool_use("write", {"file_path": "cut.txt", "content": "trunc"})
    fake_model.script(
        model_name,
        [
            Reply([{"type": "text", "text": "Writing both."}, complete, cut], "max_tokens"),
            Reply.text("I will send the second one again."),
        ],
    )
    session = await reverie.create_session({"agent": await _tool_agent(reverie, model_name)})
    await reverie.send_message(session.id, "write two files")
    done = await reverie.wait_until_settled(session.id, timeout=30)

    events = await all_events(reverie, session.id)
    assert_each_once(events)
    assert_spans_closed(events)
    uses = [e for e in events if e.type == "agent.tool_use"]
    results = _results(events)
    assert set(results) == {use.id for use in uses}
    first, last = uses
    assert results[first.id]["is_error"] is False
    assert results[last.id]["is_error"] is True
    assert "cut off at max_tokens" in _result_text(results[last.id])
    assert "was not run" in _result_text(results[last.id])
    assert (_work(reverie, session.id) / "complete.txt").read_text() == "whole"
    assert not (_work(reverie, session.id) / "cut.txt").exists()
    # The turn went on: the model saw both results.
    second = fake_model.requests(model_name)[1]["messages"][-1]["content"]
    assert {b["tool_use_id"] for b in second if b["type"] == "tool_result"} == {first.id, last.id}
    assert done.status == "idle"
    assert events[-1].payload["stop_reason"] == {"type": "end_turn"}


async def test_refusal_idles_with_refusal_and_runs_none_of_its_tools(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    details = {"type": "refusal", "category": "cyber", "explanation": "Not this."}
    refused = _tool_use("write", {"file_path": "refused.txt", "content": "no"})
    fake_model.script(
        model_name,
        [Reply([refused], "refusal", stop_details=details), Reply.text("Something else, then.")],
    )
    session = await reverie.create_session({"agent": await _tool_agent(reverie, model_name)})
    await reverie.send_message(session.id, "do the bad thing")
    done = await reverie.wait_until_settled(session.id, timeout=30)

    events = await all_events(reverie, session.id)
    idle = events[-1]
    assert idle.type == "session.status_idle"
    assert idle.payload["stop_reason"] == {"type": "refusal"}
    assert idle.payload["stop_details"] == details
    # The wire shape of the hosted API's idle event.
    BetaManagedAgentsSessionStatusIdleEvent.model_validate(
        {"id": idle.id, "processed_at": idle.processed_at, "type": idle.type, **idle.payload}
    )
    assert done.status == "idle"
    assert not (_work(reverie, session.id) / "refused.txt").exists()
    use = next(e for e in events if e.type == "agent.tool_use")
    result = _results(events)[use.id]
    assert result["is_error"] is True
    assert "stop_reason refusal" in _result_text(result)
    assert len(fake_model.requests(model_name)) == 1

    # The next turn's request is valid: the refused tool use has its result.
    await reverie.send_message(session.id, "something else")
    await reverie.wait_until_settled(session.id, timeout=30)
    messages = fake_model.requests(model_name)[1]["messages"]
    assert messages[1]["content"][0]["id"] == use.id
    assert messages[2]["content"][0]["tool_use_id"] == use.id


async def test_pause_turn_continues_with_the_transcript_as_it_is(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(
        model_name,
        [Reply.text("Searching, part one", stop_reason="pause_turn"), Reply.text("and done.")],
    )
    session = await reverie.create_session({"agent": await _tool_agent(reverie, model_name)})
    await reverie.send_message(session.id, "a long search")
    await reverie.wait_until_settled(session.id, timeout=30)

    first, second = fake_model.requests(model_name)
    # The paused answer goes back last, as it is, for the model to continue.
    assert second["messages"][:-1] == _without_cache(first["messages"])
    last = second["messages"][-1]
    assert last["role"] == "assistant"
    assert last["content"][0]["text"] == "Searching, part one"
    events = await all_events(reverie, session.id)
    assert [e.payload["content"][0]["text"] for e in events if e.type == "agent.message"] == [
        "Searching, part one",
        "and done.",
    ]
    assert types_of(events).count("session.status_idle") == 1
    assert events[-1].payload["stop_reason"] == {"type": "end_turn"}


def _without_cache(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            **m,
            "content": [{k: v for k, v in b.items() if k != "cache_control"} for b in m["content"]],
        }
        for m in messages
    ]


async def test_unknown_stop_reason_ends_the_turn_and_is_logged(
    reverie: ReverieClient,
    fake_model: FakeModelServer,
    model_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    use = _tool_use("write", {"file_path": "future.txt", "content": "?"})
    fake_model.script(model_name, [Reply([use], "a_stop_reason_from_the_future")])
    session = await reverie.create_session({"agent": await _tool_agent(reverie, model_name)})
    with caplog.at_level(logging.WARNING):
        await reverie.send_message(session.id, "hello")
        await reverie.wait_until_settled(session.id, timeout=30)

    events = await all_events(reverie, session.id)
    assert events[-1].payload["stop_reason"] == {"type": "end_turn"}
    assert not (_work(reverie, session.id) / "future.txt").exists()
    (result,) = _results(events).values()
    assert result["is_error"] is True
    assert len(fake_model.requests(model_name)) == 1
    assert any(
        "a_stop_reason_from_the_future" in record.getMessage() and session.id in record.getMessage()
        for record in caplog.records
    )


async def test_context_window_stop_compacts_then_continues(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    fake_model.script(
        model_name,
        [
            Reply.text("First answer."),
            Reply.text(
                "A long answer that filled the win", stop_reason="model_context_window_exceeded"
            ),
            Reply.text("...dow, finished."),
        ],
    )
    session = await reverie.create_session({"agent": await _tool_agent(reverie, model_name)})
    await reverie.send_message(session.id, "one")
    await reverie.wait_until_settled(session.id, timeout=30)
    await reverie.send_message(session.id, "two, at length")
    await reverie.wait_until_settled(session.id, timeout=30)

    events = await all_events(reverie, session.id)
    assert types_of(events).count("agent.thread_context_compacted") == 1
    assert len(fake_model.summary_requests(model_name)) >= 1
    last = fake_model.requests(model_name)[-1]["messages"]
    assert last[0]["content"][0]["text"].startswith(SUMMARY_PREAMBLE)
    assert last[1]["content"][-1]["text"].startswith("A long answer")
    assert last[-1]["content"][0]["text"] == "Continue."
    assert events[-1].payload["stop_reason"] == {"type": "end_turn"}
    assert types_of(events).count("session.status_idle") == 2
