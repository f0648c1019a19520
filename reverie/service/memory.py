"""Memory stores, memories and versions for every front end (the HTTP API, the `reverie memory`
commands, user code): `ReverieClient` inherits these methods.

Every write names its author (`actor`): the API passes the key that authenticated the request
(`api_actor`), the command line and user code the local user (`user_actor`), the session sync
the session (`session_actor`, in `activities/memory.py`).
"""

from __future__ import annotations

import asyncio
import getpass
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from reverie import memory_file_writes, memory_files
from reverie.models.common import Page, PageRequest
from reverie.models.errors import (
    InvalidRequestError,
    MemoryPathConflictError,
    MemoryPreconditionFailedError,
    NotFoundError,
    NotSupportedError,
)
from reverie.models.memory import (
    MAX_MEMORY_STORES_PER_SESSION,
    MEMORY_MOUNT_ROOT,
    Memory,
    MemoryCreate,
    MemoryDeleted,
    MemoryPrefix,
    MemoryStore,
    MemoryStoreCreate,
    MemoryStoreDeleted,
    MemoryStoreResource,
    MemoryStoreResourceParam,
    MemoryStoreUpdate,
    MemoryUpdate,
    MemoryVersion,
    UserActor,
    check_prefix,
    check_sha256,
    path_problem,
    store_slug,
)
from reverie.service.validation import check_id as _id
from reverie.service.validation import invalid as _invalid
from reverie.service.validation import parse as _parse
from reverie.store import memory

if TYPE_CHECKING:
    from reverie.settings import Settings
    from reverie.store.pool import Pool

VIEWS = ("basic", "full")
OPERATIONS = ("created", "modified", "deleted")
MAX_DEPTH = 20


def local_user_id() -> str:
    """The person at this machine (`local:<login>`), as the command line and user code name them."""
    try:
        name = getpass.getuser()
    except Exception:
        name = f"uid{os.getuid()}"
    return f"local:{name}"


def local_actor() -> dict[str, Any]:
    """The person at this machine, as the author of what the command line and user code write."""
    return UserActor(user_id=local_user_id()).model_dump()


def _view(view: str | None, default: str) -> str:
    view = view or default
    if view not in VIEWS:
        raise InvalidRequestError(f"view must be basic or full, not {view!r}")
    return view


def _path(value: Any, what: str = "path") -> str:
    problem = path_problem(value)
    if problem:
        raise InvalidRequestError(f"{what} {value!r} {problem}")
    return value


