"""Memory stores mounted in sessions: the agent's file tools and bash on /mnt/memory/<slug>/,
write-backs as versions attributed to the session, read-only mounts, conflicts with writers
elsewhere, hostile files, and a worker killed between a tool run and its write-back."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest

from reverie.activities.tool_run import TEST_HOOK_FREEZE_MEMORY_SYNC
from reverie.models.common import Page
from reverie.models.errors import InvalidRequestError, NotFoundError, NotSupportedError
from reverie.models.events import Event
from reverie.models.workflow_io import SessionOptions
from reverie.starter.client import ReverieClient
from tests.fake_model import FakeModelServer, Reply
from tests.helpers import all_events, assert_each_once, kill, worker_process
from tests.sandbox_support import needs_bwrap

TOOLSET = {"type": "agent_toolset_20260401", "configs": [{"name": "web_search", "enabled": False}]}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def agent_of(client: ReverieClient, model: str) -> str:
    return (
        await client.create_agent({"name": "rememberer", "model": model, "tools": [TOOLSET]})
    ).id


async def store_with(client: ReverieClient, name: str, files: dict[str, str]) -> str:
    store = await client.create_memory_store({"name": name, "description": f"{name} memories"})
    for path, content in files.items():
        await client.create_memory(store.id, {"path": path, "content": content})
    return store.id


def results(events: list[Event]) -> list[Event]:
    return [e for e in events if e.type == "agent.tool_result"]


def text_of(event: Event) -> str:
    return "".join(block.get("text", "") for block in event.payload["content"])


async def run_session(
    client: ReverieClient,
    fake_model: FakeModelServer,
    model: str,
    replies: list[Reply],
    resources: list[dict[str, Any]],
) -> tuple[str, list[Event]]:
    fake_model.script(model, [*replies, Reply.text("done")])
    session = await client.create_session(
        {"agent": await agent_of(client, model), "resources": resources}
    )
    await client.send_message(session.id, "work with your memory")
    await client.wait_until_settled(session.id, timeout=60)
    events = await all_events(client, session.id)
    assert_each_once(events)
    return session.id, events


async def test_session_resources_are_checked_and_snapshotted(reverie: ReverieClient) -> None:
    agent = await reverie.create_agent({"name": "a", "model": "fake-resources"})
    one = await store_with(reverie, "User Preferences", {})
    two = await store_with(reverie, "user preferences!", {})
    session = await reverie.create_session(
        {
            "agent": agent.id,
            "resources": [
                {"type": "memory_store", "memory_store_id": one, "instructions": "Be careful."},
                {"type": "memory_store", "memory_store_id": two, "access": "read_only"},
            ],
        }
    )
    assert session.resources == [
        {
            "type": "memory_store",
            "memory_store_id": one,
            "access": "read_write",
            "instructions": "Be careful.",
            "name": "User Preferences",
            "description": "User Preferences memories",
            "mount_path": "/mnt/memory/user-preferences",
        },
        {
            "type": "memory_store",
            "memory_store_id": two,
            "access": "read_only",
            "instructions": None,
            "name": "user preferences!",
            "description": "user preferences! memories",
            "mount_path": "/mnt/memory/user-preferences-2",
        },
    ]
    # Renaming the store later does not move the session's mount.
    await reverie.update_memory_store(one, {"name": "Other"})
    assert (await reverie.get_session(session.id)).resources == session.resources

    stores = [await store_with(reverie, f"s{i}", {}) for i in range(9)]
    refusals = [
        ([{"type": "memory_store", "memory_store_id": s} for s in stores], "at most 8"),
        ([{"type": "memory_store", "memory_store_id": one}] * 2, "once"),
        ([{"type": "memory_store", "memory_store_id": "memstore_nope"}], "memstore_nope"),
        ([{"type": "memory_store", "memory_store_id": one, "access": "write"}], "access"),
        ([{"type": "memory_store", "memory_store_id": one, "instructions": "x" * 4097}], "4096"),
        ([{"type": "memory_store", "memory_store_id": one, "mount_path": "/x"}], "mount_path"),
        ([{"type": "file", "file_id": "file_1"}], "not supported"),
        (["memstore"], "dictionary"),
        ([{"type": "vault"}], "type memory_store"),
    ]
    for resources, message in refusals:
        with pytest.raises((InvalidRequestError, NotFoundError, NotSupportedError), match=message):
            await reverie.create_session({"agent": agent.id, "resources": resources})
    await reverie.archive_memory_store(stores[0])
    with pytest.raises(InvalidRequestError, match="archived"):
        await reverie.create_session(
            {
                "agent": agent.id,
                "resources": [{"type": "memory_store", "memory_store_id": stores[0]}],
            }
        )


async def test_the_system_prompt_names_each_mount(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    store = await store_with(reverie, "Team Notes", {"/a.md": "hello"})
    await run_session(
        reverie,
        fake_model,
        model_name,
        [],
        [
            {
                "type": "memory_store",
                "memory_store_id": store,
                "access": "read_only",
                "instructions": "Check conventions first.",
            }
        ],
    )
    system = fake_model.requests(model_name)[0].get("system") or []
    text = "".join(block["text"] for block in system)
    assert "/mnt/memory/team-notes/ (read-only): Team Notes — Team Notes memories" in text
    assert "Instructions: Check conventions first." in text


async def test_file_tools_and_bash_write_versions_attributed_to_the_session(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    store = await store_with(
        reverie, "notes", {"/keep.md": "kept", "/edit.md": "colour: blue\n", "/old.md": "old"}
    )
    base = "/mnt/memory/notes"
    session_id, events = await run_session(
        reverie,
        fake_model,
        model_name,
        [
            Reply.tool_use("read", {"file_path": f"{base}/keep.md"}),
            Reply.tool_use("write", {"file_path": f"{base}/new/idea.md", "content": "an idea"}),
            Reply.tool_use(
                "edit",
                {"file_path": f"{base}/edit.md", "old_string": "blue", "new_string": "green"},
            ),
            Reply.tool_use(
                "bash",
                {
                    "command": f"cd {base} && echo appended >> keep.md && rm old.md && "
                    "mkdir -p made && printf 'by bash' > made/b.md && mv new/idea.md idea.md && "
                    "cat idea.md"
                },
            ),
            Reply.tool_use("glob", {"pattern": "**/*.md", "path": base}),
        ],
        [{"type": "memory_store", "memory_store_id": store}],
    )
    found = results(events)
    assert [r.payload["is_error"] for r in found] == [False] * 5, [text_of(r) for r in found]
    assert "kept" in text_of(found[0])
    assert "an idea" in text_of(found[3])

    memories = {m.path: m for m in await reverie.all_memories(store, view="full")}
    assert {p: m.content for p, m in memories.items()} == {
        "/keep.md": "keptappended\n",
        "/edit.md": "colour: green\n",
        "/idea.md": "an idea",
        "/made/b.md": "by bash",
    }
    versions = (await reverie.list_memory_versions(store, session_id=session_id, limit=100)).data
    assert {v.created_by.model_dump()["session_id"] for v in versions if v.created_by} == {
        session_id
    }
    by_path = sorted((v.operation, v.path) for v in versions)
    assert by_path == [
        ("created", "/made/b.md"),
        ("created", "/new/idea.md"),
        ("deleted", "/old.md"),
        ("modified", "/edit.md"),
        ("modified", "/idea.md"),  # the mv kept the memory: one version, a new path
        ("modified", "/keep.md"),
    ]
    idea = memories["/idea.md"]
    assert [
        v.operation for v in (await reverie.list_memory_versions(store, memory_id=idea.id)).data
    ] == [
        "modified",
        "created",
    ]


async def test_read_only_mounts_refuse_every_tool(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    store = await store_with(reverie, "facts", {"/fact.md": "water is wet"})
    base = "/mnt/memory/facts"
    _, events = await run_session(
        reverie,
        fake_model,
        model_name,
        [
            Reply.tool_use("write", {"file_path": f"{base}/fact.md", "content": "changed"}),
            Reply.tool_use("write", {"file_path": f"{base}/new.md", "content": "new"}),
            Reply.tool_use(
                "edit", {"file_path": f"{base}/fact.md", "old_string": "wet", "new_string": "dry"}
            ),
            Reply.tool_use("bash", {"command": f"echo x > {base}/fact.md"}),
            Reply.tool_use("bash", {"command": f"rm -f {base}/fact.md; touch {base}/t.md"}),
            Reply.tool_use("bash", {"command": f"mv {base}/fact.md /workspace/f.md"}),
            Reply.tool_use("read", {"file_path": f"{base}/fact.md"}),
        ],
        [{"type": "memory_store", "memory_store_id": store, "access": "read_only"}],
    )
    found = results(events)
    assert all(r.payload["is_error"] for r in found[:3]), [text_of(r) for r in found]
    assert all("read-only" in text_of(r) for r in found[:3])
    for bash in found[3:6]:
        assert "Read-only file system" in text_of(bash) or "exit code" in text_of(bash)
    assert "water is wet" in text_of(found[6])
    memories = await reverie.all_memories(store, view="full")
    assert [(m.path, m.content) for m in memories] == [("/fact.md", "water is wet")]
    assert len((await reverie.list_memory_versions(store)).data) == 1


async def test_a_change_made_elsewhere_is_never_overwritten(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    """The API writes a memory while the agent's bash is editing its copy: the agent's edit is
    not saved, the file gets the API's version, and the agent is told to read it again."""
    store = await store_with(reverie, "shared", {"/plan.md": "step 1\n"})
    memory = await reverie.get_memory_by_path(store, "/plan.md")
    base = "/mnt/memory/shared"
    fake_model.script(
        model_name,
        [
            Reply.tool_use(
                "bash",
                {
                    "command": f"cat {base}/plan.md > /workspace/seen.tmp; "
                    "mv /workspace/seen.tmp /workspace/seen; "
                    "while [ ! -e /workspace/go ]; do sleep 0.05; done; "
                    f"sed -i 's/step 1/step A/' {base}/plan.md"
                },
            ),
            Reply.tool_use("read", {"file_path": f"{base}/plan.md"}),
            Reply.text("done"),
        ],
    )
    session = await reverie.create_session(
        {
            "agent": await agent_of(reverie, model_name),
            "resources": [{"type": "memory_store", "memory_store_id": store}],
        }
    )
    await reverie.send_message(session.id, "edit the plan")
    work = reverie.settings.workspaces / session.id / "work"
    for _ in range(600):
        if (work / "seen").exists():
            break
        await asyncio.sleep(0.05)
    assert (work / "seen").read_text() == "step 1\n"
    # The agent has read the file and is editing it; meanwhile someone else changes it.
    guard = {"type": "content_sha256", "content_sha256": sha("step 1\n")}
    await reverie.update_memory(
        store, memory.id, {"content": "step 1\nstep 2 (from the API)\n", "precondition": guard}
    )
    (work / "go").touch()
    await reverie.wait_until_settled(session.id, timeout=60)
    edit, reread = results(await all_events(reverie, session.id))
    assert edit.payload["is_error"] and "NOT saved" in text_of(edit), text_of(edit)
    assert f"{base}/plan.md" in text_of(edit) and "read it again" in text_of(edit)
    assert "step 2 (from the API)" in text_of(reread) and "step A" not in text_of(reread)
    now = await reverie.get_memory(store, memory.id)
    assert now.content == "step 1\nstep 2 (from the API)\n"
    versions = (await reverie.list_memory_versions(store, memory_id=memory.id)).data
    assert [(v.operation, v.created_by.type if v.created_by else None) for v in versions] == [
        ("modified", "user_actor"),
        ("created", "user_actor"),
    ]


