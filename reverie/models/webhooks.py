"""Webhooks: endpoints, the events Reverie announces to them, deliveries and their attempts.

The wire format is the SDK's (2.14): endpoints as `BetaOrganizationWebhookEndpoint` (and
`BetaNewOrganizationWebhookEndpoint`, with the signing secret, once), bodies as
`BetaWebhookEvent`: `{"type": "event", "id", "created_at", "data": {"type", "id",
"organization_id", "workspace_id", ...}}`, thin, so that the receiver fetches the object itself.
Deliveries and attempts are Reverie's own additions (the hosted API shows them in its console).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from reverie.models.common import StrictModel

# A self-hosted deployment is one organization with one workspace; bodies name them so that
# they parse as the SDK's event data.
ORGANIZATION_ID = "org_reverie"
WORKSPACE_ID = "wrkspc_default"

# A delivery's id is derived from its (event id, endpoint id); these prefix the ids.
ENDPOINT_PREFIX = "whep"
EVENT_PREFIX = "whe"
DELIVERY_PREFIX = "whd"
SECRET_PREFIX = "whsec_"

# The test event an operator sends on purpose (`reverie webhook test`); every endpoint gets it
# when asked, whatever its enabled_events.
TEST_EVENT_TYPE = "webhook.test"

# Session log events -> the webhook types they announce (data.id is the session's id).
SESSION_EVENT_WEBHOOKS: dict[str, tuple[str, ...]] = {
    "session.status_running": ("session.status_run_started", "session.running"),
    "session.status_idle": ("session.status_idled", "session.idled"),
    "session.status_rescheduled": ("session.status_rescheduled",),
    "session.status_terminated": ("session.status_terminated",),
    "span.outcome_evaluation_end": ("session.outcome_evaluation_ended",),
    # Threads (once sessions have more than their primary thread): data names the thread.
    "session.thread_created": ("session.thread_created",),
    "session.thread_status_idle": ("session.thread_idled",),
    "session.thread_status_terminated": ("session.thread_terminated",),
}
# Types announced by the store modules of the objects themselves (`store.webhooks.record`).
OBJECT_WEBHOOKS: tuple[str, ...] = (
    "session.created",
    "session.updated",
    "session.archived",
    "session.deleted",
    "agent.created",
    "agent.updated",
    "agent.archived",
    "environment.created",
    "environment.updated",
    "environment.archived",
    "environment.deleted",
    "memory_store.created",
    "memory_store.archived",
    "memory_store.deleted",
    "dream.completed",
    "dream.failed",
)
WEBHOOK_EVENT_TYPES: tuple[str, ...] = tuple(
    sorted(
        {
            *(t for types in SESSION_EVENT_WEBHOOKS.values() for t in types),
            "session.requires_action",
            *OBJECT_WEBHOOKS,
        }
    )
)

MAX_URL_LENGTH = 2048
MAX_NAME_LENGTH = 256
MAX_DESCRIPTION_LENGTH = 2048
MAX_ENDPOINTS = 100


def announcement_id(event_id: str, webhook_type: str) -> str:
    """The id under which a session event is announced as one webhook type (the body's `id`,
    the `webhook-id`): what the outbox trigger (migration 0009) computes."""
    return f"{EVENT_PREFIX}_" + hashlib.md5(f"{event_id}/{webhook_type}".encode()).hexdigest()


def delivery_id_of(event_id: str, endpoint_id: str) -> str:
    """A delivery's id: one per (announcement, endpoint)."""
    return f"{DELIVERY_PREFIX}_" + hashlib.md5(f"{event_id}/{endpoint_id}".encode()).hexdigest()


def session_webhook_types(event_type: str, payload: dict[str, Any]) -> tuple[str, ...]:
    """The webhook types one recorded session event announces (none for most); the outbox
    trigger (migration 0009) applies the same mapping in PostgreSQL."""
    types = SESSION_EVENT_WEBHOOKS.get(event_type, ())
    if event_type == "session.status_idle":
        stop = payload.get("stop_reason")
        if isinstance(stop, dict) and stop.get("type") == "requires_action":
            types = (*types, "session.requires_action")
    return types


def event_data(webhook_type: str, object_id: str, **extra: Any) -> dict[str, Any]:
    """A body's `data`: thin, as the SDK's `BetaWebhook*EventData` types are."""
    return {
        "type": webhook_type,
        "id": object_id,
        "organization_id": ORGANIZATION_ID,
        "workspace_id": WORKSPACE_ID,
        **extra,
    }


def _check_events(value: list[str]) -> list[str]:
    unknown = [t for t in value if t not in WEBHOOK_EVENT_TYPES]
    if unknown:
        raise ValueError(
            f"not webhook event types Reverie sends: {', '.join(repr(t) for t in unknown)}; "
            f"they are {', '.join(WEBHOOK_EVENT_TYPES)}"
        )
    return sorted(set(value))