@dataclass
class ImportReport:
    """What `import_memory_store` did, file by file."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


async def resolve_session_resources(
    pool: Pool, resources: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """A new session's `resources` as it keeps them: each memory store checked (it exists and
    is not archived; at most 8, each once) and snapshotted with its name, description and the
    folder it is mounted at (`/mnt/memory/<slug>`, made unique among the session's stores)."""
    if not resources:
        return []
    params: list[MemoryStoreResourceParam] = []
    for index, item in enumerate(resources):
        kind = item.get("type") if isinstance(item, dict) else None
        if kind in ("file", "github_repository"):
            raise NotSupportedError(
                f"resources[{index}]: {kind} resources are not supported yet (memory stores are)"
            )
        if kind != "memory_store":
            raise InvalidRequestError(
                f"resources[{index}]: a resource must be an object with type memory_store, "
                "file or github_repository"
            )
        try:
            params.append(MemoryStoreResourceParam.model_validate(item))
        except ValidationError as error:
            raise InvalidRequestError(f"resources[{index}]: {_invalid(error).message}") from None
    if len(params) > MAX_MEMORY_STORES_PER_SESSION:
        raise InvalidRequestError(
            f"a session may have at most {MAX_MEMORY_STORES_PER_SESSION} memory stores, "
            f"not {len(params)}"
        )
    ids = [p.memory_store_id for p in params]
    if len(set(ids)) != len(ids):
        raise InvalidRequestError("each memory store may be attached to a session once")
    for store_id in ids:
        _id("memory store", store_id)
    stores = await memory.get_stores(pool, ids)
    taken: set[str] = set()
    out = []
    for param in params:
        store = stores.get(param.memory_store_id)
        if store is None:
            raise NotFoundError(f"no memory store with id {param.memory_store_id!r}")
        if store.archived_at is not None:
            raise InvalidRequestError(
                f"memory store {store.id} is archived and cannot be attached to a new session"
            )
        slug = store_slug(store.name)
        unique, n = slug, 1
        while unique in taken:
            n += 1
            unique = f"{slug}-{n}"
        taken.add(unique)
        out.append(
            MemoryStoreResource(
                memory_store_id=store.id,
                access=param.access or "read_write",
                instructions=param.instructions,
                name=store.name,
                description=store.description,
                mount_path=f"{MEMORY_MOUNT_ROOT}/{unique}",
            ).model_dump()
        )
    return out


class MemoryMethods:
    """Memory operations of `ReverieClient` (which provides `pool` and `settings`)."""

    pool: Pool
    settings: Settings

    # ---- stores ----------------------------------------------------------------------------

    async def create_memory_store(self, params: MemoryStoreCreate | dict[str, Any]) -> MemoryStore:
        return await memory.create_store(self.pool, _parse(MemoryStoreCreate, params))

    async def get_memory_store(self, store_id: str) -> MemoryStore:
        return await memory.get_store(self.pool, _id("memory store", store_id))

    async def update_memory_store(
        self, store_id: str, params: MemoryStoreUpdate | dict[str, Any]
    ) -> MemoryStore:
        params = _parse(MemoryStoreUpdate, params)
        try:
            return await memory.update_store(self.pool, _id("memory store", store_id), params)
        except ValidationError as error:
            raise _invalid(error) from None

    async def list_memory_stores(
        self,
        *,
        limit: int = 20,
        page: str | None = None,
        include_archived: bool = False,
        created_at_gte: datetime | None = None,
        created_at_lte: datetime | None = None,
    ) -> Page[MemoryStore]:
        paging = _parse(PageRequest, {"limit": limit, "page": page})
        return await memory.list_stores(
            self.pool,
            limit=paging.limit,
            page=paging.page,
            include_archived=include_archived,
            created_at_gte=created_at_gte,
            created_at_lte=created_at_lte,
        )

    async def archive_memory_store(self, store_id: str) -> MemoryStore:
        return await memory.archive_store(self.pool, _id("memory store", store_id))

    async def delete_memory_store(self, store_id: str) -> MemoryStoreDeleted:
        """The store with all its memories and versions, for good (sessions that mount it keep
        their files, and can no longer save them)."""
        await memory.delete_store(self.pool, _id("memory store", store_id))
        return MemoryStoreDeleted(id=store_id)

    # ---- memories --------------------------------------------------------------------------

    async def create_memory(
        self,
        store_id: str,
        params: MemoryCreate | dict[str, Any],
        *,
        view: str | None = None,
        actor: dict[str, Any] | None = None,
    ) -> Memory:
        """A new memory at a path; 409 `memory_path_conflict_error` if the path is taken."""
        params = _parse(MemoryCreate, params)
        view = _view(view, "basic")
        async with self.pool.acquire() as conn, conn.transaction():
            written = await memory.create_memory(
                conn,
                _id("memory store", store_id),
                params.path,
                params.content,
                actor or local_actor(),
                max_memories=self.settings.memory_max_memories,
            )
            assert written.memory is not None
            if view == "full":
                return await memory.get_memory(conn, store_id, written.memory.id)
            return written.memory

    async def get_memory(self, store_id: str, memory_id: str, *, view: str | None = None) -> Memory:
        return await memory.get_memory(
            self.pool,
            _id("memory store", store_id),
            _id("memory", memory_id),
            view=_view(view, "full"),
        )

    async def get_memory_by_path(
        self, store_id: str, path: str, *, view: str | None = None
    ) -> Memory:
        found = await memory.find_by_path(
            self.pool, _id("memory store", store_id), _path(path), view=_view(view, "full")
        )
        if found is None:
            await memory.get_store(self.pool, store_id)
            raise NotFoundError(f"no memory at {path} in memory store {store_id}")
        return found

    async def update_memory(
        self,
        store_id: str,
        memory_id: str,
        params: MemoryUpdate | dict[str, Any],
        *,
        view: str | None = None,
        actor: dict[str, Any] | None = None,
    ) -> Memory:
        """New content and/or path; with `precondition`, only if the content is still the one
        the caller read (409 `memory_precondition_failed_error` otherwise)."""
        params = _parse(MemoryUpdate, params)
        view = _view(view, "basic")
        async with self.pool.acquire() as conn, conn.transaction():
            written = await memory.update_memory(
                conn,
                _id("memory store", store_id),
                _id("memory", memory_id),
                actor or local_actor(),
                content=params.content,
                path=params.path,
                expected_sha256=params.precondition.content_sha256 if params.precondition else None,
            )
            if view == "full":
                return await memory.get_memory(conn, store_id, memory_id)
            assert written.memory is not None
            return written.memory

    async def delete_memory(
        self,
        store_id: str,
        memory_id: str,
        *,
        expected_content_sha256: str | None = None,
        actor: dict[str, Any] | None = None,
    ) -> MemoryDeleted:
        if expected_content_sha256 is not None:
            try:
                check_sha256(expected_content_sha256)
            except ValueError as error:
                raise InvalidRequestError(f"expected_content_sha256: {error}") from None
        async with self.pool.acquire() as conn, conn.transaction():
            await memory.delete_memory(
                conn,
                _id("memory store", store_id),
                _id("memory", memory_id),
                actor or local_actor(),
                expected_sha256=expected_content_sha256,
            )
        return MemoryDeleted(id=memory_id)

    async def list_memories(
        self,
        store_id: str,
        *,
        path_prefix: str | None = None,
        depth: int | None = None,
        view: str | None = None,
        limit: int = 20,
        page: str | None = None,
    ) -> Page[Memory | MemoryPrefix]:
        paging = _parse(PageRequest, {"limit": limit, "page": page})
        prefix = path_prefix or "/"
        try:
            check_prefix(prefix)
        except ValueError as error:
            raise InvalidRequestError(str(error)) from None
        depth = depth or 0
        if not 0 <= depth <= MAX_DEPTH:
            raise InvalidRequestError(f"depth must be 0 to {MAX_DEPTH}, not {depth}")
        await memory.get_store(self.pool, _id("memory store", store_id))
        return await memory.list_memories(
            self.pool,
            store_id,
            path_prefix=prefix,
            depth=depth,
            view=_view(view, "basic"),
            limit=paging.limit,
            page=paging.page,
        )

    async def all_memories(
        self, store_id: str, *, path_prefix: str | None = None, view: str = "basic"
    ) -> list[Memory]:
        """Every memory below a prefix (all pages)."""
        found: list[Memory] = []
        page: str | None = None
        while True:
            listed = await self.list_memories(
                store_id,
                path_prefix=path_prefix,
                view=view,
                limit=20 if view == "full" else 100,
                page=page,
            )
            found += [m for m in listed.data if isinstance(m, Memory)]
            if not listed.next_page:
                return found
            page = listed.next_page

    # ---- versions --------------------------------------------------------------------------

    async def list_memory_versions(
        self,
        store_id: str,
        *,
        memory_id: str | None = None,
        operation: str | None = None,
        session_id: str | None = None,
        api_key_id: str | None = None,
        service_account_id: str | None = None,
        created_at_gte: datetime | None = None,
        created_at_lte: datetime | None = None,
        view: str | None = None,
        limit: int = 20,
        page: str | None = None,
    ) -> Page[MemoryVersion]:
        """A store's versions, newest first (also those of deleted memories)."""
        paging = _parse(PageRequest, {"limit": limit, "page": page})
        if operation is not None and operation not in OPERATIONS:
            raise InvalidRequestError(
                f"operation must be created, modified or deleted, not {operation!r}"
            )
        for kind, value in (
            ("memory", memory_id),
            ("session", session_id),
            ("API key", api_key_id),
            ("service account", service_account_id),
        ):
            if value is not None:
                _id(kind, value)
        await memory.get_store(self.pool, _id("memory store", store_id))
        return await memory.list_versions(
            self.pool,
            store_id,
            memory_id=memory_id,
            operation=operation,
            session_id=session_id,
            api_key_id=api_key_id,
            service_account_id=service_account_id,
            created_at_gte=created_at_gte,
            created_at_lte=created_at_lte,
            view=_view(view, "basic"),
            limit=paging.limit,
            page=paging.page,
        )

    async def get_memory_version(
        self, store_id: str, version_id: str, *, view: str | None = None
    ) -> MemoryVersion:
        return await memory.get_version(
            self.pool,
            _id("memory store", store_id),
            _id("memory version", version_id),
            view=_view(view, "full"),
        )

    async def redact_memory_version(
        self, store_id: str, version_id: str, *, actor: dict[str, Any] | None = None
    ) -> MemoryVersion:
        """Clear a version's content and path for good; never the current version of a
        memory that exists."""
        return await memory.redact_version(
            self.pool,
            _id("memory store", store_id),
            _id("memory version", version_id),
            actor or local_actor(),
        )

    async def restore_memory_version(
        self, store_id: str, version_id: str, *, actor: dict[str, Any] | None = None
    ) -> Memory:
        """Reverie's addition: write an old version's content (and path) back as a new
        version. A live memory is updated, guarded by the digest it had when this began (a
        change made meanwhile is not overwritten); a deleted one is created again (a new
        memory, at the version's path)."""
        old = await self.get_memory_version(store_id, version_id, view="full")
        if old.redacted_at is not None:
            raise InvalidRequestError(
                f"memory version {version_id} is redacted: nothing to restore"
            )
        if old.operation == "deleted" or old.content is None or old.path is None:
            raise InvalidRequestError(
                f"memory version {version_id} records a deletion; restore the version before it"
            )
        try:
            current = await memory.get_memory(self.pool, store_id, old.memory_id, view="basic")
        except NotFoundError:
            return await self.create_memory(
                store_id, {"path": old.path, "content": old.content}, view="full", actor=actor
            )
        return await self.update_memory(
            store_id,
            current.id,
            {
                "content": old.content,
                "path": old.path,
                "precondition": {
                    "type": "content_sha256",
                    "content_sha256": current.content_sha256,
                },
            },
            view="full",
            actor=actor,
        )

    # ---- directory trees -------------------------------------------------------------------

    async def export_memory_store(self, store_id: str, directory: str | Path) -> int:
        """Write every memory as a file under `directory` (made if missing; files there with
        a memory's path are replaced, nothing else is touched). Answers how many."""
        root = Path(directory).expanduser()
        await asyncio.to_thread(root.mkdir, parents=True, exist_ok=True)
        count = 0
        for item in await self.all_memories(store_id, view="full"):
            try:
                await asyncio.to_thread(
                    memory_file_writes.write_file, root, item.path[1:], item.content or ""
                )
            except OSError as error:
                raise InvalidRequestError(
                    f"cannot write {item.path} under {root}: {error.strerror or error}"
                ) from None
            count += 1
        return count

    async def import_memory_store(
        self, store_id: str, directory: str | Path, *, actor: dict[str, Any] | None = None
    ) -> ImportReport:
        """Every regular file under `directory` becomes the memory at its path: created, or
        updated when its content differs (guarded by the digest read just before, so a change
        made meanwhile is reported, not overwritten). Links, special files, non-UTF-8 or
        oversized files and names that are not memory paths are skipped with the reason."""
        root = Path(directory).expanduser()
        if not await asyncio.to_thread(root.is_dir):
            raise InvalidRequestError(f"{root} is not a directory")
        await self.get_memory_store(store_id)
        limit = max(4 * self.settings.memory_max_memories, 20_000)
        scan = await asyncio.to_thread(memory_files.walk, root, limit)
        if not scan.complete:
            raise InvalidRequestError(f"{root} holds more than {limit:,} files and folders")
        report = ImportReport(skipped=dict(scan.skipped))
        for rel in sorted(scan.files):
            path = "/" + rel
            problem = memory_files.name_problem(rel) or path_problem(path)
            if problem:
                report.skipped[rel] = f"not a valid memory path: it {problem}"
                continue
            try:
                read = await asyncio.to_thread(memory_files.read_file, root, rel)
            except memory_files.Skip as skip:
                report.skipped[rel] = skip.reason
                continue
            if read is None:
                continue
            existing = await memory.find_by_path(self.pool, store_id, path, view="basic")
            try:
                if existing is None:
                    await self.create_memory(
                        store_id, {"path": path, "content": read.content}, actor=actor
                    )
                    report.created.append(path)
                elif existing.content_sha256 == read.sha256:
                    report.unchanged.append(path)
                else:
                    await self.update_memory(
                        store_id,
                        existing.id,
                        {
                            "content": read.content,
                            "precondition": {
                                "type": "content_sha256",
                                "content_sha256": existing.content_sha256,
                            },
                        },
                        actor=actor,
                    )
                    report.updated.append(path)
            except (MemoryPathConflictError, MemoryPreconditionFailedError) as error:
                report.skipped[rel] = f"changed meanwhile by someone else: {error.message}"
            except InvalidRequestError as error:
                report.skipped[rel] = error.message
        return report
