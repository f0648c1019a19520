"""Memory stores, memories and versions through the service client: every rule, error and
limit of the reference, races between writers, versions after deletion, redaction, restore,
export and import."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest

from reverie.models.errors import (
    InvalidRequestError,
    MemoryPathConflictError,
    MemoryPreconditionFailedError,
    NotFoundError,
)
from reverie.models.memory import Memory, MemoryPrefix, store_slug
from reverie.starter.client import ReverieClient


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def new_store(client: ReverieClient, name: str = "notes", **extra: object) -> str:
    return (await client.create_memory_store({"name": name, **extra})).id


async def test_store_lifecycle(reverie: ReverieClient) -> None:
    store = await reverie.create_memory_store(
        {"name": "Team notes", "description": "what we learnt", "metadata": {"team": "a"}}
    )
    assert store.id.startswith("memstore_") and store.type == "memory_store"
    assert (store.name, store.description, store.metadata) == (
        "Team notes",
        "what we learnt",
        {"team": "a"},
    )
    assert (await reverie.get_memory_store(store.id)) == store

    updated = await reverie.update_memory_store(
        store.id, {"metadata": {"team": None, "owner": "b"}, "description": ""}
    )
    assert updated.metadata == {"owner": "b"} and updated.description == ""
    assert updated.name == "Team notes" and updated.updated_at >= store.updated_at
    renamed = await reverie.update_memory_store(store.id, {"name": "Renamed"})
    assert renamed.name == "Renamed" and renamed.metadata == {"owner": "b"}

    listed = await reverie.list_memory_stores(limit=100)
    assert store.id in [s.id for s in listed.data]

    archived = await reverie.archive_memory_store(store.id)
    assert archived.archived_at is not None
    assert store.id not in [s.id for s in (await reverie.list_memory_stores(limit=100)).data]
    assert store.id in [
        s.id for s in (await reverie.list_memory_stores(limit=100, include_archived=True)).data
    ]
    with pytest.raises(InvalidRequestError, match="archived"):
        await reverie.update_memory_store(store.id, {"name": "again"})
    deleted = await reverie.delete_memory_store(store.id)
    assert deleted.model_dump() == {"type": "memory_store_deleted", "id": store.id}
    with pytest.raises(NotFoundError):
        await reverie.get_memory_store(store.id)


async def test_store_pages(reverie: ReverieClient) -> None:
    made = [await new_store(reverie, f"paged {i}") for i in range(5)]
    seen: list[str] = []
    page = None
    while True:
        listed = await reverie.list_memory_stores(limit=2, page=page)
        seen += [s.id for s in listed.data]
        if not listed.next_page:
            break
        page = listed.next_page
    assert [i for i in seen if i in made] == list(reversed(made))
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"name": ""}, "1 to 255"),
        ({"name": "x" * 256}, "1 to 255"),
        ({"name": "bad\x07name"}, "control"),
        ({"name": "ok", "description": "d" * 1025}, "1024"),
        ({"name": "ok", "metadata": {f"k{i}": "v" for i in range(17)}}, "16 pairs"),
        ({"name": "ok", "colour": "red"}, "colour"),
    ],
)
async def test_store_rules(reverie: ReverieClient, params: dict, message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        await reverie.create_memory_store(params)


async def test_store_description_of_1024_characters(reverie: ReverieClient) -> None:
    store = await reverie.create_memory_store({"name": "d", "description": "d" * 1024})
    assert len(store.description) == 1024


def test_slug() -> None:
    assert store_slug("User Preferences") == "user-preferences"
    assert store_slug("  Q3 -- plans!! ") == "q3-plans"
    assert store_slug("Ünïcode ✓") == "n-code"
    assert store_slug("!!!") == "memory"


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("notes.md", "must start with /"),
        ("/", "empty segment"),
        ("/a//b", "empty segment"),
        ("/a/", "empty segment"),
        ("/a/./b", "'.' segment"),
        ("/a/../b", "'..' segment"),
        ("/" + "/".join(["s"] * 21), "at most 20"),
        ("/" + "é" * 513, "at most 1,024 bytes"),
        ("/a\x01b", "U\\+0001"),
        ("/a\x00b", "NUL|U\\+0000"),
        ("/zero\u200bwidth", "U\\+200B"),
        ("/line\u2028sep", "U\\+2028"),
        ("/e\u0301", "Normalization Form C"),
    ],
)
async def test_path_rules(reverie: ReverieClient, path: str, message: str) -> None:
    store = await new_store(reverie)
    with pytest.raises(InvalidRequestError, match=message):
        await reverie.create_memory(store, {"path": path, "content": "x"})


async def test_path_limits_that_are_allowed(reverie: ReverieClient) -> None:
    store = await new_store(reverie)
    twenty = "/" + "/".join(["s"] * 20)
    longest = "/" + "é" * 511 + "a"  # 1,024 bytes
    assert len(longest.encode()) == 1024
    for path in (twenty, longest, "/Case", "/case", "/ünïcödé/ok.md"):
        made = await reverie.create_memory(store, {"path": path, "content": path})
        assert made.path == path


async def test_content_rules(reverie: ReverieClient) -> None:
    store = await new_store(reverie)
    biggest = "é" * 51_200  # 102,400 bytes
    made = await reverie.create_memory(store, {"path": "/big", "content": biggest})
    assert made.content_size_bytes == 102_400 and made.content_sha256 == sha(biggest)
    assert made.content is None  # create answers the basic view by default
    full = await reverie.get_memory(store, made.id)
    assert full.content == biggest
    with pytest.raises(InvalidRequestError, match="102,400"):
        await reverie.create_memory(store, {"path": "/bigger", "content": biggest + "a"})
    with pytest.raises(InvalidRequestError, match="NUL"):
        await reverie.create_memory(store, {"path": "/nul", "content": "a\x00b"})
    empty = await reverie.create_memory(store, {"path": "/empty", "content": None}, view="full")
    assert empty.content == "" and empty.content_sha256 == sha("")
    with pytest.raises(InvalidRequestError, match="102,400"):
        await reverie.update_memory(store, made.id, {"content": biggest + "a"})


async def test_create_on_a_taken_path_names_the_memory(reverie: ReverieClient) -> None:
    store = await new_store(reverie)
    first = await reverie.create_memory(store, {"path": "/a.md", "content": "one"})
    with pytest.raises(MemoryPathConflictError) as caught:
        await reverie.create_memory(store, {"path": "/a.md", "content": "two"})
    assert caught.value.conflicting_memory_id == first.id
    assert caught.value.status == 409
    body = caught.value.to_dict()
    assert body["error"] == {
        "type": "memory_path_conflict_error",
        "message": caught.value.message,
        "conflicting_memory_id": first.id,
    }
    assert (await reverie.get_memory(store, first.id)).content == "one"


async def test_update_rules(reverie: ReverieClient) -> None:
    store = await new_store(reverie)
    made = await reverie.create_memory(store, {"path": "/a.md", "content": "one"})
    other = await reverie.create_memory(store, {"path": "/b.md", "content": "b"})
    stale = {"type": "content_sha256", "content_sha256": sha("nope")}

    updated = await reverie.update_memory(
        store,
        made.id,
        {
            "content": "two",
            "precondition": {"type": "content_sha256", "content_sha256": sha("one")},
        },
    )
    assert (
        updated.content_sha256 == sha("two") and updated.memory_version_id != made.memory_version_id
    )
    with pytest.raises(MemoryPreconditionFailedError):
        await reverie.update_memory(store, made.id, {"content": "three", "precondition": stale})
    # An update that changes nothing succeeds, precondition or not, and writes no version.
    same = await reverie.update_memory(store, made.id, {"content": "two", "precondition": stale})
    assert same.memory_version_id == updated.memory_version_id
    renamed = await reverie.update_memory(store, made.id, {"path": "/dir/a.md"}, view="full")
    assert (renamed.id, renamed.path, renamed.content) == (made.id, "/dir/a.md", "two")
    with pytest.raises(MemoryPathConflictError) as caught:
        await reverie.update_memory(store, made.id, {"path": "/b.md"})
    assert caught.value.conflicting_memory_id == other.id
    with pytest.raises(InvalidRequestError, match="SHA-256"):
        await reverie.update_memory(
            store,
            made.id,
            {"content": "x", "precondition": {"type": "content_sha256", "content_sha256": "ABC"}},
        )
    with pytest.raises(NotFoundError):
        await reverie.update_memory(store, "mem_nope", {"content": "x"})
    versions = await reverie.list_memory_versions(store, memory_id=made.id)
    assert [v.operation for v in versions.data] == ["modified", "modified", "created"]


async def test_delete_rules_and_versions_after_deletion(reverie: ReverieClient) -> None:
    store = await new_store(reverie)
    made = await reverie.create_memory(store, {"path": "/gone.md", "content": "bye"})
    with pytest.raises(MemoryPreconditionFailedError):
        await reverie.delete_memory(store, made.id, expected_content_sha256=sha("other"))
    with pytest.raises(InvalidRequestError, match="SHA-256"):
        await reverie.delete_memory(store, made.id, expected_content_sha256="zz")
    deleted = await reverie.delete_memory(store, made.id, expected_content_sha256=sha("bye"))
    assert deleted.model_dump() == {"type": "memory_deleted", "id": made.id}
    with pytest.raises(NotFoundError):
        await reverie.get_memory(store, made.id)
    with pytest.raises(NotFoundError):
        await reverie.delete_memory(store, made.id)

    versions = (await reverie.list_memory_versions(store, memory_id=made.id, view="full")).data
    assert [v.operation for v in versions] == ["deleted", "created"]
    gone, created = versions
    assert (gone.content, gone.content_sha256, gone.content_size_bytes) == (None, None, None)
    assert gone.path == "/gone.md"
    assert (created.content, created.content_sha256) == ("bye", sha("bye"))
    assert created.created_by is not None and created.created_by.type == "user_actor"
    # The path is free again: a new memory, a new id.
    again = await reverie.create_memory(store, {"path": "/gone.md", "content": "back"})
    assert again.id != made.id


async def test_the_store_limit(reverie: ReverieClient) -> None:
    small = ReverieClient(
        reverie.temporal,
        reverie.pool,
        reverie.settings.model_copy(update={"memory_max_memories": 3}),
        feed=reverie.feed,
    )
    store = await new_store(small)
    made = [await small.create_memory(store, {"path": f"/{i}", "content": ""}) for i in range(3)]
    with pytest.raises(InvalidRequestError, match="the most a store may hold \\(3\\)"):
        await small.create_memory(store, {"path": "/3", "content": ""})
    await small.delete_memory(store, made[0].id)
    await small.create_memory(store, {"path": "/3", "content": ""})


async def test_archived_store_reads_and_deletes_only(reverie: ReverieClient) -> None:
    store = await new_store(reverie)
    made = await reverie.create_memory(store, {"path": "/a", "content": "a"})
    await reverie.archive_memory_store(store)
    with pytest.raises(InvalidRequestError, match="archived"):
        await reverie.create_memory(store, {"path": "/b", "content": "b"})
    with pytest.raises(InvalidRequestError, match="archived"):
        await reverie.update_memory(store, made.id, {"content": "changed"})
    assert (await reverie.get_memory(store, made.id)).content == "a"
    await reverie.delete_memory(store, made.id)


async def test_list_by_prefix_depth_view_and_pages(reverie: ReverieClient) -> None:
    store = await new_store(reverie)
    paths = [
        "/a.md",
        "/notes/one.md",
        "/notes/two.md",
        "/notes/deep/three.md",
        "/notes/deep/er/four.md",
        "/notes-archive/old.md",
        "/z/last.md",
    ]
    for path in paths:
        await reverie.create_memory(store, {"path": path, "content": path})

    everything = await reverie.list_memories(store, limit=100)
    assert [m.path for m in everything.data] == sorted(paths)
    assert all(isinstance(m, Memory) and m.content is None for m in everything.data)

    notes = await reverie.list_memories(store, path_prefix="/notes/", limit=100)
    assert [m.path for m in notes.data] == [
        "/notes/deep/er/four.md",
        "/notes/deep/three.md",
        "/notes/one.md",
        "/notes/two.md",
    ]
    top = await reverie.list_memories(store, depth=1, limit=100)
    assert [(type(m).__name__, m.path) for m in top.data] == [
        ("Memory", "/a.md"),
        ("MemoryPrefix", "/notes-archive/"),
        ("MemoryPrefix", "/notes/"),
        ("MemoryPrefix", "/z/"),
    ]
    inside = await reverie.list_memories(store, path_prefix="/notes/", depth=1, limit=100)
    assert [m.path for m in inside.data] == ["/notes/deep/", "/notes/one.md", "/notes/two.md"]
    assert isinstance(inside.data[0], MemoryPrefix)
    two = await reverie.list_memories(store, path_prefix="/notes/", depth=2, limit=100)
    assert [m.path for m in two.data] == [
        "/notes/deep/er/",
        "/notes/deep/three.md",
        "/notes/one.md",
        "/notes/two.md",
    ]

    full = await reverie.list_memories(store, view="full", limit=100)
    assert len(full.data) == 7 and all(m.content == m.path for m in full.data)
    seen: list[str] = []
    page = None
    while True:
        listed = await reverie.list_memories(store, depth=1, limit=2, page=page)
        seen += [m.path for m in listed.data]
        if not listed.next_page:
            break
        page = listed.next_page
    assert seen == [m.path for m in top.data]

    with pytest.raises(InvalidRequestError, match="must end with /"):
        await reverie.list_memories(store, path_prefix="/notes")
    with pytest.raises(InvalidRequestError, match="depth"):
        await reverie.list_memories(store, depth=-1)
    with pytest.raises(InvalidRequestError, match="view"):
        await reverie.list_memories(store, view="everything")
    with pytest.raises(NotFoundError):
        await reverie.list_memories("memstore_nope")


async def test_full_view_pages_hold_at_most_20(reverie: ReverieClient) -> None:
    store = await new_store(reverie)
    for i in range(25):
        await reverie.create_memory(store, {"path": f"/m{i:02}", "content": "x"})
    full = await reverie.list_memories(store, view="full", limit=100)
    assert len(full.data) == 20 and full.next_page
    basic = await reverie.list_memories(store, limit=100)
    assert len(basic.data) == 25 and basic.next_page is None


async def test_two_writers_racing_with_preconditions(reverie: ReverieClient) -> None:
    """Both read the same content and update it with its digest as precondition, at once:
    exactly one wins, the other gets the conflict, and the winner's content is kept."""
    store = await new_store(reverie)
    for round_ in range(10):
        made = await reverie.create_memory(store, {"path": f"/race{round_}", "content": "base"})
        guard = {"type": "content_sha256", "content_sha256": made.content_sha256}
        results = await asyncio.gather(
            *(
                reverie.update_memory(
                    store, made.id, {"content": f"writer {w}", "precondition": guard}
                )
                for w in range(2)
            ),
            return_exceptions=True,
        )
        wins = [r for r in results if isinstance(r, Memory)]
        losses = [r for r in results if isinstance(r, MemoryPreconditionFailedError)]
        assert len(wins) == 1 and len(losses) == 1, results
        now = await reverie.get_memory(store, made.id)
        assert now.content_sha256 == wins[0].content_sha256
        versions = await reverie.list_memory_versions(store, memory_id=made.id)
        assert [v.operation for v in versions.data] == ["modified", "created"]


