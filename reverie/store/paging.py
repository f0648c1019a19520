"""Opaque page cursors over (created_at, id), newest first."""

from __future__ import annotations

import base64
import json
from datetime import datetime

from reverie.models.errors import InvalidRequestError


def encode_cursor(created_at: datetime, item_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), item_id]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    if not cursor:
        return None
    try:
        created_at, item_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(created_at), str(item_id)
    except (ValueError, TypeError) as error:
        raise InvalidRequestError(f"invalid page cursor {cursor!r}") from error
