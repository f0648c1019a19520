"""The official Python SDK drives the memory store routes: every answer fits the SDK's types,
errors arrive with the API's types (and `conflicting_memory_id`), writes name the API key."""

from __future__ import annotations

import hashlib
from typing import Any

import anthropic
import pytest
from anthropic.types.beta import (
    BetaManagedAgentsDeletedMemoryStore,
    BetaManagedAgentsMemoryStore,
    BetaManagedAgentsSession,
)
from anthropic.types.beta.memory_stores import (
    BetaManagedAgentsDeletedMemory,
    BetaManagedAgentsMemory,
    BetaManagedAgentsMemoryListItem,
    BetaManagedAgentsMemoryVersion,
)
from anthropic.types.beta.sessions import BetaManagedAgentsSessionResource

from reverie.starter.client import ReverieClient
from tests.api_support import Api
from tests.sdk_conformance import assert_fits


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def raw(call: Any) -> Any:
    response = await call
    return response.http_response.json()


def error_body(error: anthropic.APIStatusError) -> dict[str, Any]:
    return error.response.json()


async def test_stores_through_the_sdk(sdk: anthropic.AsyncAnthropic) -> None:
    stores = sdk.beta.memory_stores
    created = await raw(
        stores.with_raw_response.create(
            name="SDK notes", description="from the SDK", metadata={"k": "v"}
        )
    )
    assert_fits(created, BetaManagedAgentsMemoryStore)
    store_id = created["id"]
    got = await stores.retrieve(store_id)
    assert (got.name, got.description, got.metadata) == ("SDK notes", "from the SDK", {"k": "v"})
    updated = await stores.update(store_id, metadata={"k": None, "j": "w"}, description="")
    assert updated.metadata == {"j": "w"} and updated.description == ""
    listed = await raw(stores.with_raw_response.list(limit=100))
    assert_fits(listed["data"], list[BetaManagedAgentsMemoryStore])
    assert store_id in [s["id"] for s in listed["data"]]
    assert store_id in [s.id async for s in stores.list(limit=1)]
    archived = await stores.archive(store_id)
    assert archived.archived_at is not None
    deleted = await raw(stores.with_raw_response.delete(store_id))
    assert_fits(deleted, BetaManagedAgentsDeletedMemoryStore)
    with pytest.raises(anthropic.NotFoundError):
        await stores.retrieve(store_id)
    with pytest.raises(anthropic.BadRequestError) as caught:
        await stores.create(name="")
    assert error_body(caught.value)["error"]["type"] == "invalid_request_error"