async def test_an_api_change_reaches_the_mount_before_the_next_tool(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    store = await store_with(reverie, "fresh", {"/a.md": "old", "/gone.md": "x"})
    base = "/mnt/memory/fresh"
    fake_model.script(
        model_name,
        [
            Reply.tool_use("read", {"file_path": f"{base}/a.md"}),
            Reply.tool_use("bash", {"command": f"cd {base} && cat a.md b/c.md; ls"}, delay=1.5),
            Reply.text("done"),
        ],
    )
    session = await reverie.create_session(
        {
            "agent": await agent_of(reverie, model_name),
            "resources": [{"type": "memory_store", "memory_store_id": store}],
        }
    )
    await reverie.send_message(session.id, "look")
    await fake_model.wait_for_requests(model_name, 2, timeout=30)
    a = await reverie.get_memory_by_path(store, "/a.md")
    await reverie.update_memory(store, a.id, {"content": "new"})
    await reverie.create_memory(store, {"path": "/b/c.md", "content": "added"})
    gone = await reverie.get_memory_by_path(store, "/gone.md")
    await reverie.delete_memory(store, gone.id)
    await reverie.wait_until_settled(session.id, timeout=60)
    first, second = results(await all_events(reverie, session.id))
    assert "old" in text_of(first)
    assert "new" in text_of(second) and "added" in text_of(second)
    assert "gone.md" not in text_of(second)
    assert not second.payload["is_error"]
    assert len((await reverie.list_memory_versions(store, session_id=session.id)).data) == 0


async def test_hostile_files_are_skipped_with_a_note(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    store = await store_with(reverie, "junk", {"/ok.md": "ok"})
    base = "/mnt/memory/junk"
    command = (
        f"cd {base} && ln -s /etc/passwd link && ln -s ok.md inner-link && mkfifo fifo && "
        "printf '\\xff\\xfe' > binary.dat && head -c 102401 /dev/zero | tr '\\0' a > huge.md && "
        "printf 'a\\0b' > nul.md && touch \"$(printf 'bad\\001name')\" \"$(printf 'x\\377y')\" && "
        "mkdir -p d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/d11/d12/d13/d14/d15/d16/d17/d18/d19/d20 && "
        "touch d1/d2/d3/d4/d5/d6/d7/d8/d9/d10/d11/d12/d13/d14/d15/d16/d17/d18/d19/d20/deep.md && "
        "printf fine > fine.md"
    )
    _, events = await run_session(
        reverie,
        fake_model,
        model_name,
        [Reply.tool_use("bash", {"command": command}), Reply.tool_use("bash", {"command": "true"})],
        [{"type": "memory_store", "memory_store_id": store}],
    )
    first, second = results(events)
    note = text_of(first)
    assert first.payload["is_error"], note
    for name, why in [
        ("link", "symbolic link"),
        ("inner-link", "symbolic link"),
        ("fifo", "FIFO"),
        ("binary.dat", "UTF-8"),
        ("huge.md", "102,400"),
        ("nul.md", "NUL"),
        ("bad\x01name", "U+0001"),
        ("x", "not valid UTF-8"),
        ("d20/", "deeper"),
    ]:
        assert any(name in line and why in line for line in note.splitlines()), (name, note)
    # Noted once: the next write-back says nothing more about the same files.
    assert not second.payload["is_error"] and "Memory:" not in text_of(second)
    memories = await reverie.all_memories(store, view="full")
    assert {m.path: m.content for m in memories} == {"/ok.md": "ok", "/fine.md": "fine"}


async def test_more_files_than_the_store_may_hold(
    own_queue: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    """A worker whose stores hold at most 5 memories: 7 new files save 5, and the other two
    get a note (10,001 files against the default 10,000 are the same rule; bench/memory.py
    mounts and syncs stores of that size)."""
    store = await store_with(own_queue, "small", {})
    base = "/mnt/memory/small"
    fake_model.script(
        model_name,
        [
            Reply.tool_use(
                "bash", {"command": f"cd {base} && for i in 1 2 3 4 5 6 7; do : > f$i; done"}
            ),
            Reply.text("done"),
        ],
    )
    async with worker_process(own_queue.settings, env={"REVERIE_MEMORY_MAX_MEMORIES": "5"}):
        session = await own_queue.create_session(
            {
                "agent": await agent_of(own_queue, model_name),
                "resources": [{"type": "memory_store", "memory_store_id": store}],
            }
        )
        await own_queue.send_message(session.id, "fill it")
        await own_queue.wait_until_settled(session.id, timeout=60)
    (result,) = results(await all_events(own_queue, session.id))
    assert result.payload["is_error"]
    refused = [
        line for line in text_of(result).splitlines() if "the most a store may hold (5)" in line
    ]
    assert len(refused) == 2, text_of(result)
    assert len(await own_queue.all_memories(store)) == 5


@needs_bwrap
async def test_bash_cannot_escape_the_mount(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    store = await store_with(reverie, "jail", {"/a.md": "a"})
    other = await store_with(reverie, "other", {"/secret.md": "not yours"})
    base = "/mnt/memory/jail"
    _, events = await run_session(
        reverie,
        fake_model,
        model_name,
        [
            Reply.tool_use(
                "bash",
                {
                    "command": f"ls -a /mnt/memory/ {base}/; cat {base}/../other/secret.md; ls {base}/.."
                },
            ),
            Reply.tool_use("read", {"file_path": f"{base}/../../memory/other/secret.md"}),
        ],
        [{"type": "memory_store", "memory_store_id": store}],
    )
    listing, read = results(events)
    assert "not yours" not in text_of(listing) and "not yours" not in text_of(read)
    assert "No such file" in text_of(listing)
    assert text_of(listing).rstrip().endswith("jail")  # /mnt/memory holds this session's mount
    assert read.payload["is_error"]
    assert await reverie.all_memories(other, view="full")


@pytest.mark.parametrize("point", ["before", "after"])
async def test_worker_killed_between_a_tool_run_and_its_write_back(
    own_queue: ReverieClient, fake_model: FakeModelServer, model_name: str, point: str
) -> None:
    """Killed right before the write-back: the interrupted run's error result is recorded only
    after the write-back is made. Killed right after it: nothing is written again. Either way
    each change is saved exactly once."""
    store = await store_with(own_queue, "durable", {"/count.md": "0"})
    base = "/mnt/memory/durable"
    fake_model.script(
        model_name,
        [
            Reply.tool_use(
                "bash", {"command": f"echo 1 > {base}/count.md && echo 1 > {base}/new.md"}
            ),
            Reply.tool_use("read", {"file_path": f"{base}/count.md"}),
            Reply.text("done"),
        ],
    )
    options = SessionOptions(heartbeat_timeout_seconds=2)
    agent = await agent_of(own_queue, model_name)
    mounted = own_queue.settings.workspaces / ".memory"

    async def frozen_there(session_id: str) -> bool:
        if point == "before":
            count = mounted / session_id / "mounts" / "durable" / "count.md"
            return count.exists() and count.read_text() == "1\n"
        versions = await own_queue.list_memory_versions(store, session_id=session_id)
        return len(versions.data) == 2

    async with worker_process(own_queue.settings, env={TEST_HOOK_FREEZE_MEMORY_SYNC: point}) as w:
        session = await own_queue.create_session(
            {"agent": agent, "resources": [{"type": "memory_store", "memory_store_id": store}]},
            options=options,
        )
        await own_queue.send_message(session.id, "count")
        for _ in range(600):
            if await frozen_there(session.id):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        if point == "before":
            assert await own_queue.list_memory_versions(store, session_id=session.id) == Page(
                data=[]
            )
        await kill(w)
    async with worker_process(own_queue.settings):
        await own_queue.wait_until_settled(session.id, timeout=90)
    events = await all_events(own_queue, session.id)
    assert_each_once(events)
    bash, read = results(events)
    assert bash.payload["is_error"] and "interrupted" in text_of(bash)
    assert "1" in text_of(read)
    memories = {m.path: m.content for m in await own_queue.all_memories(store, view="full")}
    assert memories == {"/count.md": "1\n", "/new.md": "1\n"}
    versions = (await own_queue.list_memory_versions(store, session_id=session.id)).data
    assert sorted((v.operation, v.path) for v in versions) == [
        ("created", "/new.md"),
        ("modified", "/count.md"),
    ]
    assert not any((mounted / session.id / "state" / "pending").iterdir())


async def test_mount_folders_go_with_their_session(
    reverie: ReverieClient, fake_model: FakeModelServer, model_name: str
) -> None:
    store = await store_with(reverie, "passing", {"/a.md": "a"})
    session_id, events = await run_session(
        reverie,
        fake_model,
        model_name,
        [Reply.tool_use("write", {"file_path": "/mnt/memory/passing/b.md", "content": "b"})],
        [{"type": "memory_store", "memory_store_id": store}],
    )
    assert [r.payload["is_error"] for r in results(events)] == [False]
    folder = reverie.settings.workspaces / ".memory" / session_id
    assert (folder / "mounts" / "passing" / "b.md").read_text() == "b"
    await reverie.archive_session(session_id)
    assert not folder.exists()
    # Deleting removes whatever is left there too (a folder a late worker put back).
    (folder / "mounts" / "passing").mkdir(parents=True)
    await reverie.delete_session(session_id)
    assert not folder.exists()
    assert {m.path for m in await reverie.all_memories(store)} == {"/a.md", "/b.md"}
