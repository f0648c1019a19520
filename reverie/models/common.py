"""Shapes every API object shares: ids, metadata, pages, errors."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

T = TypeVar("T")

MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def new_id(prefix: str, source: uuid.UUID | None = None) -> str:
    """`prefix_<hex>`; pass a workflow-made uuid so the id is deterministic under replay."""
    return f"{prefix}_{(source or uuid.uuid4()).hex}"


def derived_id(prefix: str, *parts: str) -> str:
    """A stable id derived from other ids, so a retried activity writes the same rows again."""
    return f"{prefix}_{uuid.uuid5(uuid.NAMESPACE_URL, '/'.join(parts)).hex}"


def _check_metadata(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_METADATA_PAIRS:
        raise ValueError(f"metadata may hold at most {MAX_METADATA_PAIRS} pairs")
    for key, item in value.items():
        if not key or len(key) > MAX_METADATA_KEY:
            raise ValueError(f"metadata keys must be 1-{MAX_METADATA_KEY} characters: {key!r}")
        if len(item) > MAX_METADATA_VALUE:
            raise ValueError(f"metadata value of {key!r} exceeds {MAX_METADATA_VALUE} characters")
    return value


Metadata = Annotated[dict[str, str], AfterValidator(_check_metadata)]


def patch_metadata(current: dict[str, str], patch: dict[str, str | None]) -> dict[str, str]:
    """The API's metadata update: keys set one by one, a None value deletes the key."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


class StrictModel(BaseModel):
    """Inputs refuse unknown fields: a typo must be an error, not a silently ignored option."""

    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_page: str | None = None


class PageRequest(StrictModel):
    limit: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    page: str | None = None


class Timestamps(BaseModel):
    created_at: datetime
    updated_at: datetime
