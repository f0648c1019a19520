"""One memory store mounted in one session, as every step of its sync sees it: where the
folder and its private state live, and what the steps need (the settings, the heartbeat, the
actor its versions are written by), so that the steps are plain functions of it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from reverie.models.memory import MemoryStoreResource, SessionActor
from reverie.settings import Settings


@dataclass(frozen=True)
class MountContext:
    """A mount of `resource` in the session whose memory folder is `base`."""

    session_id: str
    resource: MemoryStoreResource
    base: Path
    settings: Settings
    heartbeat: Callable[[], None]
    watch: bool = True  # False: every write-back after bash scans the whole mount

    @property
    def store_id(self) -> str:
        return self.resource.memory_store_id

    @property
    def key(self) -> tuple[str, str]:
        """The mount's name for its lock and its watch."""
        return (self.session_id, self.resource.memory_store_id)

    @property
    def folder(self) -> Path:
        """The folder bound into the tools at the resource's mount path."""
        return self.base / "mounts" / self.resource.slug

    @property
    def sigs(self) -> Path:
        """The stat-signature cache's snapshot, beside the workspace (never visible to tools)."""
        return self.base / "state" / f"{self.resource.memory_store_id}.sigs"

    @property
    def displaced(self) -> Path:
        """Files a sync took out of the mount, kept while a tool may still write through them
        (`memory_file_writes.collect_displaced`)."""
        return self.base / "state" / "displaced" / self.resource.memory_store_id

    @cached_property
    def actor(self) -> dict[str, Any]:
        """Who the versions a write-back writes are by."""
        return SessionActor(session_id=self.session_id).model_dump()

    @property
    def max_entries(self) -> int:
        """How many files and folders a walk of the mount looks at, at most."""
        return max(4 * self.settings.memory_max_memories, 20_000)

    def virtual(self, path: str) -> str:
        """A memory path as the agent sees it."""
        return self.resource.mount_path + path

    def skip_note(self, rel: str, reason: str) -> str:
        return f"{self.resource.mount_path}/{rel}: not saved to memory: {reason}"
