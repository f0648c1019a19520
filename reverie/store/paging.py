"""Opaque page cursors over (created_at, id), newest first."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar

from reverie.models.common import Page, check_json
from reverie.models.errors import InvalidRequestError


class Listed(Protocol):
    id: str
    created_at: datetime


T = TypeVar("T", bound=Listed)


def encode_cursor(created_at: datetime, item_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), item_id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    try:
        created_at, item_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        check_json(item_id)  # a forged cursor must not carry a NUL into a query
        return datetime.fromisoformat(created_at), str(item_id)
    except (ValueError, TypeError) as error:
        raise InvalidRequestError(f"invalid page cursor {cursor!r}") from error


def cursor_args(page: str | None) -> tuple[datetime | None, str]:
    """The `(created_at, id)` bounds a keyset query compares against (none on the first page)."""
    cursor = decode_cursor(page)
    return (cursor[0], cursor[1]) if cursor else (None, "")


def page_of(rows: Sequence[Any], limit: int, to_item: Callable[[Any], T]) -> Page[T]:
    """A page from `limit + 1` rows: the extra row only says that another page exists."""
    items = [to_item(row) for row in rows[:limit]]
    more = len(rows) > limit
    return Page(
        data=items,
        next_page=encode_cursor(items[-1].created_at, items[-1].id) if more else None,
    )