async def test_two_creators_racing_for_a_path(reverie: ReverieClient) -> None:
    store = await new_store(reverie)
    results = await asyncio.gather(
        *(reverie.create_memory(store, {"path": "/same", "content": f"{w}"}) for w in range(4)),
        return_exceptions=True,
    )
    wins = [r for r in results if isinstance(r, Memory)]
    assert len(wins) == 1
    assert all(
        isinstance(r, MemoryPathConflictError) and r.conflicting_memory_id == wins[0].id
        for r in results
        if r is not wins[0]
    )


async def test_version_filters_and_views(reverie: ReverieClient) -> None:
    store = await new_store(reverie)
    a = await reverie.create_memory(store, {"path": "/a", "content": "a1"})
    await reverie.update_memory(store, a.id, {"content": "a2"})
    b = await reverie.create_memory(store, {"path": "/b", "content": "b1"})
    await reverie.delete_memory(store, b.id)
    everything = (await reverie.list_memory_versions(store, limit=100)).data
    assert [(v.memory_id, v.operation) for v in everything] == [
        (b.id, "deleted"),
        (b.id, "created"),
        (a.id, "modified"),
        (a.id, "created"),
    ]
    assert all(v.content is None for v in everything)  # basic by default
    assert all(v.content_sha256 for v in everything if v.operation != "deleted")
    created = await reverie.list_memory_versions(store, operation="created")
    assert [v.memory_id for v in created.data] == [b.id, a.id]
    assert (await reverie.list_memory_versions(store, session_id="sesn_none")).data == []
    first = everything[-1]
    full = await reverie.get_memory_version(store, first.id)
    assert full.content == "a1" and full.path == "/a"
    one = await reverie.list_memory_versions(store, limit=1)
    two = await reverie.list_memory_versions(store, limit=1, page=one.next_page)
    assert [v.id for v in one.data + two.data] == [v.id for v in everything[:2]]
    with pytest.raises(InvalidRequestError, match="operation"):
        await reverie.list_memory_versions(store, operation="renamed")
    with pytest.raises(NotFoundError):
        await reverie.get_memory_version(store, "memver_nope")


