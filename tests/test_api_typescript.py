"""The official TypeScript SDK drives Reverie's HTTP API: tests/ts/smoke.mjs, run by node.

`make test` installs the SDK pinned in tests/ts/package-lock.json with `npm ci` where npm is
present; CI installs node and npm, so there this test always runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.api_support import Api
from tests.fake_model import FakeModelServer, Reply

TS_DIR = Path(__file__).parent / "ts"
SMOKE = TS_DIR / "smoke.mjs"
SDK_DIR = TS_DIR / "node_modules" / "@anthropic-ai" / "sdk"
TIMEOUT_SECONDS = 90
TEXT = "Hello from the fake model, to TypeScript."
NODE = shutil.which("node")

pytestmark = [
    pytest.mark.skipif(
        NODE is None, reason="node is not installed (deploy/system-packages.sh installs it)"
    ),
    pytest.mark.skipif(
        not SDK_DIR.is_dir(), reason="tests/ts/node_modules is missing: `make node` installs it"
    ),
]


async def test_the_typescript_sdk_drives_agents_environments_and_a_streamed_session(
    api: Api, fake_model: FakeModelServer, model_name: str
) -> None:
    assert NODE is not None
    fake_model.script(model_name, [Reply.text(TEXT)])
    # The SDK would read these from the environment; the script names everything itself.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    env.update(
        REVERIE_BASE_URL=api.base_url,
        REVERIE_API_KEY=api.key,
        REVERIE_SMOKE_MODEL=model_name,
        REVERIE_SMOKE_TEXT=TEXT,
    )
    # Run without blocking: the API it talks to is served by this test's own event loop.
    process = await asyncio.create_subprocess_exec(
        NODE,
        str(SMOKE),
        cwd=TS_DIR,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), TIMEOUT_SECONDS)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"smoke.mjs did not finish in {TIMEOUT_SECONDS} s")
    stdout, stderr = out.decode(), err.decode()
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON summary (exit {process.returncode}):\n{stdout}\n{stderr}"
    summary = json.loads(lines[-1])
    assert process.returncode == 0 and summary["ok"], f"{summary}\n{stderr}"

    assert summary["streamed"][-1] == "session.status_idle"
    assert "agent.message" in summary["streamed"]
    assert summary["listed"] >= len(summary["streamed"])
    for name in (
        "agents.create",
        "agents.update",
        "agents.versions.list",
        "agents.list",
        "environments.create",
        "environments.update",
        "environments.list",
        "environments.archive",
        "stream until idle",
        "sessions.events.list",
        "sessions.events.list(desc)",
        "sessions.retrieve",
        "sessions.archive",
        "refusal: unknown agent",
        "refusal: bad body",
        "refusal: wrong key",
    ):
        assert name in summary["checked"], name
