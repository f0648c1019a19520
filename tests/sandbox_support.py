"""Whether bubblewrap works on this machine, for the tests that need the sandbox itself."""

from __future__ import annotations

import pytest

from reverie.activities.tools import SandboxUnavailableError, detect_sandbox


def _bwrap_missing() -> str | None:
    try:
        detect_sandbox(None)
    except SandboxUnavailableError as error:
        print(f"bubblewrap tests skipped: {error}")
        return str(error)
    return None


BWRAP_MISSING = _bwrap_missing()
# Skipped, naming why, where bubblewrap cannot run (CI installs it, so there they all run).
needs_bwrap = pytest.mark.skipif(BWRAP_MISSING is not None, reason=f"{BWRAP_MISSING}")