async def test_redaction_rules(reverie: ReverieClient) -> None:
    store = await new_store(reverie)
    made = await reverie.create_memory(store, {"path": "/secret", "content": "password=1"})
    with pytest.raises(InvalidRequestError, match="current version"):
        await reverie.redact_memory_version(store, made.memory_version_id)
    updated = await reverie.update_memory(store, made.id, {"content": "no secret"})
    redacted = await reverie.redact_memory_version(store, made.memory_version_id)
    assert redacted.redacted_at is not None
    assert (
        redacted.content,
        redacted.path,
        redacted.content_sha256,
        redacted.content_size_bytes,
    ) == (
        None,
        None,
        None,
        None,
    )
    assert redacted.redacted_by is not None and redacted.redacted_by.type == "user_actor"
    assert redacted.created_by is not None and redacted.operation == "created"
    again = await reverie.redact_memory_version(store, made.memory_version_id)
    assert again.redacted_at == redacted.redacted_at
    with pytest.raises(InvalidRequestError, match="current version"):
        await reverie.redact_memory_version(store, updated.memory_version_id)
    await reverie.delete_memory(store, made.id)
    # Once the memory is gone, its last versions can go too.
    for version in (await reverie.list_memory_versions(store, memory_id=made.id)).data:
        await reverie.redact_memory_version(store, version.id)
    with pytest.raises(InvalidRequestError, match="redacted"):
        await reverie.restore_memory_version(store, made.memory_version_id)