async def test_memories_through_the_sdk(sdk: anthropic.AsyncAnthropic, api: Api) -> None:
    store = await sdk.beta.memory_stores.create(name="mem api")
    memories = sdk.beta.memory_stores.memories
    made = await raw(
        memories.with_raw_response.create(store.id, path="/notes/a.md", content="alpha")
    )
    assert_fits(made, BetaManagedAgentsMemory)
    assert made["content"] is None and made["content_sha256"] == sha("alpha")
    full = await raw(memories.with_raw_response.retrieve(made["id"], memory_store_id=store.id))
    assert_fits(full, BetaManagedAgentsMemory)
    assert full["content"] == "alpha"
    basic = await memories.retrieve(made["id"], memory_store_id=store.id, view="basic")
    assert basic.content is None

    with pytest.raises(anthropic.ConflictError) as caught:
        await memories.create(store.id, path="/notes/a.md", content="again")
    body = error_body(caught.value)
    assert body["error"]["type"] == "memory_path_conflict_error"
    assert body["error"]["conflicting_memory_id"] == made["id"]

    updated = await memories.update(
        made["id"],
        memory_store_id=store.id,
        content="beta",
        precondition={"type": "content_sha256", "content_sha256": sha("alpha")},
        view="full",
    )
    assert updated.content == "beta" and updated.id == made["id"]
    with pytest.raises(anthropic.ConflictError) as caught:
        await memories.update(
            made["id"],
            memory_store_id=store.id,
            content="gamma",
            precondition={"type": "content_sha256", "content_sha256": sha("alpha")},
        )
    assert error_body(caught.value)["error"]["type"] == "memory_precondition_failed_error"
    same = await memories.update(
        made["id"],
        memory_store_id=store.id,
        content="beta",
        precondition={"type": "content_sha256", "content_sha256": sha("alpha")},
    )
    assert same.memory_version_id == updated.memory_version_id
    renamed = await memories.update(made["id"], memory_store_id=store.id, path="/b.md")
    assert renamed.path == "/b.md"
    await memories.create(store.id, path="/notes/deep/c.md", content="c")

    listed = await raw(memories.with_raw_response.list(store.id, depth=1))
    assert_fits(listed["data"], list[BetaManagedAgentsMemoryListItem])
    assert [(i["type"], i["path"]) for i in listed["data"]] == [
        ("memory", "/b.md"),
        ("memory_prefix", "/notes/"),
    ]
    everything = [m async for m in memories.list(store.id, limit=1, view="full")]
    assert [(m.path, m.content) for m in everything] == [
        ("/b.md", "beta"),
        ("/notes/deep/c.md", "c"),
    ]
    prefixed = await memories.list(store.id, path_prefix="/notes/")
    assert [m.path for m in prefixed.data] == ["/notes/deep/c.md"]
    with pytest.raises(anthropic.BadRequestError):
        await memories.list(store.id, path_prefix="/notes")

    with pytest.raises(anthropic.ConflictError) as caught:
        await memories.delete(
            made["id"], memory_store_id=store.id, expected_content_sha256=sha("x")
        )
    assert error_body(caught.value)["error"]["type"] == "memory_precondition_failed_error"
    deleted = await raw(
        memories.with_raw_response.delete(
            made["id"], memory_store_id=store.id, expected_content_sha256=sha("beta")
        )
    )
    assert_fits(deleted, BetaManagedAgentsDeletedMemory)
    with pytest.raises(anthropic.NotFoundError):
        await memories.retrieve(made["id"], memory_store_id=store.id)
    with pytest.raises(anthropic.BadRequestError) as caught:
        await memories.create(store.id, path="relative.md", content="x")
    assert "must start with /" in error_body(caught.value)["error"]["message"]
    with pytest.raises(anthropic.BadRequestError):
        await memories.create(store.id, path="/big", content="x" * 102_401)


async def test_versions_through_the_sdk(
    sdk: anthropic.AsyncAnthropic, api: Api, reverie: ReverieClient
) -> None:
    store = await sdk.beta.memory_stores.create(name="versions api")
    memories = sdk.beta.memory_stores.memories
    versions = sdk.beta.memory_stores.memory_versions
    made = await memories.create(store.id, path="/v.md", content="one")
    await memories.update(made.id, memory_store_id=store.id, content="two")
    await memories.delete(made.id, memory_store_id=store.id)

    listed = await raw(versions.with_raw_response.list(store.id, memory_id=made.id))
    assert_fits(listed["data"], list[BetaManagedAgentsMemoryVersion])
    assert [v["operation"] for v in listed["data"]] == ["deleted", "modified", "created"]
    key_id = api.key.split(".")[0]
    assert {v["created_by"]["api_key_id"] for v in listed["data"]} == {key_id}
    assert all(v["created_by"]["type"] == "api_actor" for v in listed["data"])
    mine = [v async for v in versions.list(store.id, api_key_id=key_id, limit=1)]
    assert len(mine) == 3
    created = [v async for v in versions.list(store.id, operation="created")]
    assert [v.memory_id for v in created] == [made.id]
    none = await versions.list(store.id, session_id="sesn_nobody")
    assert none.data == []

    first = listed["data"][-1]
    one = await raw(versions.with_raw_response.retrieve(first["id"], memory_store_id=store.id))
    assert_fits(one, BetaManagedAgentsMemoryVersion)
    assert one["content"] == "one"
    redacted = await raw(versions.with_raw_response.redact(first["id"], memory_store_id=store.id))
    assert_fits(redacted, BetaManagedAgentsMemoryVersion)
    assert redacted["content"] is None and redacted["path"] is None
    assert redacted["redacted_by"] == {"type": "api_actor", "api_key_id": key_id}

    live = await memories.create(store.id, path="/live.md", content="here")
    with pytest.raises(anthropic.BadRequestError) as caught:
        await versions.redact(live.memory_version_id, memory_store_id=store.id)
    assert "current version" in error_body(caught.value)["error"]["message"]
    with pytest.raises(anthropic.NotFoundError):
        await versions.retrieve("memver_nope", memory_store_id=store.id)


