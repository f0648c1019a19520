"""The write-back after bash looks only at what changed (activities/memory_watch.py): after a
whole scan sets up its watch, the mount's changes of every kind are found from the kernel's
events, and whatever the watch cannot vouch for makes the next write-back scan it whole."""

from __future__ import annotations

import os
import shutil

import pytest

from reverie.activities import memory_watch
from reverie.activities.memory_watch import WATCHES
from reverie.starter.client import ReverieClient
from tests.test_memory_sync import contents, mounted, session_versions


async def test_a_watched_mount_saves_every_kind_of_change_without_a_scan(
    reverie: ReverieClient,
) -> None:
    store, memory, folder = await mounted(
        reverie,
        {"/a.md": "a", "/d/x.md": "x", "/d/y.md": "y", "/e/z.md": "z", "/t.md": "t"},
    )
    bash = {store: None}  # what a bash run's write-back is given
    key = (memory.session_id, store)
    watch = WATCHES.current(key)  # set up by the materialisation
    assert watch is not None and watch.armed
    assert await memory.write_back(bash) == []
    assert WATCHES.current(key) is watch

    (folder / "a.md").write_text("a2")
    (folder / "new" / "deep").mkdir(parents=True)
    (folder / "new" / "deep" / "n.md").write_text("n")
    shutil.rmtree(folder / "d")
    os.rename(folder / "e", folder / "e2")
    os.truncate(folder / "t.md", 0)
    assert await memory.write_back(bash) == []
    assert WATCHES.current(key) is watch and not watch.broken  # no scan was needed
    assert await contents(reverie, store) == {
        "/a.md": "a2",
        "/new/deep/n.md": "n",
        "/e2/z.md": "z",
        "/t.md": "",
    }
    # The new folders are watched too; nothing is saved twice.
    (folder / "new" / "deep" / "n.md").write_text("n2")
    (folder / "e2" / "z.md").write_text("z2")
    assert await memory.write_back(bash) == []
    assert await memory.write_back(bash) == []
    assert WATCHES.current(key) is watch
    assert await contents(reverie, store) == {
        "/a.md": "a2",
        "/new/deep/n.md": "n2",
        "/e2/z.md": "z2",
        "/t.md": "",
    }
    assert await session_versions(reverie, store, memory) == sorted(
        [
            ("modified", "/a.md"),
            ("created", "/new/deep/n.md"),
            ("deleted", "/d/x.md"),
            ("deleted", "/d/y.md"),
            ("modified", "/e2/z.md"),  # the folder's move: the memory's path changes
            ("modified", "/t.md"),
            ("modified", "/new/deep/n.md"),
            ("modified", "/e2/z.md"),
        ]
    )


async def test_a_new_folder_emptied_before_it_was_watched(reverie: ReverieClient) -> None:
    """A file tool makes a folder (saved at once, its write-back names its one file); bash
    then moves the file out before any whole-mount write-back has watched that folder."""
    store, memory, folder = await mounted(reverie, {"/a.md": "a"})
    bash = {store: None}  # what a bash run's write-back is given
    assert await memory.write_back(bash) == []
    watch = WATCHES.current((memory.session_id, store))
    (folder / "p").mkdir()
    (folder / "p" / "q.md").write_text("q")
    assert await memory.write_back({store: ["p/q.md"]}) == []
    os.rename(folder / "p" / "q.md", folder / "q.md")
    assert await memory.write_back(bash) == []
    assert WATCHES.current((memory.session_id, store)) is watch
    assert await contents(reverie, store) == {"/a.md": "a", "/q.md": "q"}


async def test_a_file_with_another_name_is_found_through_either(reverie: ReverieClient) -> None:
    """A hard link is written through one name; the other changes unseen by its folder's
    watch. A changed file with more than one link makes the write-back scan the whole mount."""
    store, memory, folder = await mounted(reverie, {"/h.md": "h", "/sub/k.md": "k"})
    bash = {store: None}  # what a bash run's write-back is given
    assert await memory.write_back(bash) == []
    os.link(folder / "h.md", folder / "sub" / "h2.md")
    assert await memory.write_back(bash) == []
    with open(folder / "sub" / "h2.md", "a") as out:
        out.write(" and more")
    assert await memory.write_back(bash) == []
    assert await contents(reverie, store) == {
        "/h.md": "h and more",
        "/sub/h2.md": "h and more",
        "/sub/k.md": "k",
    }


