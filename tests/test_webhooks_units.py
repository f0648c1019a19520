"""The parts of webhooks that need no stack: the backoff schedule, Standard Webhooks signatures
(checked by `standardwebhooks` and the SDK), the thin body, and the session event mapping."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import anthropic
import pytest
import standardwebhooks

from reverie.activities.webhook import body_of, retry_at
from reverie.models.webhooks import (
    SESSION_EVENT_WEBHOOKS,
    WEBHOOK_EVENT_TYPES,
    announcement_id,
    event_data,
    new_secret,
    session_webhook_types,
    signature,
    signature_header,
)
from reverie.settings import Settings

START = datetime(2026, 1, 1, tzinfo=UTC)


def test_backoff_doubles_with_jitter_up_to_its_cap_and_stops_after_the_window() -> None:
    settings = Settings(
        REVERIE_WEBHOOK_BACKOFF_SECONDS=5,
        REVERIE_WEBHOOK_MAX_BACKOFF_SECONDS=4 * 3600,
        REVERIE_WEBHOOK_RETRY_SECONDS=3 * 24 * 3600,
    )
    for attempts, base in [(1, 5), (2, 10), (3, 20), (10, 2560), (13, 14400), (30, 14400)]:
        delays = {
            (retry_at(settings, attempts, START, START) - START).total_seconds()  # type: ignore[operator]
            for _ in range(200)
        }
        assert min(delays) >= base * 0.8 and max(delays) <= base * 1.2, (attempts, base)
        assert len(delays) > 100  # jittered, not one value
    # The whole default schedule: attempts until about three days have passed, then failed.
    now, attempts = START, 0
    while (at := retry_at(settings, attempts + 1, START, now)) is not None:
        attempts, now = attempts + 1, at
    assert 20 <= attempts + 1 <= 35
    assert timedelta(days=2, hours=18) < now - START <= timedelta(days=3)


def test_signatures_verify_with_standard_webhooks_and_the_sdk() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    data = event_data("session.status_idled", "sesn_1")
    body = body_of("whe_1", START, data)
    assert json.loads(body) == {
        "type": "event",
        "id": "whe_1",
        "created_at": "2026-01-01T00:00:00Z",
        "data": data,
    }
    stamp = int(datetime.now(UTC).timestamp())
    headers = {
        "webhook-id": "whe_1",
        "webhook-timestamp": str(stamp),
        "webhook-signature": signature(secret, "whe_1", stamp, body),
    }
    assert standardwebhooks.Webhook(secret).verify(body, headers)["id"] == "whe_1"
    event = anthropic.Anthropic(api_key="x").beta.webhooks.unwrap(body, headers=headers, key=secret)
    assert (event.data.type, event.data.id) == ("session.status_idled", "sesn_1")
    # Another secret, another body, an old timestamp: refused.
    for changed in (
        {**headers, "webhook-signature": signature(new_secret(), "whe_1", stamp, body)},
        {**headers, "webhook-id": "whe_2"},
        {**headers, "webhook-timestamp": str(stamp - 3600)},
    ):
        with pytest.raises(standardwebhooks.WebhookVerificationError):
            standardwebhooks.Webhook(secret).verify(body, changed)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(body.replace("sesn_1", "sesn_2"), headers)
    # Two secrets (a rotation's grace): either verifies.
    other = new_secret()
    both = {**headers, "webhook-signature": signature_header((other, secret), "whe_1", stamp, body)}
    for key in (secret, other):
        standardwebhooks.Webhook(key).verify(body, both)


def test_the_session_event_mapping() -> None:
    assert session_webhook_types("agent.message", {}) == ()
    assert session_webhook_types("session.status_idle", {"stop_reason": {"type": "end_turn"}}) == (
        "session.status_idled",
        "session.idled",
    )
    assert "session.requires_action" in session_webhook_types(
        "session.status_idle", {"stop_reason": {"type": "requires_action"}}
    )
    every = {t for types in SESSION_EVENT_WEBHOOKS.values() for t in types}
    assert every | {"session.requires_action"} <= set(WEBHOOK_EVENT_TYPES)
    assert announcement_id("sevt_1", "session.idled") != announcement_id(
        "sevt_1", "session.running"
    )
    assert announcement_id("sevt_1", "session.idled") == announcement_id("sevt_1", "session.idled")