async def test_sessions_take_memory_stores_through_the_sdk(
    sdk: anthropic.AsyncAnthropic, model_name: str
) -> None:
    store = await sdk.beta.memory_stores.create(name="Session Store", description="for agents")
    agent = await sdk.beta.agents.create(name="m", model=model_name)
    session = await raw(
        sdk.beta.sessions.with_raw_response.create(
            agent=agent.id,
            environment_id="env_default",
            resources=[
                {
                    "type": "memory_store",
                    "memory_store_id": store.id,
                    "access": "read_only",
                    "instructions": "Look here first.",
                }
            ],
        )
    )
    assert_fits(session, BetaManagedAgentsSession)
    (resource,) = session["resources"]
    assert resource == {
        "type": "memory_store",
        "memory_store_id": store.id,
        "access": "read_only",
        "instructions": "Look here first.",
        "name": "Session Store",
        "description": "for agents",
        "mount_path": "/mnt/memory/session-store",
    }
    listed = await raw(sdk.beta.sessions.resources.with_raw_response.list(session["id"]))
    assert_fits(listed["data"], list[BetaManagedAgentsSessionResource])
    assert listed["data"] == [resource]
    one = await sdk.beta.sessions.resources.retrieve(store.id, session_id=session["id"])
    assert one.type == "memory_store" and one.mount_path == "/mnt/memory/session-store"
    with pytest.raises(anthropic.NotFoundError):
        await sdk.beta.sessions.resources.retrieve("memstore_other", session_id=session["id"])
    with pytest.raises(anthropic.BadRequestError) as caught:
        await sdk.beta.sessions.resources.add(session["id"], file_id="file_1", type="file")
    assert "fixed when the session is created" in error_body(caught.value)["error"]["message"]
    with pytest.raises(anthropic.NotFoundError):
        await sdk.beta.sessions.create(
            agent=agent.id,
            environment_id="env_default",
            resources=[{"type": "memory_store", "memory_store_id": "memstore_missing"}],
        )


async def test_hostile_memory_requests_get_clear_refusals(api: Api, reverie: ReverieClient) -> None:
    from tests.test_api_http import assert_error, call

    store = (await reverie.create_memory_store({"name": "hostile"})).id
    memory = await reverie.create_memory(store, {"path": "/a.md", "content": "a"})
    base = f"/v1/memory_stores/{store}"
    refusals = [
        ("GET", f"{base}/memories?depth=deep", None, "depth"),
        ("GET", f"{base}/memories?depth=99", None, "depth"),
        ("GET", f"{base}/memories?view=everything", None, "view"),
        ("GET", f"{base}/memories?limit=1000", None, "limit"),
        ("GET", f"{base}/memories?page=bm9wZQ", None, "cursor"),
        ("GET", f"{base}/memories?path_prefix=notes/", None, "path_prefix"),
        ("GET", f"{base}/memory_versions?operation=renamed", None, "operation"),
        ("GET", f"{base}/memory_versions?page=WzEsMl0", None, "cursor"),
        ("GET", f"{base}/memory_versions?created_at_gte=yesterday", None, "created_at_gte"),
        ("POST", f"{base}/memories", {"path": "/b", "content": "x", "colour": 1}, "colour"),
        ("POST", f"{base}/memories", {"path": "/b"}, "content"),
        ("POST", f"{base}/memories", {"path": "/b\u0000", "content": "x"}, "NUL"),
        ("POST", f"{base}/memories", {"path": 7, "content": "x"}, "path"),
        (
            "POST",
            f"{base}/memories/{memory.id}",
            {"precondition": {"type": "etag"}},
            "precondition",
        ),
        ("DELETE", f"{base}/memories/{memory.id}?expected_content_sha256=zz", None, "SHA-256"),
        ("POST", "/v1/memory_stores", {"name": "x", "description": 5}, "description"),
    ]
    for method, path, body, word in refusals:
        status, _, answer = await call(api, method, path, json=body)
        assert status == 400, (method, path, answer)
        assert_error(answer, "invalid_request_error", word)
    for path in (f"{base}/memories/mem_nope", "/v1/memory_stores/memstore_nope/memories"):
        status, _, answer = await call(api, "GET", path)
        assert status == 404 and answer["error"]["type"] == "not_found_error", answer
    status, _, answer = await call(api, "GET", f"{base}/memories/mem%00x")
    assert status in (400, 404), answer
    assert (await reverie.get_memory(store, memory.id)).content == "a"
