"""Record the saved histories that are missing: `make histories` (then review and commit them).

The saved histories stand for sessions running in users' deployments, so an existing one is
never re-recorded by accident: only scenarios whose JSON file is missing run. Re-recording one
needs `--rerecord` and a reason (its old version must still replay, so add the new one beside
it under a new name instead, unless the old one was wrong).

    python -m tests.replay.record                      # only the missing ones
    python -m tests.replay.record -k retries_in_workflow
    python -m tests.replay.record --rerecord -k conversation
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

RERECORD_FLAG = "--rerecord"
RERECORD_ENV = "REVERIE_RERECORD_HISTORIES"

if __name__ == "__main__":
    scenarios = Path(__file__).with_name("scenarios.py")
    args = sys.argv[1:]
    if RERECORD_FLAG in args:
        args.remove(RERECORD_FLAG)
        os.environ[RERECORD_ENV] = "1"
    # Other arguments pass through to pytest, e.g. `-k long_turn` to record one scenario only.
    sys.exit(pytest.main([str(scenarios), "-q", "-rs", "-p", "no:randomly", *args]))
