"""The patch baseline (issue 15): one marker stands for every earlier patch in runs that start on
today's code; runs recorded before it keep asking patch by patch (tests/replay replays them)."""

from __future__ import annotations

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from reverie.service.client import ReverieClient
from reverie.workflows import patches
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import new_agent

# The baseline is frozen: a run that recorded its marker was decided by these patches and no
# other. A later patch is asked for by itself (`patched` calls `workflow.patched` for it);
# adding it here would make runs recorded before it replay its new commands.
FROZEN_BASELINE = {
    "model-retries-in-workflow",
    "settle-failed-model-step",
    "adopt-interrupted-inputs",
    "stop-reason-rules",
    "compaction",
    "outcomes",
    "promote-starts-turn",
    "idle-with-answer",
    "created-running",
    "multiagent",
    "threads-require-action",
    "scheduled-run-ends-its-dreams",
    "thread-ended-outside",
    "scheduled-pick-survives-cancel",
}


def test_the_baseline_is_frozen() -> None:
    assert patches.BASELINE_PATCHES == FROZEN_BASELINE
    assert patches.BASELINE_2026_11 not in patches.BASELINE_PATCHES


def test_every_patch_id_is_in_the_baseline_or_after_it() -> None:
    """Each id defined in patches.py is one the baseline covers, or the baseline itself: a new
    patch added later shows up here, for its author to keep it out of the frozen set."""
    ids = {
        value
        for name, value in vars(patches).items()
        if name.isupper() and isinstance(value, str) and name != "__doc__"
    }
    assert ids == FROZEN_BASELINE | {patches.BASELINE_2026_11}


async def _patch_markers(temporal: Client, run_of: str) -> tuple[list[str], int]:
    """The patch ids a workflow recorded, in order, and how many TemporalChangeVersion upserts."""
    history = await temporal.get_workflow_handle(run_of).fetch_history()
    markers: list[str] = []
    upserts = 0
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            attributes = event.marker_recorded_event_attributes
            if attributes.marker_name == "core_patch":
                data = attributes.details["patch-data"].payloads[0].data.decode()
                markers.append(data)
        if event.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES:
            fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
            upserts += "TemporalChangeVersion" in fields.indexed_fields
    return markers, upserts


async def test_a_new_session_records_one_patch_marker(
    reverie: ReverieClient, temporal_client: Client, fake_model: FakeModelServer, model_name: str
) -> None:
    """Created with a message (the first turn's patches), then a turn with a tool use (the
    tool-use and stop-reason patches) and a message sent to an idle session (promotion): only
    the baseline's marker, once, with one TemporalChangeVersion upsert. Before it, the first
    workflow task alone recorded three markers and three upserts."""
    toolset = {
        "type": "agent_toolset_20260401",
        "configs": [{"name": "web_search", "enabled": False}],
    }
    fake_model.script(
        model_name,
        [
            Reply.text("first"),
            Reply.tool_uses([("bash", {"command": "true"})]),
            Reply.text("done"),
        ],
    )
    agent_id = await new_agent(reverie, model_name, tools=[toolset])
    session = await reverie.create_session(
        {"agent": agent_id, "initial_events": [{"type": "user.message", "content": "one"}]}
    )
    await reverie.wait_until_settled(session.id)
    await reverie.send_message(session.id, "two")
    settled = await reverie.wait_until_settled(session.id)
    assert settled.status == "idle"
    types = [e.type for e in await reverie.list_events(session.id, limit=100)]
    assert types.count("agent.tool_result") == 1 and types.count("session.status_idle") == 2

    markers, upserts = await _patch_markers(temporal_client, session.id)
    assert markers == ['{"id":"baseline-2026-11","deprecated":false}']
    assert upserts == 1
