"""`reverie key` and `reverie api`, run as real processes against the test stack."""

from __future__ import annotations

import asyncio
import json
import signal

import aiohttp

from reverie.settings import Settings
from reverie.starter.stack import free_port
from tests.test_cli import COMMAND, cli_env, run_cli


async def test_key_create_list_revoke(settings: Settings) -> None:
    env = cli_env(settings)
    created = await run_cli(env, "key", "create", "--name", "ci", "--json")
    key = created.json()
    assert key["key"].startswith(key["id"] + ".") and key["name"] == "ci"
    human = await run_cli(env, "key", "create", "--name", "shown once")
    assert human.code == 0 and "The key is shown once" in human.out and "rvk_" in human.out
    listed = await run_cli(env, "key", "list", "--json", "--limit", "100")
    rows = listed.json()["data"]
    assert key["id"] in [row["id"] for row in rows]
    assert all("key" not in row for row in rows), "a listing must never show a secret"
    revoked = await run_cli(env, "key", "revoke", key["id"], "--json")
    assert revoked.json()["revoked_at"] is not None
    hidden = await run_cli(env, "key", "list", "--json", "--limit", "100")
    assert key["id"] not in [row["id"] for row in hidden.json()["data"]]
    missing = await run_cli(env, "key", "revoke", "rvk_nothing")
    assert missing.code == 1 and "not_found_error" in missing.err


async def test_reverie_api_serves_until_sigterm(settings: Settings) -> None:
    env = cli_env(settings)
    key = (await run_cli(env, "key", "create", "--name", "serve", "--json")).json()["key"]
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *COMMAND,
        "api",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        assert f"http://127.0.0.1:{port}" in line, line
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                f"http://127.0.0.1:{port}/v1/environments/env_default",
                headers={"x-api-key": key},
            ) as response,
        ):
            assert response.status == 200
            assert json.loads(await response.read())["id"] == "env_default"
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)
    assert process.returncode == 0, (await process.stderr.read()).decode() if process.stderr else ""
