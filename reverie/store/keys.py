"""API keys, stored as the SHA-256 digest of their secret only."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from reverie.models.common import Page, new_id
from reverie.models.errors import NotFoundError
from reverie.models.keys import KEY_PREFIX, ApiKey, CreatedApiKey
from reverie.store.paging import cursor_args, page_of
from reverie.store.pool import Pool

# `last_used_at` is written at most this often per key, so that a busy key does not turn every
# request into a row update.
LAST_USED_RESOLUTION = timedelta(minutes=1)
# Compared against when a key id is unknown, so an unknown id costs the same as a wrong secret.
_DUMMY_DIGEST = hashlib.sha256(b"reverie: no such key").digest()


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _key(row: Any) -> ApiKey:
    return ApiKey.model_validate(dict(row))


def split(presented: str) -> tuple[str, str] | None:
    """(key id, secret) of a presented key, or None when it is not shaped like one of ours."""
    key_id, dot, secret = presented.partition(".")
    if not dot or not key_id.startswith(KEY_PREFIX) or not secret or len(presented) > 200:
        return None
    return key_id, secret


async def create(pool: Pool, name: str, created_by: str) -> CreatedApiKey:
    key_id = new_id(KEY_PREFIX.rstrip("_"))
    secret = secrets.token_urlsafe(32)
    row = await pool.fetchrow(
        """INSERT INTO api_keys (id, name, secret_sha256, created_by) VALUES ($1, $2, $3, $4)
           RETURNING id, name, created_by, created_at, last_used_at, revoked_at""",
        key_id,
        name,
        _digest(secret),
        created_by,
    )
    return CreatedApiKey.model_validate({**dict(row), "key": f"{key_id}.{secret}"})


async def verify(pool: Pool, presented: str) -> ApiKey | None:
    """The live key `presented` names, or None; the secret is compared in constant time."""
    parts = split(presented)
    row = None
    if parts is not None:
        row = await pool.fetchrow(
            """SELECT id, name, created_by, created_at, last_used_at, revoked_at, secret_sha256
               FROM api_keys WHERE id = $1""",
            parts[0],
        )
    expected = row["secret_sha256"] if row is not None else _DUMMY_DIGEST
    matches = hmac.compare_digest(expected, _digest(parts[1] if parts else presented))
    if row is None or not matches or row["revoked_at"] is not None:
        return None
    key = ApiKey.model_validate({k: v for k, v in dict(row).items() if k != "secret_sha256"})
    now = datetime.now(UTC)
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        await pool.execute("UPDATE api_keys SET last_used_at = $2 WHERE id = $1", key.id, now)
    return key


async def list_keys(
    pool: Pool, *, limit: int = 20, page: str | None = None, include_revoked: bool = False
) -> Page[ApiKey]:
    before, before_id = cursor_args(page)
    rows = await pool.fetch(
        """SELECT id, name, created_by, created_at, last_used_at, revoked_at FROM api_keys
           WHERE ($1::timestamptz IS NULL OR (created_at, id) < ($1, $2))
             AND ($3 OR revoked_at IS NULL)
           ORDER BY created_at DESC, id DESC LIMIT $4""",
        before,
        before_id,
        include_revoked,
        limit + 1,
    )
    return page_of(rows, limit, _key)


async def revoke(pool: Pool, key_id: str) -> ApiKey:
    row = await pool.fetchrow(
        """UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
           RETURNING id, name, created_by, created_at, last_used_at, revoked_at""",
        key_id,
    )
    if row is None:
        raise NotFoundError(f"no API key with id {key_id!r}")
    return _key(row)
