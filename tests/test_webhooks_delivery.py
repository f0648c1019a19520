"""Webhook deliveries end to end: the outbox, the dispatcher, the endpoint's workflow and a real
receiver on loopback; signatures checked by the SDK's own verifier and by `standardwebhooks`."""

from __future__ import annotations

import anthropic
import standardwebhooks

from reverie.settings import Settings
from tests.webhook_support import hook_stack, receiver, wait_until


async def test_an_agent_created_event_is_delivered_and_verifies(settings: Settings) -> None:
    async with hook_stack(settings) as stack, receiver() as rx:
        endpoint = await stack.client.create_webhook(
            {"url": rx.url, "enabled_events": ["agent.created"], "name": "ci"}
        )
        assert endpoint.signing_secret.startswith("whsec_")
        agent = await stack.client.create_agent({"name": "a", "model": "m"})
        [got] = await rx.wait_for(1)
        payload = standardwebhooks.Webhook(endpoint.signing_secret).verify(got.body, got.headers)
        assert payload["data"]["id"] == agent.id
        sdk = anthropic.Anthropic(api_key="unused")
        event = sdk.beta.webhooks.unwrap(got.body, headers=got.headers, key=endpoint.signing_secret)
        assert event.type == "event"
        assert event.data.type == "agent.created"
        assert event.data.id == agent.id
        assert event.id == got.webhook_id
        page = await stack.client.list_webhook_deliveries(endpoint.id)

        async def delivered() -> bool:
            page = await stack.client.list_webhook_deliveries(endpoint.id)
            return page.data and page.data[0].state == "delivered"

        await wait_until(delivered)
        page = await stack.client.list_webhook_deliveries(endpoint.id)
        [delivery] = page.data
        full = await stack.client.get_webhook_delivery(delivery.id)
        assert [(a.status, a.address, a.webhook_id) for a in full.attempts] == [
            (200, "127.0.0.2", got.webhook_id)
        ]
