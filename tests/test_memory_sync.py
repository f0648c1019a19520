"""The mount's sync itself (activities/memory.py), driven directly: what a tool run leaves in the
folder becomes versions once and only once, whatever crashed, raced or went stale."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from pathlib import Path

from reverie.activities.memory import SessionMemory
from reverie.models.memory import MemoryStoreResource
from reverie.starter.client import ReverieClient


async def mounted(
    client: ReverieClient, files: dict[str, str], *, read_only: bool = False
) -> tuple[str, SessionMemory, Path]:
    store = await client.create_memory_store({"name": "sync"})
    for path, content in files.items():
        await client.create_memory(store.id, {"path": path, "content": content})
    resource = MemoryStoreResource(
        memory_store_id=store.id,
        name="sync",
        mount_path="/mnt/memory/sync",
        access="read_only" if read_only else "read_write",
    )
    memory = SessionMemory(client.pool, client.settings, f"sesn_sync{uuid.uuid4().hex}", [resource])
    await memory.prepare()
    return store.id, memory, memory.host_dir(resource)


async def contents(client: ReverieClient, store: str) -> dict[str, str | None]:
    return {m.path: m.content for m in await client.all_memories(store, view="full")}


async def session_versions(client: ReverieClient, store: str, memory: SessionMemory) -> list:
    page = await client.list_memory_versions(store, session_id=memory.session_id, limit=100)
    return sorted((v.operation, v.path) for v in page.data)


async def test_materialise_writes_every_memory_that_can_be_a_file(reverie: ReverieClient) -> None:
    store, memory, folder = await mounted(
        reverie, {"/a": "file a", "/a/b": "under a", "/x/" + "n" * 300: "too long", "/ok": "ok"}
    )
    assert (folder / "ok").read_text() == "ok"
    assert (folder / "a").read_text() == "file a"  # /a/b cannot also be there
    # Nothing the folder could not hold is taken as deleted by a write-back.
    assert await memory.write_back() == []
    assert len(await contents(reverie, store)) == 4


async def test_a_change_is_written_once_across_retries_and_lost_caches(
    reverie: ReverieClient,
) -> None:
    store, memory, folder = await mounted(reverie, {"/a.md": "a", "/b.md": "b"})
    sigs = next((memory.base / "state").glob("*.sigs"))
    old_cache = sigs.read_bytes()
    (folder / "a.md").write_text("a2")
    (folder / "c.md").write_text("c")
    (folder / "b.md").unlink()
    assert await memory.write_back() == []
    expected = [("created", "/c.md"), ("deleted", "/b.md"), ("modified", "/a.md")]
    assert await session_versions(reverie, store, memory) == expected
    # Again (as a retried activity would), then with the signature cache gone, then with
    # an old cache put back (a crash between a commit and the cache's update): nothing more.
    assert await memory.write_back() == []
    sigs.write_bytes(old_cache)
    assert await memory.write_back() == []
    shutil.rmtree(memory.base / "state")
    assert await memory.write_back() == []
    assert await session_versions(reverie, store, memory) == expected
    assert await contents(reverie, store) == {"/a.md": "a2", "/c.md": "c"}


async def test_a_stale_signature_cache_still_finds_changes(reverie: ReverieClient) -> None:
    store, memory, folder = await mounted(reverie, {"/a.md": "a"})
    sigs = next((memory.base / "state").glob("*.sigs"))
    old = sigs.read_bytes()
    (folder / "a.md").write_text("changed")
    assert await memory.write_back({store: ["a.md"]}) == []
    sigs.write_bytes(old)  # the journal now starts from a newer state: the cache is stale
    (folder / "a.md").write_text("changed again")
    os.utime(folder / "a.md", ns=(0, 0))
    assert await memory.write_back() == []
    assert await contents(reverie, store) == {"/a.md": "changed again"}


async def test_parallel_write_backs_write_each_change_once(reverie: ReverieClient) -> None:
    store, memory, folder = await mounted(reverie, {f"/f{i}": "0" for i in range(20)})
    twin = SessionMemory(reverie.pool, reverie.settings, memory.session_id, memory.resources)
    for i in range(20):
        (folder / f"f{i}").write_text("1")
    (folder / "new").write_text("n")
    notes = await asyncio.gather(
        memory.write_back(), twin.write_back(), memory.write_back({store: ["f3"]})
    )
    assert notes == [[], [], []]
    versions = await session_versions(reverie, store, memory)
    assert versions == sorted([("created", "/new")] + [("modified", f"/f{i}") for i in range(20)])


async def test_a_pull_leaves_unsaved_changes_for_the_write_back_to_settle(
    reverie: ReverieClient,
) -> None:
    store, memory, folder = await mounted(
        reverie, {"/edited.md": "base", "/clean.md": "base", "/moved.md": "m", "/dead.md": "d"}
    )
    by_path = {m.path: m for m in await reverie.all_memories(store)}
    # The agent changes two files (not yet written back) while others change the store.
    (folder / "edited.md").write_text("agent")
    (folder / "dead.md").write_text("agent keeps")
    await reverie.update_memory(store, by_path["/edited.md"].id, {"content": "api"})
    await reverie.update_memory(store, by_path["/clean.md"].id, {"content": "api"})
    await reverie.update_memory(store, by_path["/moved.md"].id, {"path": "/dir/moved.md"})
    await reverie.delete_memory(store, by_path["/dead.md"].id)
    await reverie.create_memory(store, {"path": "/added.md", "content": "new"})
    await memory.prepare()
    assert (folder / "clean.md").read_text() == "api"
    assert (folder / "dir" / "moved.md").read_text() == "m" and not (folder / "moved.md").exists()
    assert (folder / "added.md").read_text() == "new"
    assert (folder / "edited.md").read_text() == "agent"  # not overwritten: unsaved
    assert (folder / "dead.md").read_text() == "agent keeps"

    notes = await memory.write_back()
    assert len(notes) == 2 and all("NOT saved" in n for n in notes), notes
    assert (folder / "edited.md").read_text() == "api"
    assert not (folder / "dead.md").exists()
    assert await session_versions(reverie, store, memory) == []
    assert await memory.write_back() == []


async def test_read_only_mount_is_put_back(reverie: ReverieClient) -> None:
    """Bash cannot write a read-only mount (bubblewrap binds it read-only); should its files
    change anyway, the write-back puts them back and writes nothing."""
    store, memory, folder = await mounted(reverie, {"/a.md": "a", "/b.md": "b"}, read_only=True)
    (folder / "a.md").write_text("changed")
    (folder / "b.md").unlink()
    (folder / "c.md").write_text("new")
    notes = await memory.write_back()
    assert len(notes) == 3 and all("read-only" in n for n in notes)
    assert (folder / "a.md").read_text() == "a" and (folder / "b.md").read_text() == "b"
    assert not (folder / "c.md").exists()
    assert (await reverie.list_memory_versions(store, session_id=memory.session_id)).data == []
    assert await contents(reverie, store) == {"/a.md": "a", "/b.md": "b"}


async def test_write_backs_of_an_archived_or_deleted_store_are_refused(
    reverie: ReverieClient,
) -> None:
    store, memory, folder = await mounted(reverie, {"/a.md": "a"})
    await reverie.archive_memory_store(store)
    (folder / "a.md").write_text("changed")
    notes = await memory.write_back()
    assert len(notes) == 1 and "archived" in notes[0]
    await reverie.delete_memory_store(store)
    (folder / "b.md").write_text("new")
    notes = await memory.write_back()
    assert any("no longer exists" in n for n in notes)
    await memory.prepare()  # a deleted store's mount stays as it is


def test_a_pull_never_replaces_a_file_changed_since_it_was_checked(tmp_path: Path) -> None:
    """The pull's file write is a compare-and-swap: the new file is exchanged in, and the old
    one exchanged back if it is not the content that was checked."""
    import hashlib

    from reverie import memory_file_writes

    def digest(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    (tmp_path / "a").write_text("checked")
    assert memory_file_writes.replace_file(tmp_path, "a", "pulled", digest("checked"))
    assert (tmp_path / "a").read_text() == "pulled"
    (tmp_path / "a").write_text("the agent's")
    assert memory_file_writes.replace_file(tmp_path, "a", "pulled again", digest("pulled")) is None
    assert (tmp_path / "a").read_text() == "the agent's"
    assert memory_file_writes.replace_file(tmp_path, "new", "x", None)
    assert memory_file_writes.replace_file(tmp_path, "new", "y", None) is None
    assert memory_file_writes.replace_file(tmp_path, "gone", "y", digest("x")) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "new"]


async def test_a_write_through_a_file_held_open_while_a_sync_replaces_it_is_never_lost_unseen(
    reverie: ReverieClient,
) -> None:
    """A tool (a background process of a parallel bash run) holds files open; a pull replaces
    one and removes another, a settled conflict replaces a third; the tool then writes through
    all three. Those writes reach no file the mount shows: each is reported, once per write,
    until the tool lets go of the file."""
    store, memory, folder = await mounted(
        reverie, {"/pulled.md": "base", "/deleted.md": "base", "/clash.md": "base"}
    )
    ids = {m.path: m.id for m in await reverie.all_memories(store)}
    held = {name: open(folder / name, "r+") for name in ("pulled.md", "deleted.md", "clash.md")}  # noqa: SIM115
    try:
        await reverie.update_memory(store, ids["/pulled.md"], {"content": "api"})
        await reverie.delete_memory(store, ids["/deleted.md"])
        await memory.prepare()  # the pull
        assert (folder / "pulled.md").read_text() == "api"
        assert not (folder / "deleted.md").exists()
        # The agent changes clash.md while the API changes it too: the store's version wins.
        held["clash.md"].write("agent")
        held["clash.md"].flush()
        await reverie.update_memory(store, ids["/clash.md"], {"content": "api"})
        notes = await memory.write_back({store: ["clash.md"]})
        assert len(notes) == 1 and "NOT saved" in notes[0]
        assert (folder / "clash.md").read_text() == "api"
        assert await memory.write_back({store: None}) == []  # nothing written through them yet

        for name, handle in held.items():
            handle.seek(0)
            handle.write(f"the tool's own write to {name}")
            handle.flush()
        notes = await memory.write_back({store: None})
        assert sorted(n.split(":")[0] for n in notes) == [
            f"/mnt/memory/sync/{name}" for name in ("clash.md", "deleted.md", "pulled.md")
        ], notes
        assert all("NOT saved" in n for n in notes)
        assert await memory.write_back({store: None}) == []  # each write reported once
        held["pulled.md"].write(" and more")
        held["pulled.md"].flush()
        notes = await memory.write_back({store: ["pulled.md"]})
        assert len(notes) == 1 and notes[0].startswith("/mnt/memory/sync/pulled.md:")
    finally:
        for handle in held.values():
            handle.close()
    assert await memory.write_back({store: None}) == []
    assert not any((memory.base / "state" / "displaced" / store).iterdir())
    assert await contents(reverie, store) == {"/pulled.md": "api", "/clash.md": "api"}