class WebhookEndpointCreate(StrictModel):
    url: str = Field(min_length=1, max_length=MAX_URL_LENGTH)
    enabled_events: list[str] = Field(min_length=1, max_length=len(WEBHOOK_EVENT_TYPES) * 2)
    name: str = Field(default="", max_length=MAX_NAME_LENGTH)
    description: str = Field(default="", max_length=MAX_DESCRIPTION_LENGTH)

    @field_validator("enabled_events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        return _check_events(value)


class WebhookEndpointUpdate(StrictModel):
    """Every field optional; `enabled_events` replaces the whole set (an empty list leaves it
    unchanged, as the SDK documents); `state: enabled` clears `disabled_reason`."""

    url: str | None = Field(default=None, min_length=1, max_length=MAX_URL_LENGTH)
    enabled_events: list[str] | None = Field(default=None, max_length=len(WEBHOOK_EVENT_TYPES) * 2)
    name: str | None = Field(default=None, max_length=MAX_NAME_LENGTH)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_LENGTH)
    state: Literal["enabled", "disabled"] | None = None

    @field_validator("enabled_events")
    @classmethod
    def _events(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _check_events(value)


class WebhookEndpoint(BaseModel):
    """`BetaOrganizationWebhookEndpoint`."""

    id: str
    created_at: datetime
    description: str
    disabled_reason: str
    enabled_events: list[str]
    name: str
    state: Literal["enabled", "disabled"]
    updated_at: datetime
    url: str


class NewWebhookEndpoint(WebhookEndpoint):
    """`BetaNewOrganizationWebhookEndpoint`: the only answer that shows the secret."""

    signing_secret: str


class WebhookEndpointDeleted(BaseModel):
    id: str
    type: Literal["webhook_endpoint_deleted"] = "webhook_endpoint_deleted"


class WebhookSigningSecret(BaseModel):
    """`BetaOrganizationWebhookEndpointSigningSecret`, and (Reverie) until when deliveries are
    also signed with the previous secret (null: the old one stopped at once)."""

    signing_secret: str
    previous_secret_expires_at: datetime | None = None


class WebhookEndpointPage(BaseModel):
    """The SDK's `AsyncPage`: `data`, `has_more`, `first_id`, `last_id`."""

    data: list[WebhookEndpoint]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class WebhookAttempt(BaseModel):
    number: int
    webhook_id: str
    started_at: datetime
    finished_at: datetime | None = None
    latency_ms: float | None = None
    status: int | None = None
    error: str | None = None
    address: str | None = None


class WebhookDelivery(BaseModel):
    """One event owed to one endpoint: its state, and (retrieved alone) every attempt."""

    type: Literal["webhook_delivery"] = "webhook_delivery"
    id: str
    event_id: str
    endpoint_id: str
    event_type: str
    state: Literal["pending", "delivered", "failed"]
    created_at: datetime
    recorded_at: datetime
    dispatched_at: datetime | None = None
    delivered_at: datetime | None = None
    next_attempt_at: datetime | None = None
    attempt_count: int
    last_status: int | None = None
    last_error: str | None = None
    redeliveries: int = 0
    data: dict[str, Any]
    attempts: list[WebhookAttempt] | None = None


class WebhookDeliveryPage(BaseModel):
    data: list[WebhookDelivery]
    next_page: str | None = None


# ---- workflows and activities ------------------------------------------------------------------


class WebhookActivity(StrEnum):
    DISPATCH = "webhook_dispatch"
    DELIVER_DUE = "webhook_deliver_due"


class DispatcherInput(BaseModel):
    # How long one run of the dispatch activity lasts before the workflow starts the next.
    lifetime_seconds: float = 600.0
    # A dead worker's dispatcher is replaced after this long without a heartbeat.
    heartbeat_timeout_seconds: float = 10.0


class EndpointWorkflowInput(BaseModel):
    endpoint_id: str
    heartbeat_timeout_seconds: float = 10.0
    # Carried over continue-as-new: a wake-up that came in while the last run was ending.
    woken: bool = False


class DeliverDueInput(BaseModel):
    endpoint_id: str


class DeliverDueResult(BaseModel):
    # False when the endpoint is disabled or deleted: its workflow ends (re-enabling wakes it).
    active: bool
    delivered: int = 0
    failed: int = 0
    retrying: int = 0
    # When the endpoint's next pending delivery is due (None: nothing pending).
    next_due_at: datetime | None = None


# Workflow types (activities start endpoint workflows by name, without importing workflows/).
DISPATCHER_WORKFLOW = "WebhookDispatcher"
ENDPOINT_WORKFLOW = "WebhookEndpoint"
WAKE_SIGNAL = "wake"


def dispatcher_workflow_id(task_queue: str) -> str:
    """One dispatcher per task queue (a deployment's workers share one)."""
    return f"webhook-dispatcher/{task_queue}"


def endpoint_workflow_id(endpoint_id: str) -> str:
    return f"webhook-endpoint/{endpoint_id}"


# ---- signing (Standard Webhooks) ---------------------------------------------------------------


def new_secret() -> str:
    """`whsec_` and 32 random bytes in base64, as Standard Webhooks libraries read it."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(secret: str, webhook_id: str, timestamp: int, body: str) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed by the base64-decoded
    secret after its `whsec_` prefix."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(
    secrets_in_use: tuple[str, ...], webhook_id: str, timestamp: int, body: str
) -> str:
    """Space-separated signatures, one per secret in use (two during a rotation's grace)."""
    return " ".join(signature(s, webhook_id, timestamp, body) for s in secrets_in_use)
