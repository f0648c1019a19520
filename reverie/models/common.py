"""Shapes every API object shares: ids, metadata, pages, errors."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, model_validator

T = TypeVar("T")

MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100
# Deepest nesting of objects and arrays a request may hold, counted from the request itself
# (`{"tools": [{"input_schema": {}}]}` is 4 deep). Deeper input is refused with a clear error
# instead of meeting a RecursionError in a JSON encoder, the database driver or a validator.
MAX_JSON_DEPTH = 64
# PostgreSQL cannot store U+0000 in text or jsonb, nor an unpaired surrogate in any UTF-8 text.
# Input holding them is refused; what a model or a tool produced is recorded with NUL shown as
# U+2400 (SYMBOL FOR NULL, "␀") and an unpaired surrogate as U+FFFD ("�").
NUL_MARKER = "\u2400"
SURROGATE_MARKER = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def new_id(prefix: str, source: uuid.UUID | None = None) -> str:
    """`prefix_<hex>`; pass a workflow-made uuid so the id is deterministic under replay."""
    return f"{prefix}_{(source or uuid.uuid4()).hex}"


def derived_id(prefix: str, *parts: str) -> str:
    """A stable id derived from other ids, so a retried activity writes the same rows again."""
    return f"{prefix}_{uuid.uuid5(uuid.NAMESPACE_URL, '/'.join(parts)).hex}"


def _where(path: tuple[str | int, ...]) -> str:
    """`content[0].text` from ("content", 0, "text"); a very deep path by its first steps."""
    out = ""
    for part in path[:6]:
        name = str(part) if len(str(part)) <= 40 else str(part)[:39] + "…"
        out += f"[{part}]" if isinstance(part, int) else (f".{name}" if out else name)
    if len(path) > 6:
        out += f"... ({len(path)} levels down)"
    return out or "the request"


def _text_problem(text: str) -> str | None:
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains a NUL character (U+0000), which Reverie does not accept in text"
    return (
        f"contains an unpaired surrogate (U+{ord(found.group()):04X}), which is not valid "
        "Unicode text"
    )


def check_json(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse input that cannot be stored or processed safely: text holding NUL (or an
    unpaired surrogate), in keys or values, and nesting deeper than `max_depth`.

    Iterative, so that input nested far too deep for Python's stack still gets a clear
    `ValueError` naming where the problem is.
    """
    stack: list[tuple[Any, tuple[str | int, ...], int]] = [(value, (), 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                raise ValueError(f"{_where(path)} {problem}")
        elif isinstance(item, dict | list | tuple):
            if depth >= max_depth:
                raise ValueError(
                    f"{_where(path)} is nested deeper than {max_depth} levels of objects and "
                    "arrays, the most Reverie accepts"
                )
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            for key, child in pairs:
                if isinstance(key, str):
                    problem = _text_problem(key)
                    if problem:
                        raise ValueError(f"{_where(path)} has a key that {problem}: {key!r}")
                stack.append((child, (*path, key), depth + 1))


def _needs_scrub(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return True
        elif isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and _UNSTORABLE.search(key):
                    return True
                stack.append(child)
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return False


def _scrub_text(text: str) -> tuple[str, int]:
    found = len(_UNSTORABLE.findall(text))
    if not found:
        return text, 0
    # Through UTF-16 so that a well-formed surrogate pair (never in a Python str from JSON,
    # but possible from code) becomes its character and only unpaired halves become U+FFFD.
    text = text.replace("\x00", NUL_MARKER)
    fixed = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return fixed, found


def scrub_json(value: Any) -> tuple[Any, int]:
    """(a storable copy of `value`, how many characters were replaced): NUL becomes
    `NUL_MARKER`, an unpaired surrogate `SURROGATE_MARKER`, in keys and values at any depth.

    For what Reverie records but did not choose: model text, tool input and tool output. The
    rest of the value is kept as it was; a value with nothing to replace is returned as is.
    """
    if not _needs_scrub(value):
        return value, 0
    copy = json.loads(json.dumps(value, default=str))
    replaced = 0
    root = [copy]
    stack: list[Any] = [root]
    while stack:
        container = stack.pop()
        if isinstance(container, dict):
            for key in list(container):
                child = container[key]
                if isinstance(child, str):
                    container[key], n = _scrub_text(child)
                    replaced += n
                elif isinstance(child, dict | list):
                    stack.append(child)
                new_key, n = _scrub_text(key)
                if n:
                    replaced += n
                    container[new_key] = container.pop(key)
        else:
            for index, child in enumerate(container):
                if isinstance(child, str):
                    container[index], n = _scrub_text(child)
                    replaced += n
                elif isinstance(child, dict | list):
                    stack.append(child)
    return root[0], replaced


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
    """Inputs refuse unknown fields (a typo must be an error, not a silently ignored option),
    text with NUL characters and JSON nested too deep (see `check_json`): every request model
    derives from this, so each of them refuses these before anything is written."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict | list) and not (info.context or {}).get("stored"):
            check_json(data)
        return data


# Validation context for objects read back from the store: they were checked when written, and
# a limit made stricter later must not make them unreadable (a session running on one would
# fail), so `StrictModel` skips `check_json` for them.
STORED: dict[str, Any] = {"stored": True}


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_page: str | None = None


class PageRequest(StrictModel):
    limit: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    page: str | None = None


class Timestamps(BaseModel):
    created_at: datetime
    updated_at: datetime
