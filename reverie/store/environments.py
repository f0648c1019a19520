"""Environments.

A row keeps `networking` as `{type, allowed_hosts}` (the form every Reverie version reads) and
the rest of the SDK's `config` in columns of their own (`allow_mcp_servers`,
`allow_package_managers`, `packages`), so that a worker of an older version, still running
during an upgrade, reads a new row and an older writer's row reads back whole.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from reverie.models.common import STORED, Page, new_id, patch_metadata
from reverie.models.environments import (
    DEFAULT_ENVIRONMENT_ID,
    CloudConfig,
    Environment,
    EnvironmentCreate,
    EnvironmentUpdate,
    LimitedNetworking,
    check_supported,
)
from reverie.models.errors import InvalidRequestError, NotFoundError
from reverie.store import webhooks
from reverie.store.paging import cursor_args, page_of
from reverie.store.pool import Connection, Pool


def _environment(row: Any) -> Environment:
    networking = dict(row["networking"])
    if networking.get("type") == "limited":
        networking["allow_mcp_servers"] = row["allow_mcp_servers"]
        networking["allow_package_managers"] = row["allow_package_managers"]
    return Environment.model_validate(
        {
            "id": row["id"],
            "name": row["name"],
            "description": row["description"],
            "config": {"type": "cloud", "networking": networking, "packages": row["packages"]},
            "metadata": row["metadata"],
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "archived_at": row["archived_at"],
        },
        context=STORED,
    )


def _columns(config: CloudConfig) -> tuple[dict[str, Any], bool, bool, dict[str, Any]]:
    """(networking as stored, allow_mcp_servers, allow_package_managers, packages)."""
    networking = config.networking
    if isinstance(networking, LimitedNetworking):
        stored = {"type": "limited", "allowed_hosts": networking.allowed_hosts}
        flags = (networking.allow_mcp_servers, networking.allow_package_managers)
    else:
        stored, flags = {"type": networking.type}, (False, False)
    return stored, *flags, config.packages.model_dump(mode="json")


async def create(pool: Pool, params: EnvironmentCreate) -> Environment:
    check_supported(params.config)
    config = params.cloud_config()
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            """INSERT INTO environments (id, name, description, networking, allow_mcp_servers,
                                         allow_package_managers, packages, metadata)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING *""",
            new_id("env"),
            params.name,
            params.description,
            *_columns(config),
            params.metadata,
        )
        await webhooks.record(conn, "environment.created", row["id"])
    return _environment(row)


async def get(conn: Pool | Connection, environment_id: str) -> Environment:
    row = await conn.fetchrow("SELECT * FROM environments WHERE id = $1", environment_id)
    if row is None:
        raise NotFoundError(f"no environment with id {environment_id!r}")
    return _environment(row)


async def update(pool: Pool, environment_id: str, params: EnvironmentUpdate) -> Environment:
    check_supported(params.config)
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT * FROM environments WHERE id = $1 FOR UPDATE", environment_id
        )
        if row is None:
            raise NotFoundError(f"no environment with id {environment_id!r}")
        current = _environment(row)
        if current.archived_at is not None:
            raise InvalidRequestError(f"environment {environment_id} is archived and read-only")
        config = params.apply_to(current.config)
        check_supported(config)
        given = params.model_fields_set
        patch = params.metadata_patch()
        metadata = current.metadata if patch is None else patch_metadata(current.metadata, patch)
        # The same limits as at creation, on the result of the patch.
        EnvironmentCreate.model_validate({"name": current.name, "metadata": metadata})
        row = await conn.fetchrow(
            """UPDATE environments SET name = $2, description = $3, networking = $4,
                   allow_mcp_servers = $5, allow_package_managers = $6, packages = $7,
                   metadata = $8, updated_at = now()
               WHERE id = $1 RETURNING *""",
            environment_id,
            params.name if params.name is not None else current.name,
            params.description if "description" in given else current.description,
            *_columns(config),
            metadata,
        )
        await webhooks.record(conn, "environment.updated", environment_id)
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
    async with pool.acquire() as conn, conn.transaction():
        newly = await conn.fetchval(
            "SELECT archived_at IS NULL FROM environments WHERE id = $1 FOR UPDATE",
            environment_id,
        )
        row = await conn.fetchrow(
            """UPDATE environments SET archived_at = coalesce(archived_at, now()),
                   updated_at = now()
               WHERE id = $1 RETURNING *""",
            environment_id,
        )
        if row is None:
            raise NotFoundError(f"no environment with id {environment_id!r}")
        if newly:
            await webhooks.record(conn, "environment.archived", environment_id)
    return _environment(row)


async def delete(pool: Pool, environment_id: str) -> None:
    """Remove an environment for good. Refused for the default one and for one that sessions
    still name (they read it on every tool run): archive it instead, or delete those first."""
    if environment_id == DEFAULT_ENVIRONMENT_ID:
        raise InvalidRequestError("the default environment cannot be deleted")
    async with pool.acquire() as conn, conn.transaction():
        found = await conn.fetchval(
            "SELECT 1 FROM environments WHERE id = $1 FOR UPDATE", environment_id
        )
        if not found:
            raise NotFoundError(f"no environment with id {environment_id!r}")
        # The count gives the clear message; the foreign key from sessions (0004) refuses
        # the delete if a session is created between this count and the delete.
        using = await conn.fetchval(
            "SELECT count(*) FROM sessions WHERE environment_id = $1", environment_id
        )
        if using:
            raise InvalidRequestError(
                f"environment {environment_id} is used by {using} session(s) and cannot be "
                "deleted; archive it instead (no new session can use it), or delete those "
                "sessions first"
            )
        try:
            await conn.execute("DELETE FROM environments WHERE id = $1", environment_id)
            await webhooks.record(conn, "environment.deleted", environment_id)
        except asyncpg.ForeignKeyViolationError as error:
            raise InvalidRequestError(
                f"environment {environment_id} is used by a session and cannot be deleted"
            ) from error
