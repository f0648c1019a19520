"""Memory stores, memories and their versions, in the SDK's shapes (`client.beta.memory_stores`).

A memory store (`memstore_`) holds text memories (`mem_`) addressed by path; every change to a
memory appends an immutable version (`memver_`) naming who made it. Answers are
`BetaManagedAgentsMemoryStore`, `BetaManagedAgentsMemory`, `BetaManagedAgentsMemoryPrefix`,
`BetaManagedAgentsMemoryVersion`; requests the SDK's `memory_store_*_params` and
`memory_stores/memory_*_params`. The rules (path syntax, sizes, limits) are the hosted API's.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from reverie.models.common import Metadata, StrictModel

MAX_STORE_NAME = 255
MAX_STORE_DESCRIPTION = 1024
MAX_INSTRUCTIONS = 4096
MAX_PATH_BYTES = 1024
MAX_PATH_SEGMENTS = 20
MAX_CONTENT_BYTES = 102_400
DEFAULT_MAX_MEMORIES = 10_000
MAX_MEMORY_STORES_PER_SESSION = 8
# A page of memories or versions with their content holds at most this many (the SDK's rule).
MAX_FULL_PAGE = 20
MEMORY_MOUNT_ROOT = "/mnt/memory"

MemoryView = Literal["basic", "full"]
Operation = Literal["created", "modified", "deleted"]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SLUG_RUNS = re.compile(r"[^a-z0-9]+")
MAX_SLUG = 64


def content_sha256(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def _bad_character(char: str) -> bool:
    # Cc: controls (NUL included), Cf: format characters, Cs: unpaired surrogates, and the line
    # and paragraph separators.
    return unicodedata.category(char) in ("Cc", "Cf", "Cs") or char in "\u2028\u2029"


def path_problem(path: Any) -> str | None:
    """Why `path` is not a valid memory path (None when it is): starts with `/`, 1 to 20
    segments, none empty, `.` or `..`, no control or format characters nor U+2028/U+2029,
    Unicode NFC, at most 1,024 bytes of UTF-8."""
    if not isinstance(path, str):
        return "must be a string"
    if not path.startswith("/"):
        return "must start with /"
    bad = next((c for c in path if _bad_character(c)), None)
    if bad is not None:
        return f"contains the character U+{ord(bad):04X}, which a memory path may not hold"
    if unicodedata.normalize("NFC", path) != path:
        return "must be in Unicode Normalization Form C"
    size = len(path.encode("utf-8"))
    if size > MAX_PATH_BYTES:
        return f"is {size:,} bytes long; a memory path is at most {MAX_PATH_BYTES:,} bytes"
    segments = path[1:].split("/")
    if len(segments) > MAX_PATH_SEGMENTS:
        return f"has {len(segments)} segments; a memory path has at most {MAX_PATH_SEGMENTS}"
    for segment in segments:
        if segment in ("", ".", ".."):
            shown = "an empty segment" if not segment else f"a {segment!r} segment"
            return f"has {shown}"
    return None


def check_path(path: Any) -> str:
    problem = path_problem(path)
    if problem:
        raise ValueError(f"{path!r} {problem}")
    return path


def content_problem(content: str) -> str | None:
    """Why `content` cannot be a memory's content (None when it can)."""
    try:
        size = len(content.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid Unicode text (it holds an unpaired surrogate)"
    if size > MAX_CONTENT_BYTES:
        return (
            f"is {size:,} bytes of UTF-8; a memory holds at most {MAX_CONTENT_BYTES:,} bytes "
            "(100 kB)"
        )
    if "\x00" in content:
        return "contains a NUL character (U+0000), which Reverie cannot store"
    return None


def check_content(content: str) -> str:
    problem = content_problem(content)
    if problem:
        raise ValueError(f"content {problem}")
    return content


def check_sha256(value: str) -> str:
    if not _SHA256.match(value):
        raise ValueError(f"{value!r} is not a SHA-256 digest (64 lowercase hexadecimal characters)")
    return value


def check_prefix(prefix: str) -> str:
    """A `path_prefix`: `/`, or a valid path followed by `/` (it matches whole segments)."""
    if prefix == "/":
        return prefix
    if not prefix.endswith("/"):
        raise ValueError(f"path_prefix {prefix!r} must end with /")
    problem = path_problem(prefix[:-1])
    if problem:
        raise ValueError(f"path_prefix {prefix!r} {problem}")
    return prefix


def store_slug(name: str) -> str:
    """The folder a store appears as under /mnt/memory/: the name lower-cased, every run of
    characters other than ASCII letters and digits made one hyphen (none at the ends)."""
    slug = _SLUG_RUNS.sub("-", name.lower()).strip("-")[:MAX_SLUG].strip("-")
    return slug or "memory"


def _store_name(value: str) -> str:
    if not value or len(value) > MAX_STORE_NAME:
        raise ValueError(f"must be 1 to {MAX_STORE_NAME} characters")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise ValueError("may not contain control characters")
    return value


# ---- actors ------------------------------------------------------------------------------------


class SessionActor(BaseModel):
    type: Literal["session_actor"] = "session_actor"
    session_id: str


class ApiActor(BaseModel):
    type: Literal["api_actor"] = "api_actor"
    api_key_id: str


class UserActor(BaseModel):
    type: Literal["user_actor"] = "user_actor"
    user_id: str


Actor = Annotated[SessionActor | ApiActor | UserActor, Field(discriminator="type")]


# ---- stores ------------------------------------------------------------------------------------


class MemoryStoreCreate(StrictModel):
    """`MemoryStoreCreateParams`."""

    name: str
    description: str = Field(default="", max_length=MAX_STORE_DESCRIPTION)
    metadata: Metadata = Field(default_factory=dict)

    _name = field_validator("name")(_store_name)

    @field_validator("description", mode="before")
    @classmethod
    def _null_description(cls, value: Any) -> Any:
        return "" if value is None else value


class MemoryStoreUpdate(StrictModel):
    """`MemoryStoreUpdateParams`: what is left out is kept; metadata is patched key by key."""

    name: str | None = None
    description: str | None = Field(default=None, max_length=MAX_STORE_DESCRIPTION)
    metadata: dict[str, str | None] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else _store_name(value)


class MemoryStore(BaseModel):
    """`BetaManagedAgentsMemoryStore`."""

    type: Literal["memory_store"] = "memory_store"
    id: str
    name: str
    description: str = ""
    metadata: dict[str, str] = {}
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None = None


class MemoryStoreDeleted(BaseModel):
    """`BetaManagedAgentsDeletedMemoryStore`."""

    type: Literal["memory_store_deleted"] = "memory_store_deleted"
    id: str


# ---- memories ----------------------------------------------------------------------------------


class MemoryCreate(StrictModel):
    """`MemoryCreateParams`: `content` null is an empty memory."""

    path: str
    content: str | None

    _path = field_validator("path")(check_path)

    @field_validator("content")
    @classmethod
    def _content(cls, value: str | None) -> str:
        return check_content(value or "")


class Precondition(StrictModel):
    """`BetaManagedAgentsPreconditionParam`."""

    type: Literal["content_sha256"]
    content_sha256: str

    _sha = field_validator("content_sha256")(check_sha256)


class MemoryUpdate(StrictModel):
    """`MemoryUpdateParams`: new content, a new path (a rename), or both, optionally only if
    the stored content still has the digest the caller last saw."""

    content: str | None = None
    path: str | None = None
    precondition: Precondition | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        return None if value is None else check_path(value)

    @field_validator("content")
    @classmethod
    def _content(cls, value: str | None) -> str | None:
        return None if value is None else check_content(value)


class Memory(BaseModel):
    """`BetaManagedAgentsMemory`; `content` is None in the basic view."""

    type: Literal["memory"] = "memory"
    id: str
    memory_store_id: str
    path: str
    content: str | None = None
    content_sha256: str
    content_size_bytes: int
    memory_version_id: str
    created_at: datetime
    updated_at: datetime


class MemoryPrefix(BaseModel):
    """`BetaManagedAgentsMemoryPrefix`: memories below the listed depth, rolled up."""

    type: Literal["memory_prefix"] = "memory_prefix"
    path: str


class MemoryDeleted(BaseModel):
    """`BetaManagedAgentsDeletedMemory`."""

    type: Literal["memory_deleted"] = "memory_deleted"
    id: str


class MemoryVersion(BaseModel):
    """`BetaManagedAgentsMemoryVersion`."""

    type: Literal["memory_version"] = "memory_version"
    id: str
    memory_id: str
    memory_store_id: str
    operation: Operation
    path: str | None = None
    content: str | None = None
    content_sha256: str | None = None
    content_size_bytes: int | None = None
    created_at: datetime
    created_by: Actor | None = None
    redacted_at: datetime | None = None
    redacted_by: Actor | None = None


# ---- sessions ----------------------------------------------------------------------------------


class MemoryStoreResourceParam(StrictModel):
    """`BetaManagedAgentsMemoryStoreResourceParam`: a store attached to a new session."""

    type: Literal["memory_store"]
    memory_store_id: str = Field(min_length=1, max_length=256)
    access: Literal["read_write", "read_only"] | None = None
    instructions: str | None = Field(default=None, max_length=MAX_INSTRUCTIONS)


class MemoryStoreResource(BaseModel):
    """`BetaManagedAgentsMemoryStoreResource`, as a session shows (and keeps) it: the store's
    name and description as they were when the session was created, and where it is mounted."""

    type: Literal["memory_store"] = "memory_store"
    memory_store_id: str
    access: Literal["read_write", "read_only"] = "read_write"
    instructions: str | None = None
    name: str
    description: str = ""
    mount_path: str

    @property
    def slug(self) -> str:
        return self.mount_path.rsplit("/", 1)[-1]

    @property
    def read_only(self) -> bool:
        return self.access == "read_only"


def memory_resources(resources: list[dict[str, Any]]) -> list[MemoryStoreResource]:
    """The memory stores among a session's stored resources."""
    return [
        MemoryStoreResource.model_validate(r) for r in resources if r.get("type") == "memory_store"
    ]
