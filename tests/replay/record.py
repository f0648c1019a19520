"""Refresh the saved histories: `make histories` (then review and commit the JSON files)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

if __name__ == "__main__":
    scenarios = Path(__file__).with_name("scenarios.py")
    # Extra arguments pass through, e.g. `-k long_turn` to record one scenario only.
    sys.exit(pytest.main([str(scenarios), "-q", "-p", "no:randomly", *sys.argv[1:]]))
