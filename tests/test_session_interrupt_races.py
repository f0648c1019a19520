"""Interrupts at awkward moments: the turn stops, and no input is ever lost.

These sweep the interrupt across the moments where it used to slip through (while the turn's
status is being written; just as the model answers), asserting what must hold at every offset.
"""

from __future__ import annotations

import asyncio
import time

from reverie.starter.client import ReverieClient
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import all_events, assert_each_once, new_agent, types_of
from tests.test_session_tools import tool_agent


async def test_interrupt_sent_with_the_message_stops_the_turn(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    agent_id = await new_agent(reverie, model_name)
    for i in range(8):
        fake_model.script(model_name, [Reply.text(f"answer {i}", delay=1.5)])
        session = await reverie.create_session({"agent": agent_id})

        async def interrupt_soon(delay: float = 0.0005 * i, session_id: str = session.id) -> None:
            await asyncio.sleep(delay)
            await reverie.interrupt(session_id)

        await asyncio.gather(reverie.send_message(session.id, "hello"), interrupt_soon())
        await reverie.wait_until_settled(session.id, timeout=30)
        kinds = types_of(await all_events(reverie, session.id))
        # An interrupt recorded before the message finds nothing to stop (the turn then runs);
        # one recorded after it must stop the turn before the model (1.5 s) answers.
        if kinds.index("user.interrupt") > kinds.index("user.message"):
            assert "agent.message" not in kinds, (i, kinds)
        fake_model.clear(model_name)


async def test_interrupt_as_the_model_answers_loses_no_message(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    for offset in (1.9, 1.97, 2.0, 2.03, 2.1):
        name = f"{model_name}-{offset}"
        fake_model.script(name, [Reply.text("slow answer", delay=2)])
        session = await reverie.create_session({"agent": await new_agent(reverie, name)})
        await reverie.send_message(session.id, "first")
        await fake_model.wait_for_requests(name, 1)
        started = time.monotonic()
        await reverie.send_message(session.id, "sent mid-turn")
        await asyncio.sleep(max(0.0, offset - (time.monotonic() - started)))
        await reverie.interrupt(session.id)
        await reverie.wait_until_settled(session.id, timeout=30)
        await reverie.send_message(session.id, "after the interrupt")
        await reverie.wait_until_settled(session.id, timeout=30)

        last = fake_model.requests(name)[-1]["messages"]
        said = [b.get("text") for m in last if m["role"] == "user" for b in m["content"]]
        assert "sent mid-turn" in said, (offset, said)
        assert said.count("sent mid-turn") == 1, (offset, said)
        assert_each_once(await all_events(reverie, session.id))


async def test_interrupt_as_the_model_asks_for_a_tool_keeps_the_pairs(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    for offset in (1.9, 1.97, 2.0, 2.03):
        name = f"{model_name}-{offset}"
        fake_model.script(
            name,
            [
                Reply.tool_use("bash", {"command": "echo ran > after.txt"}, delay=2),
                Reply.text("ok"),
            ],
        )
        session = await reverie.create_session({"agent": await tool_agent(reverie, name)})
        await reverie.send_message(session.id, "go")
        await fake_model.wait_for_requests(name, 1)
        await asyncio.sleep(offset)
        await reverie.interrupt(session.id)
        await reverie.wait_until_settled(session.id, timeout=30)

        events = await all_events(reverie, session.id)
        uses = [e.id for e in events if e.type == "agent.tool_use"]
        results = [e.payload["tool_use_id"] for e in events if e.type == "agent.tool_result"]
        assert sorted(uses) == sorted(results), (offset, types_of(events))
        assert events[-1].type == "session.status_idle"
        # The next turn's request is valid: every tool use is answered right after it.
        await reverie.send_message(session.id, "carry on")
        await reverie.wait_until_settled(session.id, timeout=30)
        assert (await reverie.get_session(session.id)).status == "idle"