async def test_a_watch_that_cannot_vouch_falls_back_to_a_whole_scan(
    reverie: ReverieClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, memory, folder = await mounted(reverie, {f"/f{i}.md": "0" for i in range(6)})
    bash = {store: None}  # what a bash run's write-back is given
    key = (memory.session_id, store)
    assert await memory.write_back(bash) == []
    first = WATCHES.current(key)
    monkeypatch.setattr(memory_watch, "MAX_PENDING", 3)  # as if the queue had overflowed
    for i in range(6):
        (folder / f"f{i}.md").write_text("1")
    assert await memory.write_back(bash) == []
    assert WATCHES.current(key) is not first  # scanned whole, and watched anew
    assert await contents(reverie, store) == {f"/f{i}.md": "1" for i in range(6)}
    # The mount's folder rebuilt under the watch: it is dropped, and a scan finds the change.
    monkeypatch.undo()
    second = WATCHES.current(key)
    assert second is not None and second.armed
    shutil.rmtree(folder)
    await memory.prepare()  # materialised again from the store
    (folder / "f0.md").write_text("2")
    assert await memory.write_back(bash) == []
    assert WATCHES.current(key) is not second
    assert (await contents(reverie, store))["/f0.md"] == "2"
    # A write-back owed by a run whose worker died (no plan): scanned whole, whatever the
    # watch says (a watch in another process did not see that run).
    third = WATCHES.current(key)
    assert third is not None and third.armed
    (folder / "f1.md").write_text("3")
    WATCHES.drain()
    third.pending.files.clear()  # as if this process's watch had not seen it
    assert await memory.write_back() == []
    assert WATCHES.current(key) is not third
    assert (await contents(reverie, store))["/f1.md"] == "3"


async def test_a_mount_with_more_folders_than_its_share_of_watches_is_scanned(
    reverie: ReverieClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory_watch, "MAX_DIRS_PER_MOUNT", 3)
    store, memory, folder = await mounted(reverie, {"/a/x.md": "x"})
    bash = {store: None}
    key = (memory.session_id, store)
    assert await memory.write_back(bash) == []
    for name in ("b", "c", "d"):
        (folder / name).mkdir()
        (folder / name / "y.md").write_text(name)
    assert await memory.write_back(bash) == []  # the walk of the new folders breaks the watch
    watch = WATCHES.current(key)
    assert watch is not None and watch.broken and not watch.dirs  # its watches given back
    (folder / "a" / "x.md").write_text("x2")
    assert await memory.write_back(bash) == []
    assert await contents(reverie, store) == {
        "/a/x.md": "x2",
        "/b/y.md": "b",
        "/c/y.md": "c",
        "/d/y.md": "d",
    }


async def test_links_and_special_files_in_a_new_folder_are_skipped_with_a_note(
    reverie: ReverieClient, tmp_path_factory: pytest.TempPathFactory
) -> None:
    store, memory, folder = await mounted(reverie, {"/a.md": "a"})
    bash = {store: None}  # what a bash run's write-back is given
    assert await memory.write_back(bash) == []
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret").write_text("secret")
    (folder / "n").mkdir()
    os.symlink(outside, folder / "n" / "out")
    os.symlink(outside / "secret", folder / "n" / "s.md")
    os.mkfifo(folder / "n" / "fifo")
    (folder / "n" / "ok.md").write_text("ok")
    notes = await memory.write_back(bash)
    assert len(notes) == 3 and all("not saved" in n for n in notes), notes
    assert await contents(reverie, store) == {"/a.md": "a", "/n/ok.md": "ok"}
    # A link put where a watched folder was: nothing is followed out of the mount.
    shutil.rmtree(folder / "n")
    os.symlink(outside, folder / "n")
    notes = await memory.write_back(bash)
    assert len(notes) == 1 and "symbolic link" in notes[0], notes
    assert await contents(reverie, store) == {"/a.md": "a"}
