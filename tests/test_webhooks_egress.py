"""Webhooks never reach an internal address unless the operator allowed it: refused at
registration, and again at delivery on the address actually connected to (a DNS answer that
changed since registration, a URL that reached the table some other way)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from reverie.models.errors import InvalidRequestError
from reverie.settings import Settings
from reverie.webhook_targets import WebhookRefused, check_registration
from tests.webhook_support import ALLOWED, hook_stack, receiver, wait_until


class FakeDns:
    """`socket.getaddrinfo` answering chosen addresses for names under `.hooks.test` (the rest
    goes to the real resolver): what a DNS server the attacker controls would answer."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.answers: dict[str, list[str]] = {}
        self.asked: list[str] = []

    def __call__(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if not name.endswith(".hooks.test"):
            return self.real(host, port, *args, **kwargs)
        self.asked.append(name)
        return [
            (
                socket.AF_INET6 if ":" in address else socket.AF_INET,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                "",
                (address, int(port or 0)),
            )
            for address in self.answers.get(name, [])
        ]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    fake = FakeDns(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return fake


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (["127.0.0.1"], "loopback"),
        (["10.0.0.7"], "private"),
        (["169.254.169.254"], "link-local"),
        (["::ffff:127.0.0.1"], "127.0.0.1"),
        (["::1"], "loopback"),
        (["100.64.0.1"], "not a public address"),
        (["8.8.8.8", "192.168.1.1"], "private"),  # one inside is enough to refuse
        ([], "no address"),
    ],
)
async def test_names_resolving_inside_are_refused_at_registration(
    dns: FakeDns, answer: list[str], why: str
) -> None:
    dns.answers["evil.hooks.test"] = answer
    with pytest.raises(WebhookRefused, match=why):
        await check_registration("https://evil.hooks.test/hook", (ALLOWED,))


async def test_http_is_only_for_opted_in_networks(dns: FakeDns) -> None:
    dns.answers["inside.hooks.test"] = ["127.0.0.2"]
    dns.answers["public.hooks.test"] = ["8.8.8.8"]
    assert await check_registration("http://inside.hooks.test:81/h", (ALLOWED,))
    assert await check_registration("https://public.hooks.test/h", (ALLOWED,))
    with pytest.raises(WebhookRefused, match="https://"):
        await check_registration("http://public.hooks.test/h", (ALLOWED,))
    # Without the operator's opt-in, even the test receiver's address is refused.
    with pytest.raises(WebhookRefused, match="loopback"):
        await check_registration("http://inside.hooks.test:81/h", ())


async def test_a_dns_answer_that_changes_after_registration_reaches_nothing_inside(
    settings: Settings, dns: FakeDns
) -> None:
    # `forbidden` listens on the same port on 127.0.0.1, which webhooks may never reach
    # (Temporal and PostgreSQL listen on that address).
    async with (
        receiver() as allowed,
        receiver(host="127.0.0.1", port=allowed.port) as forbidden,
        hook_stack(settings) as stack,
    ):
        dns.answers["rebind.hooks.test"] = ["127.0.0.2"]
        endpoint = await stack.client.create_webhook(
            {
                "url": f"http://rebind.hooks.test:{allowed.port}/hook",
                "enabled_events": ["agent.created"],
            }
        )
        await stack.client.create_agent({"name": "first", "model": "m"})
        await allowed.wait_for(1)

        async def first_settled() -> bool:
            page = await stack.client.list_webhook_deliveries(endpoint.id)
            return bool(page.data) and page.data[0].state == "delivered"

        # Once the round that delivered it is over (a round keeps its connections alive, and a
        # connection made while the name pointed at an allowed address stays with it).
        await wait_until(first_settled, what="the first delivery")
        await asyncio.sleep(0.5)
        # The name now points at loopback: new connections are refused before they are made.
        dns.answers["rebind.hooks.test"] = ["127.0.0.1"]
        await stack.client.create_agent({"name": "second", "model": "m"})

        async def refused_twice() -> Any:
            page = await stack.client.list_webhook_deliveries(endpoint.id, state="pending")
            if not page.data:
                return None
            found = await stack.client.get_webhook_delivery(page.data[0].id)
            return found if sum(a.finished_at is not None for a in found.attempts) >= 2 else None

        pending = await wait_until(refused_twice, what="two refused attempts")
        tried = [a for a in pending.attempts if a.finished_at is not None]
        assert all("refused" in (a.error or "") for a in tried), tried
        assert all("loopback" in (a.error or "") for a in tried)
        assert all(a.address is None and a.status is None for a in tried)
        # An answer with an inside and an outside address: only the allowed one is dialled.
        dns.answers["rebind.hooks.test"] = ["127.0.0.1", "127.0.0.2"]
        await allowed.wait_for(2)
        assert forbidden.received == []
        assert allowed.received[1].webhook_id == pending.event_id

        async def settled() -> bool:
            found = await stack.client.get_webhook_delivery(pending.id)
            return found.state == "delivered"

        await wait_until(settled, what="the delivery")
        done = await stack.client.get_webhook_delivery(pending.id)
        assert done.attempts[-1].address == "127.0.0.2"
        assert forbidden.received == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/hook",
        "http://[::ffff:127.0.0.1]:{port}/hook",
        "http://169.254.169.254:{port}/latest/meta-data",
        "https://127.0.0.1:{port}/hook",
    ],
)
async def test_internal_urls_that_reach_the_table_anyway_are_refused_at_delivery(
    settings: Settings, url: str
) -> None:
    """A URL no registration accepts (written by hand, or by an older version) is refused at
    every attempt, and nothing connects."""
    async with receiver(host="127.0.0.1") as forbidden, hook_stack(settings) as stack:
        with pytest.raises(InvalidRequestError):
            await stack.client.create_webhook(
                {"url": url.format(port=forbidden.port), "enabled_events": ["agent.created"]}
            )
        async with receiver() as fine:
            endpoint = await stack.client.create_webhook(
                {"url": fine.url, "enabled_events": ["agent.created"]}
            )
        await stack.pool.execute(
            "UPDATE webhook_endpoints SET url = $2 WHERE id = $1",
            endpoint.id,
            url.format(port=forbidden.port),
        )
        await stack.client.create_agent({"name": "a", "model": "m"})

        async def attempted_twice() -> Any:
            page = await stack.client.list_webhook_deliveries(endpoint.id)
            if not page.data:
                return None
            found = await stack.client.get_webhook_delivery(page.data[0].id)
            return found if sum(a.finished_at is not None for a in found.attempts) >= 2 else None

        delivery = await wait_until(attempted_twice, what="two attempts")
        tried = [a for a in delivery.attempts if a.finished_at is not None]
        assert all((a.error or "").startswith("refused:") for a in tried), tried
        assert all(a.address is None for a in tried)
        await asyncio.sleep(0.5)
        assert forbidden.received == []
