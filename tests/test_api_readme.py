"""The README's curl examples, run as written against the test stack's API."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.api_support import Api

README = Path(__file__).resolve().parent.parent / "README.md"
MARKER = "<!-- the curl examples below are run by tests/test_api_readme.py -->"


def curl_block() -> str:
    text = README.read_text()
    assert MARKER in text, "the README lost its runnable curl examples"
    block = re.search(r"```sh\n(.*?)```", text[text.index(MARKER) :], re.S)
    assert block is not None
    return block.group(1)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_the_readme_curl_examples_run_as_written(api: Api, model_name: str) -> None:
    script = curl_block()
    # The README's placeholders, filled in: the test API and a model name of this test's own
    # (the fake model echoes unscripted messages).
    script = script.replace("export REVERIE_URL=http://127.0.0.1:8080 REVERIE_KEY=rvk_...", "")
    script = script.replace("claude-sonnet-4-5", model_name)
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-euo",
        "pipefail",
        "-c",
        script,
        env={**os.environ, "REVERIE_URL": api.base_url, "REVERIE_KEY": api.key},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    text = out.decode()
    assert '"type":"agent.message"' in text.replace(" ", "") and "echo: Hi" in text
    frames = [line for line in text.splitlines() if line.startswith("event: ")]
    assert frames[-1] == "event: session.status_terminated", frames
    assert "event: agent.message" in frames and "event: user.message" not in frames
