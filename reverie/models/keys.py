"""API keys: what the HTTP API accepts as `x-api-key` or `Authorization: Bearer`."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from reverie.models.common import StrictModel

# `rvk_<id>.<secret>`: the id finds the row, the secret is compared by digest.
KEY_PREFIX = "rvk_"


class ApiKeyCreate(StrictModel):
    name: str = Field(min_length=1, max_length=256)


class ApiKey(BaseModel):
    """A key as listed: never its secret, which only `CreatedApiKey` carries, once."""

    type: Literal["api_key"] = "api_key"
    id: str
    name: str
    created_by: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class CreatedApiKey(ApiKey):
    key: str
