"""`reverie memory ...` as real processes against the test stack."""

from __future__ import annotations

import asyncio
from pathlib import Path

from reverie.starter.client import ReverieClient
from tests.test_cli import Cli, cli  # noqa: F401  (the fixture)


async def test_store_commands(cli: Cli) -> None:  # noqa: F811
    made = (
        await cli(
            "memory",
            "store",
            "create",
            "--name",
            "CLI notes",
            "--description",
            "d",
            "--metadata",
            "team=core",
            "--json",
        )
    ).json()
    assert made["id"].startswith("memstore_") and made["metadata"] == {"team": "core"}
    store = made["id"]
    got, listed, updated = await asyncio.gather(
        cli("memory", "store", "get", store, "--json"),
        cli("memory", "store", "list", "--limit", "100"),
        cli("memory", "store", "update", store, "--metadata", "team=", "--json"),
    )
    assert got.json()["name"] == "CLI notes"
    assert store in listed.out and "CLI notes" in listed.out
    assert updated.json()["metadata"] == {}
    archived = await cli("memory", "store", "archive", store, "--json")
    assert archived.json()["archived_at"]
    deleted = await cli("memory", "store", "delete", store, "--json")
    assert deleted.json() == {"type": "memory_store_deleted", "id": store}
    missing = await cli("memory", "store", "get", store)
    assert missing.code == 1 and missing.err.startswith("error: not_found_error")


async def test_memory_commands(cli: Cli, reverie: ReverieClient, tmp_path: Path) -> None:  # noqa: F811
    store = (await reverie.create_memory_store({"name": "cli"})).id
    put = await cli("memory", "put", store, "/notes/a.md", "--content", "alpha", "--json")
    memory = put.json()
    assert memory["path"] == "/notes/a.md" and memory["id"].startswith("mem_")
    source = tmp_path / "b.md"
    source.write_text("from a file\n")
    assert (await cli("memory", "put", store, "/b.md", "--file", str(source))).code == 0

    cat = await cli("memory", "cat", store, "/notes/a.md")
    assert cat.out.strip() == "alpha"
    replaced = await cli("memory", "put", store, "/notes/a.md", "--content", "beta", "--json")
    assert replaced.json()["id"] == memory["id"]
    stale = await cli(
        "memory", "put", store, "/notes/a.md", "--content", "gamma", "--if-sha", "0" * 64
    )
    assert stale.code == 1 and "memory_precondition_failed_error" in stale.err
    taken = await cli("memory", "mv", store, "/notes/a.md", "/b.md")
    assert taken.code == 1 and "memory_path_conflict_error" in taken.err
    moved = await cli("memory", "mv", store, memory["id"], "/a.md", "--json")
    assert moved.json()["path"] == "/a.md"

    ls = await cli("memory", "ls", store)
    assert "/a.md" in ls.out and "/b.md" in ls.out
    rolled = await cli("memory", "ls", store, "/", "--depth", "1", "--json")
    assert [i["path"] for i in rolled.json()["data"]] == ["/a.md", "/b.md"]

    versions = (await cli("memory", "versions", store, "/a.md", "--json")).json()["data"]
    assert [v["operation"] for v in versions] == ["modified", "modified", "created"]
    assert {v["created_by"]["type"] for v in versions} == {"user_actor"}
    first = versions[-1]["id"]
    old = await cli("memory", "cat", store, "--version", first)
    assert old.out.strip() == "alpha"
    restored = await cli("memory", "restore", store, first, "--json")
    assert (restored.json()["path"], restored.json()["content"]) == ("/notes/a.md", "alpha")
    redacted = await cli("memory", "redact", store, first, "--json")
    assert redacted.json()["content"] is None and redacted.json()["redacted_at"]
    head = (await reverie.get_memory(store, memory["id"])).memory_version_id
    refused = await cli("memory", "redact", store, head)
    assert refused.code == 1 and "current version" in refused.err

    out = tmp_path / "export"
    exported = await cli("memory", "export", store, str(out))
    assert exported.code == 0 and "exported 2" in exported.out
    assert (out / "notes" / "a.md").read_text() == "alpha"
    (out / "new.md").write_text("new")
    (out / "bad.bin").write_bytes(b"\xff")
    imported = await cli("memory", "import", store, str(out), "--json")
    report = imported.json()
    assert report["created"] == ["/new.md"] and "bad.bin" in report["skipped"]

    removed = await cli("memory", "rm", store, "/new.md", "--json")
    assert removed.json()["type"] == "memory_deleted"
    gone = await cli("memory", "cat", store, "/new.md")
    assert gone.code == 1 and "not_found_error" in gone.err
    deleted_versions = await cli("memory", "versions", store, removed.json()["id"], "--json")
    assert [v["operation"] for v in deleted_versions.json()["data"]] == ["deleted", "created"]
    bad_path = await cli("memory", "put", store, "no-slash", "--content", "x")
    assert bad_path.code == 1 and "must start with /" in bad_path.err
