"""Helpers of the dream tests: stores, sessions with a transcript, the fake model's answers."""

from __future__ import annotations

import uuid
from typing import Any

from reverie.service.client import ReverieClient
from reverie.store import transcript
from tests.fake_model import Reply


async def store_with(client: ReverieClient, name: str, files: dict[str, str]) -> str:
    store = await client.create_memory_store({"name": name})
    for path, content in files.items():
        await client.create_memory(store.id, {"path": path, "content": content})
    return store.id


async def contents(client: ReverieClient, store_id: str) -> dict[str, str]:
    return {m.path: m.content or "" for m in await client.all_memories(store_id, view="full")}


async def session_with(client: ReverieClient, agent_id: str, store_id: str, said: str) -> str:
    """A session that had the store attached, whose transcript is one exchange (written with the
    transcript store, as a finished turn leaves it)."""
    session = await client.create_session(
        {"agent": agent_id, "resources": [{"type": "memory_store", "memory_store_id": store_id}]}
    )
    await transcript.add(
        client.pool, f"tr_{uuid.uuid4().hex}", session.id, "user", [{"type": "text", "text": said}]
    )
    await transcript.add(
        client.pool,
        f"tr_{uuid.uuid4().hex}",
        session.id,
        "assistant",
        [{"type": "text", "text": "Understood."}],
    )
    return session.id


def findings(*items: tuple[str, str, str]) -> Reply:
    """An extraction answer: (topic, statement, evidence quoted from the session) findings."""
    return Reply.tool_use(
        "record_findings",
        {
            "findings": [
                {"topic": t, "kind": "preference", "statement": s, "evidence": e}
                for t, s, e in items
            ]
        },
    )


def operations(*ops: dict[str, Any], delay: float = 0.0) -> Reply:
    return Reply.tool_use("propose_operations", {"operations": list(ops)}, delay=delay)


def user_text(request: dict[str, Any]) -> str:
    content = request["messages"][0]["content"]
    return content if isinstance(content, str) else "".join(b.get("text", "") for b in content)
