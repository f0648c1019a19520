"""The bash tool's memory between calls: working directory and exported variables, on disk.

No shell process is kept between calls. Each call starts a fresh `bash` that runs `WRAPPER`:
it restores the saved state, runs the command in that same shell (so `cd` and `export` take
effect), then writes `pwd` and `export -p` next to the saved state. The caller commits them once
the command has ended, so a timed-out or killed command leaves the previous state in place, and
a new worker process finds the state where the last one left it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

# $1: state folder, $2: the session's home (the fallback working directory), $3: command file,
# $4: shell lines applied after the saved state (the variables the worker sets for every call,
# such as the sandbox's proxy, which a saved environment must not override).
# Only builtins run before the command, so a PATH it unset or a function it defined later
# cannot break the restore; the save runs from an EXIT trap so `exit N` and `set -e` keep both
# the state and the status. The statements are joined into one line so the command's own line
# numbers in bash's messages start at 1, as in an interactive shell.
_WRAPPER_STATEMENTS = (
    "__reverie_state=$1 __reverie_home=$2 __reverie_file=$3 __reverie_fixed=${4:-}",
    'if [ -f "$__reverie_state/env" ]; then'
    ' for __reverie_var in $(compgen -e); do builtin unset -v "$__reverie_var" 2>/dev/null; done;'
    ' builtin . "$__reverie_state/env" 2>/dev/null; fi',
    'builtin eval "$__reverie_fixed"',
    "__reverie_cwd=",
    '[ -f "$__reverie_state/cwd" ] && __reverie_cwd=$(< "$__reverie_state/cwd")',
    'builtin cd -- "${__reverie_cwd:-$__reverie_home}" 2>/dev/null'
    ' || builtin cd -- "$__reverie_home"',
    "__reverie_saved=",
    '__reverie_save() { [ -n "$__reverie_saved" ] && return; __reverie_saved=1;'
    ' builtin pwd >| "$__reverie_state/cwd.new" 2>/dev/null;'
    ' builtin export -p >| "$__reverie_state/env.new" 2>/dev/null; }',
    "builtin trap '__reverie_status=$?; __reverie_save; builtin exit $__reverie_status' EXIT",
    '__reverie_command=$(< "$__reverie_state/$__reverie_file")',
    "builtin unset -v __reverie_var __reverie_cwd __reverie_file __reverie_fixed",
    'builtin eval "$__reverie_command"',
    # Also saved here, for a command that replaced the EXIT trap with its own.
    "__reverie_status=$?",
    "__reverie_save",
    "builtin exit $__reverie_status",
)
WRAPPER = "; ".join(_WRAPPER_STATEMENTS)


class ShellState:
    """The files under `<state_dir>/bash` that stand in for a long-lived shell."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _files(self, *names: str) -> list[Path]:
        return [self.folder / name for name in names]

    def reset(self) -> None:
        """Forget the working directory and variables: the next call starts as a new shell."""
        for path in self._files("cwd", "env", "cwd.new", "env.new"):
            path.unlink(missing_ok=True)

    def write_command(self, command: str) -> str:
        """Store the command for the wrapper (no size limit, unlike an argument); its file name."""
        name = f"command-{uuid.uuid4().hex}"
        (self.folder / name).write_text(command, encoding="utf-8")
        return name

    def remove_command(self, name: str) -> None:
        (self.folder / name).unlink(missing_ok=True)

    def saved_by_run(self) -> bool:
        return all(p.is_file() for p in self._files("cwd.new", "env.new"))

    def commit(self) -> None:
        """Adopt what the finished run saved; a run that saved nothing leaves the old state."""
        if self.saved_by_run():
            for name in ("env", "cwd"):
                os.replace(self.folder / f"{name}.new", self.folder / name)
        self.discard_pending()

    def discard_pending(self) -> None:
        for path in self._files("cwd.new", "env.new"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