async def test_restore_writes_an_old_version_back(reverie: ReverieClient) -> None:
    store = await new_store(reverie)
    made = await reverie.create_memory(store, {"path": "/plan.md", "content": "v1"})
    await reverie.update_memory(store, made.id, {"content": "v2", "path": "/moved.md"})
    restored = await reverie.restore_memory_version(store, made.memory_version_id)
    assert (restored.id, restored.path, restored.content) == (made.id, "/plan.md", "v1")
    ops = [v.operation for v in (await reverie.list_memory_versions(store, memory_id=made.id)).data]
    assert ops == ["modified", "modified", "created"]
    await reverie.delete_memory(store, made.id)
    deleted = (await reverie.list_memory_versions(store, memory_id=made.id)).data[0]
    with pytest.raises(InvalidRequestError, match="deletion"):
        await reverie.restore_memory_version(store, deleted.id)
    back = await reverie.restore_memory_version(store, made.memory_version_id)
    assert back.id != made.id and (back.path, back.content) == ("/plan.md", "v1")


async def test_export_and_import_a_tree(reverie: ReverieClient, tmp_path: Path) -> None:
    source = await new_store(reverie, "source")
    for path, content in {"/a.md": "A", "/dir/b.md": "B", "/dir/sub/c.md": "C"}.items():
        await reverie.create_memory(source, {"path": path, "content": content})
    out = tmp_path / "tree"
    assert await reverie.export_memory_store(source, out) == 3
    assert (out / "dir" / "sub" / "c.md").read_text() == "C"

    (out / "a.md").write_text("A changed")
    (out / "new.md").write_text("new")
    (out / "bin.dat").write_bytes(b"\xff\xfe")
    (out / "link").symlink_to("/etc/passwd")
    target = await new_store(reverie, "target")
    await reverie.create_memory(target, {"path": "/dir/b.md", "content": "B"})
    report = await reverie.import_memory_store(target, out)
    assert sorted(report.created) == ["/a.md", "/dir/sub/c.md", "/new.md"]
    assert report.unchanged == ["/dir/b.md"]
    assert set(report.skipped) == {"bin.dat", "link"}
    assert "UTF-8" in report.skipped["bin.dat"] and "symbolic link" in report.skipped["link"]
    again = await reverie.import_memory_store(target, out)
    assert again.created == [] and again.updated == []
    (out / "a.md").write_text("A again")
    assert (await reverie.import_memory_store(target, out)).updated == ["/a.md"]
    assert (await reverie.get_memory_by_path(target, "/a.md")).content == "A again"
