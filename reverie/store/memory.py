"""Memory stores, memories and versions in PostgreSQL.

Every write to a store's memories runs in one transaction that first locks the store's row:
the writes of one store are serialised, so "is this path taken", "is the store full" and the
version's place in the store's order (`seq`) are decided with nothing else moving. A write
appends its version and changes the memory in the same transaction, so each change has exactly
one version and one author. A write may carry its version's id (the session sync derives it):
a version that already exists means the write was already made, and it is not made again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from reverie.models.common import STORED, Page, derived_id, new_id, patch_metadata
from reverie.models.errors import (
    InvalidRequestError,
    MemoryPathConflictError,
    MemoryPreconditionFailedError,
    NotFoundError,
)
from reverie.models.memory import (
    MAX_FULL_PAGE,
    Memory,
    MemoryPrefix,
    MemoryStore,
    MemoryStoreCreate,
    MemoryStoreUpdate,
    MemoryVersion,
    content_sha256,
)
from reverie.store import webhooks
from reverie.store.paging import cursor_args, decode_cursor, encode_cursor, page_of
from reverie.store.pool import Connection, Pool

_MEMORY_BASIC = (
    "id, memory_store_id, path, NULL::text AS content, content_sha256, content_size_bytes, "
    "memory_version_id, created_at, updated_at"
)
_MEMORY_FULL = (
    "id, memory_store_id, path, content, content_sha256, content_size_bytes, "
    "memory_version_id, created_at, updated_at"
)


def _columns(view: str) -> str:
    return _MEMORY_FULL if view == "full" else _MEMORY_BASIC


# ---- stores ------------------------------------------------------------------------------------


def _store(row: Any) -> MemoryStore:
    return MemoryStore.model_validate(
        {
            "id": row["id"],
            "name": row["name"],
            "description": row["description"],
            "metadata": row["metadata"],
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "archived_at": row["archived_at"],
        },
        context=STORED,
    )


async def create_store(pool: Pool, params: MemoryStoreCreate) -> MemoryStore:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """INSERT INTO memory_stores (id, name, description, metadata)
               VALUES ($1, $2, $3, $4) RETURNING *""",
            new_id("memstore"),
            params.name,
            params.description,
            params.metadata,
        )
        await webhooks.record(conn, "memory_store.created", row["id"])
    return _store(row)


async def get_store(conn: Pool | Connection, store_id: str) -> MemoryStore:
    row = await conn.fetchrow("SELECT * FROM memory_stores WHERE id = $1", store_id)
    if row is None:
        raise NotFoundError(f"no memory store with id {store_id!r}")
    return _store(row)


async def get_stores(conn: Pool | Connection, store_ids: Sequence[str]) -> dict[str, MemoryStore]:
    rows = await conn.fetch("SELECT * FROM memory_stores WHERE id = ANY($1::text[])", store_ids)
    return {row["id"]: _store(row) for row in rows}


async def update_store(pool: Pool, store_id: str, params: MemoryStoreUpdate) -> MemoryStore:
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT * FROM memory_stores WHERE id = $1 FOR UPDATE", store_id)
        if row is None:
            raise NotFoundError(f"no memory store with id {store_id!r}")
        current = _store(row)
        if current.archived_at is not None:
            raise InvalidRequestError(f"memory store {store_id} is archived and read-only")
        metadata = current.metadata
        if params.metadata is not None:
            metadata = patch_metadata(current.metadata, params.metadata)
            # The same limits as at creation, on the result of the patch.
            MemoryStoreCreate.model_validate({"name": current.name, "metadata": metadata})
        row = await conn.fetchrow(
            """UPDATE memory_stores SET name = $2, description = $3, metadata = $4,
                   updated_at = now()
               WHERE id = $1 RETURNING *""",
            store_id,
            params.name if params.name is not None else current.name,
            params.description if params.description is not None else current.description,
            metadata,
        )
        return _store(row)


async def list_stores(
    pool: Pool,
    *,
    limit: int,
    page: str | None,
    include_archived: bool = False,
    created_at_gte: datetime | None = None,
    created_at_lte: datetime | None = None,
) -> Page[MemoryStore]:
    after, after_id = cursor_args(page)
    rows = await pool.fetch(
        """SELECT * FROM memory_stores
           WHERE ($1::boolean OR archived_at IS NULL)
             AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
             AND ($4::timestamptz IS NULL OR created_at >= $4)
             AND ($5::timestamptz IS NULL OR created_at <= $5)
           ORDER BY created_at DESC, id DESC LIMIT $6""",
        include_archived,
        after,
        after_id,
        created_at_gte,
        created_at_lte,
        limit + 1,
    )
    return page_of(rows, limit, _store)


async def archive_store(pool: Pool, store_id: str) -> MemoryStore:
    async with pool.acquire() as conn, conn.transaction():
        was_live = await conn.fetchval(
            "SELECT archived_at IS NULL FROM memory_stores WHERE id = $1 FOR UPDATE", store_id
        )
        row = await conn.fetchrow(
            """UPDATE memory_stores SET archived_at = coalesce(archived_at, now()),
                   updated_at = CASE WHEN archived_at IS NULL THEN now() ELSE updated_at END
               WHERE id = $1 RETURNING *""",
            store_id,
        )
        if row is None:
            raise NotFoundError(f"no memory store with id {store_id!r}")
        if was_live:  # announced once, when it becomes archived
            await webhooks.record(conn, "memory_store.archived", store_id)
    return _store(row)


async def delete_store(pool: Pool, store_id: str) -> None:
    """The store, its memories and all their versions, for good."""
    async with pool.acquire() as conn, conn.transaction():
        found = await conn.fetchval(
            "SELECT 1 FROM memory_stores WHERE id = $1 FOR UPDATE", store_id
        )
        if not found:
            raise NotFoundError(f"no memory store with id {store_id!r}")
        from reverie.store.dreams import guard_store_delete  # (it imports this module)

        await guard_store_delete(conn, store_id)  # not the output of a running dream
        await conn.execute("DELETE FROM memory_versions WHERE memory_store_id = $1", store_id)
        await conn.execute("DELETE FROM memories WHERE memory_store_id = $1", store_id)
        await conn.execute("DELETE FROM memory_stores WHERE id = $1", store_id)
        await webhooks.record(conn, "memory_store.deleted", store_id)


# ---- memories: reads ---------------------------------------------------------------------------


def _memory(row: Any) -> Memory:
    return Memory.model_validate(dict(row))


async def get_memory(
    conn: Pool | Connection, store_id: str, memory_id: str, *, view: str = "full"
) -> Memory:
    row = await conn.fetchrow(
        f"SELECT {_columns(view)} FROM memories WHERE memory_store_id = $1 AND id = $2",
        store_id,
        memory_id,
    )
    if row is None:
        raise NotFoundError(f"no memory with id {memory_id!r} in memory store {store_id}")
    return _memory(row)


async def find_by_path(
    conn: Pool | Connection, store_id: str, path: str, *, view: str = "full"
) -> Memory | None:
    row = await conn.fetchrow(
        f"SELECT {_columns(view)} FROM memories WHERE memory_store_id = $1 AND path = $2",
        store_id,
        path,
    )
    return None if row is None else _memory(row)


def _memory_part(row: Any) -> dict[str, Any]:
    return {key: value for key, value in row.items() if key not in ("key", "rolled")}


def _path_cursor(page: str | None) -> str | None:
    cursor = decode_cursor(page)
    return cursor[1] if cursor else None


async def list_memories(
    conn: Pool | Connection,
    store_id: str,
    *,
    path_prefix: str = "/",
    depth: int = 0,
    view: str = "basic",
    limit: int = 20,
    page: str | None = None,
) -> Page[Memory | MemoryPrefix]:
    """Memories below `path_prefix` in byte order of their paths; with `depth` N, those more
    than N segments below it are rolled up into one `memory_prefix` per folder at depth N."""
    after = _path_cursor(page)
    if view == "full":
        limit = min(limit, MAX_FULL_PAGE)
    if depth <= 0:
        rows = await conn.fetch(
            f"""SELECT {_columns(view)} FROM memories
                WHERE memory_store_id = $1 AND starts_with(path, $2)
                  AND ($3::text IS NULL OR path > $3)
                ORDER BY path LIMIT $4""",
            store_id,
            path_prefix,
            after,
            limit + 1,
        )
        items: list[Memory | MemoryPrefix] = [_memory(row) for row in rows[:limit]]
    else:
        # A memory more than `depth` segments below the prefix is listed as its folder at that
        # depth. The folders are found by skipping through the path index (a loose index scan):
        # after a folder `/a/b/` the next path looked for is the first one >= `/a/b0` (`0`
        # follows `/` in byte order), so a page costs its items, not the memories below them.
        parts = "string_to_array(substr({p}, length($2) + 1), '/')"
        rolled = f"(array_length({parts}, 1) > $3)"
        key = (
            f"CASE WHEN {rolled} THEN ($2 || array_to_string(({parts})[1:$3], '/') || '/')"
            " ELSE {p} END"
        )

        def of(column: str) -> tuple[str, str]:
            return rolled.format(p=column), key.format(p=column)

        rolled_m, key_m = of("m.path")
        rolled_n, key_n = of("n.path")
        content = "x.content" if view == "full" else "NULL::text"
        rows = await conn.fetch(
            f"""WITH RECURSIVE walk (path, key, rolled, n) AS (
                    (SELECT m.path, ({key_m}) COLLATE "C", {rolled_m}, 1 FROM memories m
                     WHERE m.memory_store_id = $1 AND starts_with(m.path, $2)
                       AND m.path >= (CASE WHEN $4::text IS NULL THEN $2
                                           WHEN right($4, 1) = '/' THEN left($4, -1) || '0'
                                           ELSE $4 END)
                       AND m.path IS DISTINCT FROM $4
                     ORDER BY m.path LIMIT 1)
                    UNION ALL
                    SELECT n.path, ({key_n}) COLLATE "C", {rolled_n}, w.n + 1
                    FROM walk w, LATERAL (
                        SELECT m.path FROM memories m
                        WHERE m.memory_store_id = $1 AND starts_with(m.path, $2)
                          AND m.path >= (CASE WHEN w.rolled THEN left(w.key, -1) || '0'
                                              ELSE w.path END)
                          AND m.path <> w.path
                        ORDER BY m.path LIMIT 1) n
                    WHERE w.n <= $5
                )
                SELECT w.key, w.rolled, x.id, x.memory_store_id, x.path, {content} AS content,
                       x.content_sha256, x.content_size_bytes, x.memory_version_id,
                       x.created_at, x.updated_at
                FROM walk w LEFT JOIN memories x
                  ON NOT w.rolled AND x.memory_store_id = $1 AND x.path = w.path
                ORDER BY w.key""",
            store_id,
            path_prefix,
            depth,
            after,
            limit,
        )
        items = [
            MemoryPrefix(path=row["key"]) if row["rolled"] else _memory(_memory_part(row))
            for row in rows[:limit]
        ]
    more = len(rows) > limit
    next_page = None
    if more and items:
        last = items[-1]
        # Pages are keyed by path; the time in the cursor is not used.
        next_page = encode_cursor(datetime.fromtimestamp(0).astimezone(), last.path)
    return Page(data=items, next_page=next_page)


# ---- memories: writes --------------------------------------------------------------------------


@dataclass
class Written:
    """What a write did: the memory as it is now (None once deleted), the version it wrote (None
    when the write changed nothing), and whether that version was written by an earlier try."""

    memory: Memory | None
    version_id: str | None
    replayed: bool = False


async def _lock_store(conn: Connection, store_id: str, *, writing: bool) -> Any:
    row = await conn.fetchrow(
        "SELECT id, seq, memory_count, archived_at FROM memory_stores WHERE id = $1 FOR UPDATE",
        store_id,
    )
    if row is None:
        raise NotFoundError(f"no memory store with id {store_id!r}")
    if writing and row["archived_at"] is not None:
        raise InvalidRequestError(
            f"memory store {store_id} is archived: its memories can be read and deleted, "
            "not created or changed"
        )
    return row


async def _replayed(conn: Connection, version_id: str | None) -> Written | None:
    """The outcome of an earlier try that already wrote `version_id`, if any."""
    if version_id is None:
        return None
    row = await conn.fetchrow(
        "SELECT memory_store_id, memory_id FROM memory_versions WHERE id = $1", version_id
    )
    if row is None:
        return None
    current = await conn.fetchrow(
        f"SELECT {_MEMORY_BASIC} FROM memories WHERE id = $1", row["memory_id"]
    )
    return Written(
        memory=None if current is None else _memory(current), version_id=version_id, replayed=True
    )


async def _next_seq(conn: Connection, store_id: str, count_change: int = 0) -> int:
    return await conn.fetchval(
        """UPDATE memory_stores SET seq = seq + 1, memory_count = memory_count + $2
           WHERE id = $1 RETURNING seq""",
        store_id,
        count_change,
    )


async def _add_version(
    conn: Connection,
    *,
    version_id: str,
    store_id: str,
    memory_id: str,
    seq: int,
    operation: str,
    path: str,
    content: str | None,
    actor: dict[str, Any],
) -> None:
    await conn.execute(
        """INSERT INTO memory_versions (id, memory_store_id, memory_id, seq, operation, path,
                                        content, content_sha256, content_size_bytes, created_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           ON CONFLICT (id) DO NOTHING""",
        version_id,
        store_id,
        memory_id,
        seq,
        operation,
        path,
        content,
        None if content is None else content_sha256(content),
        None if content is None else len(content.encode("utf-8")),
        actor,
    )


async def _path_owner(conn: Connection, store_id: str, path: str) -> str | None:
    return await conn.fetchval(
        "SELECT id FROM memories WHERE memory_store_id = $1 AND path = $2", store_id, path
    )


def _conflict(store_id: str, path: str, owner: str) -> MemoryPathConflictError:
    return MemoryPathConflictError(
        f"memory store {store_id} already has a memory at {path} ({owner})", owner
    )


async def create_memory(
    conn: Connection,
    store_id: str,
    path: str,
    content: str,
    actor: dict[str, Any],
    *,
    max_memories: int,
    version_id: str | None = None,
    memory_id: str | None = None,
) -> Written:
    """A new memory at `path`; call inside a transaction."""
    store = await _lock_store(conn, store_id, writing=True)
    if (done := await _replayed(conn, version_id)) is not None:
        return done
    owner = await _path_owner(conn, store_id, path)
    if owner is not None:
        raise _conflict(store_id, path, owner)
    if store["memory_count"] >= max_memories:
        raise InvalidRequestError(
            f"memory store {store_id} holds {store['memory_count']:,} memories, the most a "
            f"store may hold ({max_memories:,}); delete some first"
        )
    seq = await _next_seq(conn, store_id, 1)
    memory_id = memory_id or new_id("mem")
    version_id = version_id or new_id("memver")
    row = await conn.fetchrow(
        f"""INSERT INTO memories (id, memory_store_id, path, content, content_sha256,
                                  content_size_bytes, memory_version_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_MEMORY_BASIC}""",
        memory_id,
        store_id,
        path,
        content,
        content_sha256(content),
        len(content.encode("utf-8")),
        version_id,
    )
    await _add_version(
        conn,
        version_id=version_id,
        store_id=store_id,
        memory_id=memory_id,
        seq=seq,
        operation="created",
        path=path,
        content=content,
        actor=actor,
    )
    return Written(memory=_memory(row), version_id=version_id)


async def update_memory(
    conn: Connection,
    store_id: str,
    memory_id: str,
    actor: dict[str, Any],
    *,
    content: str | None = None,
    path: str | None = None,
    expected_sha256: str | None = None,
    version_id: str | None = None,
) -> Written:
    """New content and/or path; with `expected_sha256`, only if the stored content still has
    that digest. A write that changes nothing succeeds without a version (also when the
    digest differs: the memory already is what the caller wants). Call inside a transaction."""
    await _lock_store(conn, store_id, writing=True)
    if (done := await _replayed(conn, version_id)) is not None:
        return done
    row = await conn.fetchrow(
        "SELECT * FROM memories WHERE memory_store_id = $1 AND id = $2", store_id, memory_id
    )
    if row is None:
        raise NotFoundError(f"no memory with id {memory_id!r} in memory store {store_id}")
    new_content = row["content"] if content is None else content
    new_path = row["path"] if path is None else path
    if new_content == row["content"] and new_path == row["path"]:
        return Written(memory=_memory({k: row[k] for k in _basic_keys()}), version_id=None)
    if expected_sha256 is not None and row["content_sha256"] != expected_sha256:
        raise MemoryPreconditionFailedError(
            f"memory {memory_id} no longer has content_sha256 {expected_sha256} (it is now "
            f"{row['content_sha256']}, at version {row['memory_version_id']}): it was changed "
            "since it was read; read it again"
        )
    if new_path != row["path"]:
        owner = await _path_owner(conn, store_id, new_path)
        if owner is not None:
            raise _conflict(store_id, new_path, owner)
    seq = await _next_seq(conn, store_id)
    version_id = version_id or new_id("memver")
    updated = await conn.fetchrow(
        f"""UPDATE memories SET path = $2, content = $3, content_sha256 = $4,
                content_size_bytes = $5, memory_version_id = $6, updated_at = now()
            WHERE id = $1 RETURNING {_MEMORY_BASIC}""",
        memory_id,
        new_path,
        new_content,
        content_sha256(new_content),
        len(new_content.encode("utf-8")),
        version_id,
    )
    await _add_version(
        conn,
        version_id=version_id,
        store_id=store_id,
        memory_id=memory_id,
        seq=seq,
        operation="modified",
        path=new_path,
        content=new_content,
        actor=actor,
    )
    return Written(memory=_memory(updated), version_id=version_id)


def _basic_keys() -> tuple[str, ...]:
    return (
        "id",
        "memory_store_id",
        "path",
        "content_sha256",
        "content_size_bytes",
        "memory_version_id",
        "created_at",
        "updated_at",
    )


async def delete_memory(
    conn: Connection,
    store_id: str,
    memory_id: str,
    actor: dict[str, Any],
    *,
    expected_sha256: str | None = None,
    version_id: str | None = None,
) -> Written:
    """Delete a memory (allowed in an archived store); its versions stay, with a `deleted` one
    added. With `expected_sha256`, only if the content still has that digest."""
    await _lock_store(conn, store_id, writing=False)
    if (done := await _replayed(conn, version_id)) is not None:
        return done
    row = await conn.fetchrow(
        "SELECT * FROM memories WHERE memory_store_id = $1 AND id = $2", store_id, memory_id
    )
    if row is None:
        raise NotFoundError(f"no memory with id {memory_id!r} in memory store {store_id}")
    if expected_sha256 is not None and row["content_sha256"] != expected_sha256:
        raise MemoryPreconditionFailedError(
            f"memory {memory_id} no longer has content_sha256 {expected_sha256} (it is now "
            f"{row['content_sha256']}): it was changed since it was read, so it was not deleted"
        )
    seq = await _next_seq(conn, store_id, -1)
    version_id = version_id or new_id("memver")
    await conn.execute("DELETE FROM memories WHERE id = $1", memory_id)
    await _add_version(
        conn,
        version_id=version_id,
        store_id=store_id,
        memory_id=memory_id,
        seq=seq,
        operation="deleted",
        path=row["path"],
        content=None,
        actor=actor,
    )
    return Written(memory=None, version_id=version_id)


# ---- versions ----------------------------------------------------------------------------------


_VERSION_BASIC = (
    "id, memory_store_id, memory_id, seq, operation, path, NULL::text AS content, "
    "content_sha256, content_size_bytes, created_by, created_at, redacted_at, redacted_by"
)
_VERSION_FULL = (
    "id, memory_store_id, memory_id, seq, operation, path, content, "
    "content_sha256, content_size_bytes, created_by, created_at, redacted_at, redacted_by"
)


def _version(row: Any) -> MemoryVersion:
    data = dict(row)
    data.pop("seq", None)
    return MemoryVersion.model_validate(data)


async def get_version(
    conn: Pool | Connection, store_id: str, version_id: str, *, view: str = "full"
) -> MemoryVersion:
    row = await conn.fetchrow(
        f"""SELECT {_VERSION_FULL if view == "full" else _VERSION_BASIC} FROM memory_versions
            WHERE memory_store_id = $1 AND id = $2""",
        store_id,
        version_id,
    )
    if row is None:
        raise NotFoundError(f"no memory version {version_id!r} in memory store {store_id}")
    return _version(row)


async def list_versions(
    conn: Pool | Connection,
    store_id: str,
    *,
    memory_id: str | None = None,
    operation: str | None = None,
    session_id: str | None = None,
    api_key_id: str | None = None,
    service_account_id: str | None = None,
    created_at_gte: datetime | None = None,
    created_at_lte: datetime | None = None,
    view: str = "basic",
    limit: int = 20,
    page: str | None = None,
) -> Page[MemoryVersion]:
    """A store's versions, newest first."""
    if view == "full":
        limit = min(limit, MAX_FULL_PAGE)
    cursor = decode_cursor(page)
    before = int(cursor[1]) if cursor and cursor[1].isdigit() else None
    if cursor and before is None:
        raise InvalidRequestError(f"invalid page cursor {page!r}")
    rows = await conn.fetch(
        f"""SELECT {_VERSION_FULL if view == "full" else _VERSION_BASIC} FROM memory_versions
            WHERE memory_store_id = $1
              AND ($2::text IS NULL OR memory_id = $2)
              AND ($3::text IS NULL OR operation = $3)
              AND ($4::text IS NULL OR session_id = $4)
              AND ($5::text IS NULL OR api_key_id = $5)
              AND ($6::text IS NULL OR created_by ->> 'service_account_id' = $6)
              AND ($7::timestamptz IS NULL OR created_at >= $7)
              AND ($8::timestamptz IS NULL OR created_at <= $8)
              AND ($9::bigint IS NULL OR seq < $9)
            ORDER BY seq DESC LIMIT $10""",
        store_id,
        memory_id,
        operation,
        session_id,
        api_key_id,
        service_account_id,
        created_at_gte,
        created_at_lte,
        before,
        limit + 1,
    )
    items = [_version(row) for row in rows[:limit]]
    next_page = None
    if len(rows) > limit:
        next_page = encode_cursor(rows[limit - 1]["created_at"], str(rows[limit - 1]["seq"]))
    return Page(data=items, next_page=next_page)


async def redact_version(
    pool: Pool, store_id: str, version_id: str, actor: dict[str, Any]
) -> MemoryVersion:
    """Clear a version's content and path for good. Refused for the version a live memory
    holds now (change or delete the memory first); redacting twice changes nothing."""
    async with pool.acquire() as conn, conn.transaction():
        await _lock_store(conn, store_id, writing=False)
        row = await conn.fetchrow(
            "SELECT memory_id, redacted_at FROM memory_versions "
            "WHERE memory_store_id = $1 AND id = $2 FOR UPDATE",
            store_id,
            version_id,
        )
        if row is None:
            raise NotFoundError(f"no memory version {version_id!r} in memory store {store_id}")
        head = await conn.fetchval(
            "SELECT 1 FROM memories WHERE id = $1 AND memory_version_id = $2",
            row["memory_id"],
            version_id,
        )
        if head:
            raise InvalidRequestError(
                f"memory version {version_id} is the current version of memory "
                f"{row['memory_id']}, which still exists: update or delete the memory first, "
                "then redact this version"
            )
        if row["redacted_at"] is None:
            await conn.execute(
                """UPDATE memory_versions SET content = NULL, path = NULL, content_sha256 = NULL,
                       content_size_bytes = NULL, redacted_at = now(), redacted_by = $2
                   WHERE id = $1""",
                version_id,
                actor,
            )
        return await get_version(conn, store_id, version_id)


# ---- what session mounts read ------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """A memory as a mount needs it: where it is, what it holds, and at which version."""

    memory_id: str
    path: str
    content_sha256: str
    memory_version_id: str
    content: str | None = None


def _head(row: Any) -> Head:
    return Head(
        memory_id=row["id"],
        path=row["path"],
        content_sha256=row["content_sha256"],
        memory_version_id=row["memory_version_id"],
        content=row.get("content"),
    )


async def store_seq(conn: Pool | Connection, store_id: str) -> int | None:
    return await conn.fetchval("SELECT seq FROM memory_stores WHERE id = $1", store_id)


async def changed_since(
    conn: Connection, store_id: str, seq: int
) -> tuple[int, list[str], dict[str, Head]]:
    """(the store's seq now, the memories changed after `seq`, the current head of each that
    still exists, content included), read from one snapshot."""
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        now = await conn.fetchval("SELECT seq FROM memory_stores WHERE id = $1", store_id)
        if now is None or now <= seq:
            return now if now is not None else seq, [], {}
        ids = [
            r["memory_id"]
            for r in await conn.fetch(
                """SELECT DISTINCT memory_id FROM memory_versions
                   WHERE memory_store_id = $1 AND seq > $2 AND seq <= $3""",
                store_id,
                seq,
                now,
            )
        ]
        rows = await conn.fetch(
            """SELECT id, path, content, content_sha256, memory_version_id FROM memories
               WHERE memory_store_id = $1 AND id = ANY($2::text[])""",
            store_id,
            ids,
        )
        return now, ids, {row["id"]: _head(row) for row in rows}


async def heads(conn: Connection, store_id: str, memory_ids: Sequence[str]) -> dict[str, Head]:
    rows = await conn.fetch(
        """SELECT id, path, content, content_sha256, memory_version_id FROM memories
           WHERE memory_store_id = $1 AND id = ANY($2::text[])""",
        store_id,
        list(memory_ids),
    )
    return {row["id"]: _head(row) for row in rows}


def sync_ids(session_id: str, store_id: str, sync: int, path: str) -> tuple[str, str]:
    """(version id, memory id) of a session's write-back of one path: the same on every try of
    one sync (`sync` counts the mount's committed write-backs)."""
    parts = (session_id, store_id, str(sync), path)
    return derived_id("memver", *parts), derived_id("mem", *parts)
