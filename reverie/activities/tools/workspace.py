"""One session's folders on the host, and how they appear to the agent."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from reverie.activities.tools.models import OUTPUTS_VIRTUAL, WORK_VIRTUAL, Mount

# Session ids become folder names, so only plain names are accepted (no `/`, no `..`).
_SESSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")


class VirtualRoot(BaseModel):
    """One folder the agent can reach: where it lives on the host and where the agent sees it."""

    model_config = ConfigDict(frozen=True)

    host: Path
    virtual: str
    read_only: bool = False


class Workspace(BaseModel):
    """A session's workspace: `<root>/<session_id>/{work,outputs,.state}`.

    Built fresh for every tool run from the same arguments; everything a run needs to carry over
    (the shell's state) lives in `state_dir`, so a new worker process picks up where the last
    one stopped. `hidden` lists host folders the sandbox must hide besides the workspace root
    (e.g. REVERIE_HOME and the database's data folder).
    """

    model_config = ConfigDict(frozen=True)

    root: Path
    session_id: str
    mounts: tuple[Mount, ...] = ()
    hidden: tuple[Path, ...] = Field(default=())

    @model_validator(mode="after")
    def _check(self) -> Workspace:
        if not _SESSION_ID.match(self.session_id):
            raise ValueError(f"not a usable session id for a folder name: {self.session_id!r}")
        seen = {WORK_VIRTUAL, OUTPUTS_VIRTUAL}
        for mount in self.mounts:
            if any(_overlaps(mount.virtual_path, other) for other in seen):
                raise ValueError(f"mount {mount.virtual_path} overlaps another folder")
            seen.add(mount.virtual_path)
            if not mount.host_path.is_dir():
                raise ValueError(f"mount source is not a directory: {mount.host_path}")
        # A mount's source inside a folder the agent can write (or the reverse) would let the
        # agent replace part of the source with a link before the next call binds it by path.
        sources = [self.root / self.session_id, *(m.host_path for m in self.mounts)]
        for i, a in enumerate(sources):
            for b in sources[i + 1 :]:
                if a.is_relative_to(b) or b.is_relative_to(a):
                    raise ValueError(f"mount source {b} overlaps {a}")
        return self

    @classmethod
    def for_session(
        cls,
        root: Path,
        session_id: str,
        extra_mounts: list[Mount] | None = None,
        *,
        hidden: list[Path] | None = None,
    ) -> Workspace:
        """The session's workspace, its folders created if missing."""
        workspace = cls(
            root=Path(root).expanduser().resolve(),
            session_id=session_id,
            mounts=tuple(
                mount.model_copy(update={"host_path": mount.host_path.resolve()})
                for mount in extra_mounts or []
            ),
            hidden=tuple(Path(path).expanduser().resolve() for path in hidden or []),
        )
        for folder in (workspace.work_dir, workspace.outputs_dir, workspace.state_dir):
            folder.mkdir(parents=True, exist_ok=True)
        return workspace

    @property
    def session_dir(self) -> Path:
        return self.root / self.session_id

    @property
    def work_dir(self) -> Path:
        return self.session_dir / "work"

    @property
    def outputs_dir(self) -> Path:
        return self.session_dir / "outputs"

    @property
    def state_dir(self) -> Path:
        return self.session_dir / ".state"

    def roots(self) -> list[VirtualRoot]:
        """Every folder the agent can reach, deepest virtual path first (for prefix matching)."""
        roots = [
            VirtualRoot(host=self.work_dir, virtual=WORK_VIRTUAL),
            VirtualRoot(host=self.outputs_dir, virtual=OUTPUTS_VIRTUAL),
            *(
                VirtualRoot(host=m.host_path, virtual=m.virtual_path, read_only=m.read_only)
                for m in self.mounts
            ),
        ]
        return sorted(roots, key=lambda r: len(r.virtual), reverse=True)


def _overlaps(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")
