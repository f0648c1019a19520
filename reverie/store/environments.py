"""Environments."""

from __future__ import annotations

from typing import Any

from reverie.models.common import STORED, Page, new_id, patch_metadata
from reverie.models.environments import (
    Environment,
    EnvironmentConfig,
    EnvironmentCreate,
    EnvironmentUpdate,
)
from reverie.models.errors import InvalidRequestError, NotFoundError
from reverie.store.paging import cursor_args, page_of
from reverie.store.pool import Connection, Pool


def _environment(row: Any) -> Environment:
    return Environment.model_validate(dict(row), context=STORED)


async def create(pool: Pool, params: EnvironmentCreate) -> Environment:
    row = await pool.fetchrow(
        """INSERT INTO environments (id, name, description, networking, metadata)
           VALUES ($1, $2, $3, $4, $5) RETURNING *""",
        new_id("env"),
        params.name,
        params.description,
        params.networking.model_dump(mode="json"),
        params.metadata,
    )
    return _environment(row)


async def get(conn: Pool | Connection, environment_id: str) -> Environment:
    row = await conn.fetchrow("SELECT * FROM environments WHERE id = $1", environment_id)
    if row is None:
        raise NotFoundError(f"no environment with id {environment_id!r}")
    return _environment(row)


async def update(pool: Pool, environment_id: str, params: EnvironmentUpdate) -> Environment:
    async with pool.acquire() as conn, conn.transaction():
        current = await get(conn, environment_id)
        if current.archived_at is not None:
            raise InvalidRequestError(f"environment {environment_id} is archived and read-only")
        merged = current.model_dump(include=set(EnvironmentConfig.model_fields))
        merged.update(params.model_dump(exclude_unset=True, exclude={"metadata"}))
        if params.metadata is not None:
            merged["metadata"] = patch_metadata(current.metadata, params.metadata)
        config = EnvironmentConfig.model_validate(merged)
        row = await conn.fetchrow(
            """UPDATE environments SET name = $2, description = $3, networking = $4,
                   metadata = $5, updated_at = now()
               WHERE id = $1 RETURNING *""",
            environment_id,
            config.name,
            config.description,
            config.networking.model_dump(mode="json"),
            config.metadata,
        )
        return _environment(row)


async def list_environments(
    pool: Pool, *, limit: int = 20, page: str | None = None, include_archived: bool = False
) -> Page[Environment]:
    after, after_id = cursor_args(page)
    rows = await pool.fetch(
        """SELECT * FROM environments
           WHERE ($1::boolean OR archived_at IS NULL)
             AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))
           ORDER BY created_at DESC, id DESC LIMIT $4""",
        include_archived,
        after,
        after_id,
        limit + 1,
    )
    return page_of(rows, limit, _environment)


async def archive(pool: Pool, environment_id: str) -> Environment:
    row = await pool.fetchrow(
        """UPDATE environments SET archived_at = coalesce(archived_at, now()), updated_at = now()
           WHERE id = $1 RETURNING *""",
        environment_id,
    )
    if row is None:
        raise NotFoundError(f"no environment with id {environment_id!r}")
    return _environment(row)
