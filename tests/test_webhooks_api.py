"""Webhook endpoints through the HTTP API, driven by the official SDK (its organization webhooks
routes), and Reverie's delivery routes with plain HTTP."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import pytest
import standardwebhooks

from reverie.api.app import start_api
from reverie.settings import Settings
from reverie.store import keys
from tests.webhook_support import HookStack, hook_stack, receiver, wait_until

Served = tuple[HookStack, anthropic.AsyncAnthropic, str, str]


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[Served]:
    async with hook_stack(settings) as stack:
        runner, base_url = await start_api(stack.client, "127.0.0.1", 0)
        key = (await keys.create(stack.pool, "hooks", "tests")).key
        sdk = anthropic.AsyncAnthropic(base_url=base_url, api_key=key, max_retries=0)
        try:
            yield stack, sdk, base_url, key
        finally:
            await sdk.close()
            await runner.cleanup()


async def call(
    base_url: str, key: str, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, base_url + path, json=body, headers={"x-api-key": key}) as answer,
    ):
        return answer.status, await answer.json()


async def test_endpoints_through_the_sdk(served: Served) -> None:
    stack, sdk, base_url, key = served
    hooks = sdk.beta.organization.webhooks
    async with receiver() as rx:
        created = await hooks.create(
            url=rx.url,
            enabled_events=["session.status_idled", "agent.created"],  # type: ignore[list-item]
            name="ci",
            description="builds",
        )
        assert created.signing_secret.startswith("whsec_")
        assert (created.state, created.disabled_reason, created.name) == ("enabled", "", "ci")
        assert created.url == rx.url
        got = await hooks.retrieve(created.id)
        assert got.id == created.id and not hasattr(got, "signing_secret")
        status, raw = await call(base_url, key, "GET", f"/v1/organizations/webhooks/{created.id}")
        assert status == 200 and "signing_secret" not in raw

        # Update: an empty enabled_events leaves them; state disabled; then enabled again.
        updated = await hooks.update(created.id, enabled_events=[], description="changed")
        assert updated.enabled_events == ["agent.created", "session.status_idled"]
        assert updated.description == "changed"
        updated = await hooks.update(created.id, state="disabled")
        assert (updated.state, updated.disabled_reason) == ("disabled", "")
        updated = await hooks.update(
            created.id,
            state="enabled",
            enabled_events=["agent.created"],  # type: ignore[list-item]
        )
        assert updated.state == "enabled" and updated.enabled_events == ["agent.created"]

        # Rotation: the new secret is in the answer (and deliveries verify with it).
        rotated = await hooks.regenerate_signing_secret(created.id)
        assert rotated.signing_secret != created.signing_secret
        await stack.client.create_agent({"name": "a", "model": "m"})
        [request] = await rx.wait_for(1)
        standardwebhooks.Webhook(rotated.signing_secret).verify(request.body, request.headers)
        standardwebhooks.Webhook(created.signing_secret).verify(request.body, request.headers)

        # Reverie's delivery routes: test, list, retrieve with attempts, redeliver.
        path = f"/v1/organizations/webhooks/{created.id}"
        status, delivery = await call(base_url, key, "POST", path + "/test")
        assert status == 200 and delivery["event_type"] == "webhook.test"
        await rx.wait_for(2)
        assert rx.received[1].json["data"] == {
            "type": "webhook.test",
            "id": created.id,
            "organization_id": rx.received[1].json["data"]["organization_id"],
            "workspace_id": rx.received[1].json["data"]["workspace_id"],
        }

        async def both_delivered() -> Any:
            status, page = await call(base_url, key, "GET", path + "/deliveries")
            states = [d["state"] for d in page["data"]]
            return page if status == 200 and states == ["delivered", "delivered"] else None

        page = await wait_until(both_delivered, what="two deliveries")
        assert [d["event_type"] for d in page["data"]] == ["webhook.test", "agent.created"]
        one = page["data"][1]["id"]
        status, full = await call(base_url, key, "GET", f"{path}/deliveries/{one}")
        assert status == 200
        assert [(a["number"], a["status"]) for a in full["attempts"]] == [(1, 200)]
        status, again = await call(base_url, key, "POST", f"{path}/deliveries/{one}/redeliver")
        assert status == 200 and again["state"] == "pending" and again["redeliveries"] == 1
        await rx.wait_for(3)
        assert rx.received[2].webhook_id == rx.received[0].webhook_id
        status, page = await call(base_url, key, "GET", path + "/deliveries?state=failed")
        assert status == 200 and page["data"] == []

        # Another endpoint's path does not reach this one's deliveries.
        other = await hooks.create(url=rx.url, enabled_events=["agent.created"])  # type: ignore[list-item]
        status, body = await call(
            base_url, key, "GET", f"/v1/organizations/webhooks/{other.id}/deliveries/{one}"
        )
        assert status == 404 and body["error"]["type"] == "not_found_error"

        # List: newest first, pages by after_id (the SDK's paginator follows them).
        listed = [e.id async for e in hooks.list(limit=1)]
        assert listed == [other.id, created.id]
        first = await hooks.list(limit=1, order="asc")
        assert [e.id for e in first.data] == [created.id] and first.has_more

        deleted = await hooks.delete(created.id)
        assert (deleted.id, deleted.type) == (created.id, "webhook_endpoint_deleted")
        with pytest.raises(anthropic.NotFoundError):
            await hooks.retrieve(created.id)
        status, body = await call(base_url, key, "GET", f"{path}/deliveries")
        assert status == 404


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"url": "https://127.0.0.1/x", "enabled_events": ["agent.created"]}, "loopback"),
        ({"url": "https://localhost/x", "enabled_events": ["agent.created"]}, "loopback"),
        ({"url": "https://10.1.2.3/x", "enabled_events": ["agent.created"]}, "private"),
        ({"url": "https://169.254.169.254/x", "enabled_events": ["agent.created"]}, "link-local"),
        ({"url": "https://[::ffff:127.0.0.1]/x", "enabled_events": ["agent.created"]}, "host"),
        ({"url": "http://8.8.8.8/x", "enabled_events": ["agent.created"]}, "https://"),
        ({"url": "https://u:p@8.8.8.8/x", "enabled_events": ["agent.created"]}, "credentials"),
        ({"url": "ftp://8.8.8.8/x", "enabled_events": ["agent.created"]}, "https://"),
        ({"url": "https://8.8.8.8/x", "enabled_events": ["no.such"]}, "no.such"),
        ({"url": "https://8.8.8.8/x", "enabled_events": []}, "enabled_events"),
        ({"url": "https://8.8.8.8/x"}, "enabled_events"),
        ({"url": "https://8.8.8.8/x", "enabled_events": ["agent.created"], "x": 1}, "x"),
    ],
)
async def test_bad_endpoints_are_refused_and_nothing_is_written(
    served: Served, body: dict[str, Any], named: str
) -> None:
    stack, _, base_url, key = served
    status, answer = await call(base_url, key, "POST", "/v1/organizations/webhooks", body)
    assert status == 400, answer
    assert answer["error"]["type"] == "invalid_request_error"
    assert named in answer["error"]["message"]
    assert await stack.pool.fetchval("SELECT count(*) FROM webhook_endpoints") == 0


async def test_unknown_ids_and_bad_updates(served: Served) -> None:
    _stack, sdk, base_url, key = served
    hooks = sdk.beta.organization.webhooks
    with pytest.raises(anthropic.NotFoundError):
        await hooks.retrieve("whep_nope")
    with pytest.raises(anthropic.NotFoundError):
        await hooks.delete("whep_nope")
    with pytest.raises(anthropic.NotFoundError):
        await hooks.regenerate_signing_secret("whep_nope")
    created = await hooks.create(url="https://8.8.8.8/x", enabled_events=["agent.created"])  # type: ignore[list-item]
    with pytest.raises(anthropic.BadRequestError, match="loopback"):
        await hooks.update(created.id, url="https://127.0.0.1/")
    with pytest.raises(anthropic.BadRequestError, match="state"):
        await hooks.update(created.id, state="paused")  # type: ignore[arg-type]
    assert (await hooks.retrieve(created.id)).url == "https://8.8.8.8/x"
    status, body = await call(
        base_url,
        key,
        "POST",
        f"/v1/organizations/webhooks/{created.id}/regenerate_signing_secret",
        {"grace_period_seconds": -1},
    )
    assert status == 400 and "grace_period_seconds" in body["error"]["message"]
    status, body = await call(
        base_url, key, "GET", f"/v1/organizations/webhooks/{created.id}/deliveries?state=nope"
    )
    assert status == 400 and "state" in body["error"]["message"]
    await hooks.update(created.id, state="disabled")
    status, body = await call(
        base_url, key, "POST", f"/v1/organizations/webhooks/{created.id}/test"
    )
    assert status == 400 and "disabled" in body["error"]["message"]
    status, body = await call(base_url, "rvk_wrong.key", "GET", "/v1/organizations/webhooks")
    assert status == 401
