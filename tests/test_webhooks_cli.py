"""`reverie webhook ...` run as real processes against a webhook test stack."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import standardwebhooks

from reverie.settings import Settings
from tests.webhook_support import hook_stack, receiver, wait_until

COMMAND = (sys.executable, "-m", "reverie.starter.cli", "webhook")


async def reverie_webhook(settings: Settings, *args: str) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": settings.temporal_address or "",
        "DATABASE_URL": settings.database_url or "",
        "REVERIE_TASK_QUEUE": settings.task_queue,
        "REVERIE_HOME": str(settings.reverie_home),
        "REVERIE_WEBHOOK_ALLOW_NETWORKS": settings.webhook_allow_networks,
    }
    process = await asyncio.create_subprocess_exec(
        *COMMAND, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


async def ok_json(settings: Settings, *args: str) -> Any:
    code, out, err = await reverie_webhook(settings, *args, "--json")
    assert code == 0, err
    return json.loads(out)


async def test_the_webhook_commands(settings: Settings) -> None:
    async with hook_stack(settings) as stack, receiver() as rx:
        own = stack.settings
        created = await ok_json(
            own, "create", "--url", rx.url, "--event", "agent.created", "--name", "cli"
        )
        assert created["signing_secret"].startswith("whsec_") and created["name"] == "cli"
        code, out, _ = await reverie_webhook(own, "get", created["id"])
        assert code == 0 and created["id"] in out and "whsec_" not in out
        listed = await ok_json(own, "list")
        assert [e["id"] for e in listed["data"]] == [created["id"]]

        delivery = await ok_json(own, "test", created["id"])
        assert delivery["event_type"] == "webhook.test"
        [got] = await rx.wait_for(1)
        standardwebhooks.Webhook(created["signing_secret"]).verify(got.body, got.headers)

        async def delivered() -> Any:
            page = await ok_json(own, "deliveries", created["id"])
            return page if page["data"][0]["state"] == "delivered" else None

        page = await wait_until(delivered, what="the test delivery")
        delivery_id = page["data"][0]["id"]
        code, out, _ = await reverie_webhook(own, "delivery", delivery_id)
        assert code == 0 and "127.0.0.2" in out and "200" in out
        again = await ok_json(own, "redeliver", delivery_id)
        assert again["redeliveries"] == 1
        await rx.wait_for(2)
        assert rx.received[1].webhook_id == got.webhook_id

        rotated = await ok_json(own, "rotate-secret", created["id"], "--grace-seconds", "0")
        assert rotated["previous_secret_expires_at"] is None
        code, out, _ = await reverie_webhook(own, "rotate-secret", created["id"])
        assert code == 0 and "whsec_" in out and "also signs deliveries until" in out
        disabled = await ok_json(own, "disable", created["id"])
        assert disabled["state"] == "disabled"
        enabled = await ok_json(own, "enable", created["id"])
        assert enabled["state"] == "enabled"
        updated = await ok_json(own, "update", created["id"], "--description", "changed")
        assert updated["description"] == "changed"

        # Refusals: one line on stderr, exit 1, nothing written.
        code, _, err = await reverie_webhook(
            own, "create", "--url", "https://127.0.0.1/x", "--event", "agent.created"
        )
        assert code == 1 and err.startswith("error:") and "loopback" in err
        assert len(err.strip().splitlines()) == 1
        code, _, err = await reverie_webhook(
            own, "create", "--url", rx.url, "--event", "no.such.type"
        )
        assert code == 1 and "no.such.type" in err
        code, _, err = await reverie_webhook(own, "get", "whep_nope")
        assert code == 1 and "not_found_error" in err
        assert await stack.pool.fetchval("SELECT count(*) FROM webhook_endpoints") == 1

        deleted = await ok_json(own, "delete", created["id"])
        assert deleted == {"id": created["id"], "type": "webhook_endpoint_deleted"}
