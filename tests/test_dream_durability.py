"""Dreams that do not go to plan: cancel (and the output store guarded while running), model
errors (429 and 529 retried; 500s past the attempts fail the dream with its partial output
kept), each input error type, the `dream.completed` / `dream.failed` webhooks, and a worker
killed while a dream reads its sessions, then while it consolidates (no finding lost, no call
repeated for a kept finding, no memory written twice)."""

from __future__ import annotations

import asyncio

import pytest

from reverie.models.errors import ConflictError, InvalidRequestError
from reverie.service.client import ReverieClient
from reverie.store import webhooks
from tests.dream_support import contents, findings, operations, session_with, store_with
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import kill, worker_process


def dream_body(store: str, sessions: list[str], model: str) -> dict[str, object]:
    return {
        "inputs": [
            {"type": "memory_store", "memory_store_id": store},
            {"type": "sessions", "session_ids": sessions},
        ],
        "model": model,
    }


async def until(check, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.1)


async def test_cancel_model_errors_partial_output_and_webhooks(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    # An endpoint that wants dream events (written with the store: the URL is never reached,
    # only the deliveries it is owed are looked at).
    hook = await webhooks.create_endpoint(
        reverie.pool,
        url="https://dreams.invalid/hook",
        enabled_events=["dream.completed", "dream.failed"],
        name="dreams",
        description="",
        signing_secret="whsec_dGVzdA==",
        created_by="tests",
    )
    agent = (await reverie.create_agent({"name": "dreamer", "model": model_name})).id
    store = await store_with(reverie, "Durable", {"/alpha/a.md": "old alpha"})
    session = await session_with(reverie, agent, store, "Alpha and beta matter.")

    # Cancel while a session is being read: canceled at once, the output store kept; while it
    # ran, its output store could not be deleted.
    slow = f"{model_name}-slow"
    fake_model.script(slow, [Reply.tool_use("record_findings", {"findings": []}, delay=30)])
    dream = await reverie.create_dream(dream_body(store, [session], slow))
    await fake_model.wait_for_requests(slow, 1)
    running = await reverie.get_dream(dream.id)
    assert running.status == "running" and running.outputs
    with pytest.raises(ConflictError, match="still running"):
        await reverie.delete_memory_store(running.outputs[0].memory_store_id)
    canceled = await reverie.cancel_dream(dream.id)
    assert canceled.status == "canceled" and canceled.ended_at is not None
    assert (await reverie.wait_for_dream(dream.id)).status == "canceled"
    assert await contents(reverie, running.outputs[0].memory_store_id) == {
        "/alpha/a.md": "old alpha"
    }
    with pytest.raises(InvalidRequestError, match="only a pending or running"):
        await reverie.cancel_dream(dream.id)

    # A 429 and a 529 are retried; 500s past the attempts fail the dream with the model's
    # error type, and what the first topic wrote stays in the output store.
    fake_model.script(
        model_name,
        [
            Reply.error(429, retry_after=0),
            Reply.error(529, retry_after=0),
            findings(("alpha", "Alpha is new", "alpha"), ("beta", "Beta too", "beta")),
            operations(
                {"op": "update", "path": "/alpha/a.md", "content": "new alpha",
                 "supporting_sessions": [session]}
            ),
        ]
        + [Reply.error(500, retry_after=0)] * 4,
    )  # fmt: skip
    failed = await reverie.wait_for_dream(
        (await reverie.create_dream(dream_body(store, [session], model_name))).id
    )
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.type == "model_request_failed_error", failed.error
    assert failed.usage.input_tokens > 0
    assert await contents(reverie, failed.outputs[0].memory_store_id) == {
        "/alpha/a.md": "new alpha"
    }
    assert await contents(reverie, store) == {"/alpha/a.md": "old alpha"}
    assert fake_model.remaining(model_name) == 0

    # A dream with nothing to remember completes (one call, no topic).
    fake_model.script(model_name, [findings()])
    quiet = await reverie.wait_for_dream(
        (await reverie.create_dream(dream_body(store, [session], model_name))).id
    )
    assert quiet.status == "completed" and (await reverie.dream_diff(quiet.id)).entries == []
    # Its output store deleted: nothing to show, and nothing (least of all "remove everything")
    # to apply.
    await reverie.delete_memory_store(quiet.outputs[0].memory_store_id)
    assert (await reverie.dream_diff(quiet.id)).entries == []
    with pytest.raises(InvalidRequestError, match="no longer exists"):
        await reverie.apply_dream(quiet.id)
    assert (await reverie.discard_dream(quiet.id)).action == "discard"  # nothing to archive
    assert await contents(reverie, store) == {"/alpha/a.md": "old alpha"}

    # Announced once each, with the final status: failed and completed (not the canceled one).
    rows = await reverie.pool.fetch(
        "SELECT event_type, data ->> 'id' AS id FROM webhook_deliveries WHERE endpoint_id = $1",
        hook.id,
    )
    assert sorted((r["event_type"], r["id"]) for r in rows) == [
        ("dream.completed", quiet.id),
        ("dream.failed", failed.id),
    ]
    await webhooks.delete_endpoint(reverie.pool, hook.id)

    # A memory deleted by someone while the dream consolidates: its update is dropped, and the
    # memory is not brought back.
    fake_model.script(
        model_name,
        [
            findings(("alpha", "Alpha v2", "alpha")),
            Reply.tool_use("propose_operations", {"operations": [
                {"op": "update", "path": "/alpha/a.md", "content": "alpha v2",
                 "supporting_sessions": [session]}]}, delay=2),
        ],
    )  # fmt: skip
    seen = len(fake_model.requests(model_name))
    racing = await reverie.create_dream(
        {
            **dream_body(store, [session], model_name),
            "output_behavior": {"type": "update_existing", "memory_store_id": store},
        }
    )
    await fake_model.wait_for_requests(model_name, seen + 2)
    alpha = await reverie.get_memory_by_path(store, "/alpha/a.md")
    await reverie.delete_memory(store, alpha.id)
    assert (await reverie.wait_for_dream(racing.id)).status == "completed"
    assert await contents(reverie, store) == {}
    dropped = (await reverie.dream_diff(racing.id)).dropped
    assert [(d.path, "deleted since it was shown" in d.reason) for d in dropped] == [
        ("/alpha/a.md", True)
    ]


async def test_input_errors_and_a_worker_killed_mid_dream(
    own_queue: ReverieClient,
    reverie: ReverieClient,
    fake_model: FakeModelServer,
    model_name: str,
) -> None:
    client = own_queue  # no worker serves this queue until the test starts one
    agent = (await client.create_agent({"name": "dreamer", "model": model_name})).id
    gone_store = await store_with(client, "Gone", {})
    lonely = await session_with(client, agent, gone_store, "x")
    lost_store = await store_with(client, "Lost session", {})
    # (on the shared queue, whose worker lets it be deleted: its workflow answers the archive)
    lost = await session_with(reverie, agent, lost_store, "y")
    big_store = await store_with(client, "Big", {})
    big_session = await session_with(client, agent, big_store, "z")
    await client.pool.executemany(
        """INSERT INTO memories (id, memory_store_id, path, content, content_sha256,
                                 content_size_bytes, memory_version_id)
           VALUES ($1, $2, $3, 'x', 'sha', 1, $1)""",
        [(f"mem_big{i}", big_store, f"/m/{i}.md") for i in range(2001)],
    )
    await client.pool.execute(
        "UPDATE memory_stores SET memory_count = 2001 WHERE id = $1", big_store
    )
    store = await store_with(client, "Killed", {})
    sessions = sorted(
        [await session_with(client, agent, store, f"keep this, {n}") for n in range(3)]
    )

    pending = await client.create_dream(dream_body(gone_store, [lonely], model_name))
    assert pending.status == "pending" and pending.outputs == []
    gone = await client.create_dream(dream_body(lost_store, [lost], model_name))
    too_big = await client.create_dream(dream_body(big_store, [big_session], model_name))
    await client.delete_memory_store(gone_store)
    await reverie.delete_session(lost)
    fake_model.script(
        model_name,
        [findings(("k", "keep this", "keep this"))] * 2
        + [Reply.tool_use("record_findings", {"findings": [{"topic": "k", "statement": "keep this",
                                                           "evidence": "keep this"}]}, delay=60)]
        + [findings(("k", "keep this", "keep this"))]
        + [operations({"op": "create", "path": "/k/x.md", "content": "keep this",
                       "supporting_sessions": sessions}, delay=60)]
        + [operations({"op": "create", "path": "/k/x.md", "content": "keep this",
                       "supporting_sessions": sessions})],
    )  # fmt: skip
    dream = await client.create_dream(dream_body(store, sessions, model_name))

    async def kept() -> int:
        return await client.pool.fetchval(
            "SELECT count(*) FROM dream_findings WHERE dream_id = $1", dream.id
        )

    async with worker_process(client.settings) as first:
        for failing, error_type in (
            (pending, "input_memory_store_unavailable"),
            (gone, "input_session_unavailable"),
            (too_big, "input_memory_store_too_large"),
        ):
            ended = await client.wait_for_dream(failing.id, timeout=60)
            assert ended.status == "failed" and ended.error is not None
            assert ended.error.type == error_type, ended.error
        await fake_model.wait_for_requests(model_name, 3, timeout=60)
        await until(lambda: _eq(kept(), 2))
        await kill(first)
    # Killed again while the topic is consolidated: its proposal was not kept, so it is asked
    # for again, and written once.
    async with worker_process(client.settings) as second:
        await fake_model.wait_for_requests(model_name, 5, timeout=60)
        assert await kept() == 3
        await kill(second)
    async with worker_process(client.settings):
        done = await client.wait_for_dream(dream.id, timeout=120)
    assert done.status == "completed", done.error
    assert await kept() == 3
    # The kept findings were not asked for again: one retry of the lost read, the topic twice.
    assert len(fake_model.requests(model_name)) == 6
    assert await contents(client, store) == {}
    output = done.outputs[0].memory_store_id
    assert await contents(client, output) == {"/k/x.md": "keep this"}
    assert len((await client.list_memory_versions(output)).data) == 1
    assert (await client.dream_diff(dream.id)).entries[0].supporting_sessions == sessions


async def _eq(value, expected: int) -> bool:  # type: ignore[no-untyped-def]
    return await value == expected
