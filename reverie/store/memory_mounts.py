"""What each session's mount of a memory store holds: its place in the store's history (`seq`),
its count of committed write-backs (`syncs`) and, per file, the memory and content it was last
in step with (the base of the next change's precondition)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from reverie.store.pool import Connection, Pool


@dataclass(frozen=True)
class Entry:
    memory_id: str
    content_sha256: str
    memory_version_id: str


@dataclass(frozen=True)
class MountRow:
    seq: int
    syncs: int


async def get(conn: Pool | Connection, session_id: str, store_id: str) -> MountRow | None:
    row = await conn.fetchrow(
        "SELECT seq, syncs FROM memory_mounts WHERE session_id = $1 AND memory_store_id = $2",
        session_id,
        store_id,
    )
    return None if row is None else MountRow(seq=row["seq"], syncs=row["syncs"])


async def create(
    conn: Connection,
    session_id: str,
    store_id: str,
    seq: int,
    files: Sequence[tuple[str, Entry]],
    syncs: int = 0,
) -> None:
    """The mount and its files, all at once (call in a transaction): a mount that exists is
    complete on disk. `syncs`: the write-backs of the mount it replaces (their number names
    their versions, which must not be named again)."""
    await conn.execute(
        "DELETE FROM memory_mount_files WHERE session_id = $1 AND memory_store_id = $2",
        session_id,
        store_id,
    )
    await conn.copy_records_to_table(
        "memory_mount_files",
        records=[
            (session_id, store_id, path, e.memory_id, e.content_sha256, e.memory_version_id)
            for path, e in files
        ],
        columns=[
            "session_id",
            "memory_store_id",
            "path",
            "memory_id",
            "content_sha256",
            "memory_version_id",
        ],
    )
    await conn.execute(
        """INSERT INTO memory_mounts (session_id, memory_store_id, seq, syncs)
           VALUES ($1, $2, $3, $4)""",
        session_id,
        store_id,
        seq,
        syncs,
    )


async def entries(
    conn: Pool | Connection, session_id: str, store_id: str, paths: Iterable[str] | None = None
) -> dict[str, Entry]:
    """The files of the mount at these paths (all of them when `paths` is None)."""
    if paths is None:
        rows = await conn.fetch(
            """SELECT path, memory_id, content_sha256, memory_version_id FROM memory_mount_files
               WHERE session_id = $1 AND memory_store_id = $2""",
            session_id,
            store_id,
        )
    else:
        rows = await conn.fetch(
            """SELECT path, memory_id, content_sha256, memory_version_id FROM memory_mount_files
               WHERE session_id = $1 AND memory_store_id = $2 AND path = ANY($3::text[])""",
            session_id,
            store_id,
            list(paths),
        )
    return {
        row["path"]: Entry(row["memory_id"], row["content_sha256"], row["memory_version_id"])
        for row in rows
    }


async def entries_under(
    conn: Pool | Connection, session_id: str, store_id: str, prefixes: Sequence[str]
) -> dict[str, Entry]:
    """The files of the mount under these folders (each prefix ends with "/")."""
    if not prefixes:
        return {}
    rows = await conn.fetch(
        """SELECT path, memory_id, content_sha256, memory_version_id FROM memory_mount_files
           WHERE session_id = $1 AND memory_store_id = $2
             AND EXISTS (SELECT 1 FROM unnest($3::text[]) AS p WHERE starts_with(path, p))""",
        session_id,
        store_id,
        list(prefixes),
    )
    return {
        row["path"]: Entry(row["memory_id"], row["content_sha256"], row["memory_version_id"])
        for row in rows
    }


async def entries_of_memories(
    conn: Pool | Connection, session_id: str, store_id: str, memory_ids: Iterable[str]
) -> dict[str, tuple[str, Entry]]:
    """memory id -> (path, entry) for the mount's files of these memories."""
    rows = await conn.fetch(
        """SELECT path, memory_id, content_sha256, memory_version_id FROM memory_mount_files
           WHERE session_id = $1 AND memory_store_id = $2 AND memory_id = ANY($3::text[])""",
        session_id,
        store_id,
        list(memory_ids),
    )
    return {
        row["memory_id"]: (
            row["path"],
            Entry(row["memory_id"], row["content_sha256"], row["memory_version_id"]),
        )
        for row in rows
    }


async def apply(
    conn: Connection,
    session_id: str,
    store_id: str,
    *,
    removed: Iterable[str] = (),
    upserted: Iterable[tuple[str, Entry]] = (),
    seq: int | None = None,
    count_sync: bool = False,
) -> MountRow:
    """Change the mount's files (removals first) and advance its seq and/or its count of
    write-backs; call in a transaction."""
    removed = list(removed)
    upserted = list(upserted)
    if removed:
        await conn.execute(
            """DELETE FROM memory_mount_files
               WHERE session_id = $1 AND memory_store_id = $2 AND path = ANY($3::text[])""",
            session_id,
            store_id,
            removed,
        )
    if upserted:
        await conn.executemany(
            """INSERT INTO memory_mount_files (session_id, memory_store_id, path, memory_id,
                                               content_sha256, memory_version_id)
               VALUES ($1, $2, $3, $4, $5, $6)
               ON CONFLICT (session_id, memory_store_id, path) DO UPDATE
               SET memory_id = excluded.memory_id, content_sha256 = excluded.content_sha256,
                   memory_version_id = excluded.memory_version_id""",
            [
                (session_id, store_id, path, e.memory_id, e.content_sha256, e.memory_version_id)
                for path, e in upserted
            ],
        )
    row = await conn.fetchrow(
        """UPDATE memory_mounts SET seq = greatest(seq, coalesce($3, seq)),
               syncs = syncs + CASE WHEN $4 THEN 1 ELSE 0 END
           WHERE session_id = $1 AND memory_store_id = $2 RETURNING seq, syncs""",
        session_id,
        store_id,
        seq,
        count_sync,
    )
    return MountRow(seq=row["seq"], syncs=row["syncs"])


async def drop_session(conn: Pool | Connection, session_ids: Sequence[str]) -> None:
    """Forget the mounts of deleted sessions (the versions they wrote stay)."""
    await conn.execute(
        "DELETE FROM memory_mount_files WHERE session_id = ANY($1::text[])", list(session_ids)
    )
    await conn.execute(
        "DELETE FROM memory_mounts WHERE session_id = ANY($1::text[])", list(session_ids)
    )
