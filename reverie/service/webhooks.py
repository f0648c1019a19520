"""Webhook endpoints and deliveries for every front end (the HTTP API, `reverie webhook`, user
code): `ReverieClient` inherits these methods.

Endpoint URLs are checked here, before anything is written: `https` (plain `http` only to
networks the operator opted in), no credentials, and a host whose every address is public or
opted in (`webhook_targets.check_registration`). The same rules apply again at every attempt,
on the address actually connected to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from temporalio.service import RPCError, RPCStatusCode

from reverie.models.errors import InvalidRequestError
from reverie.models.webhooks import (
    TEST_EVENT_TYPE,
    WAKE_SIGNAL,
    DispatcherInput,
    NewWebhookEndpoint,
    WebhookDelivery,
    WebhookDeliveryPage,
    WebhookEndpoint,
    WebhookEndpointCreate,
    WebhookEndpointDeleted,
    WebhookEndpointPage,
    WebhookEndpointUpdate,
    WebhookSigningSecret,
    endpoint_workflow_id,
    new_secret,
)
from reverie.service.validation import check_id as _id
from reverie.service.validation import parse as _parse
from reverie.store import webhooks
from reverie.webhook_targets import WebhookRefused, check_registration
from reverie.workflows.webhooks import ensure_dispatcher

if TYPE_CHECKING:
    from temporalio.client import Client

    from reverie.settings import Settings
    from reverie.store.pool import Pool

MAX_PAGE = 100
DELIVERY_STATES = ("pending", "delivered", "failed")


def _limit(limit: Any) -> int:
    if limit in (None, 0):
        return 20  # the SDK: "the default, 0, means 20"
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PAGE:
        raise InvalidRequestError(f"limit must be 1 to {MAX_PAGE}, not {limit!r}")
    return limit


class WebhookMethods:
    """Mixed into `ReverieClient` (which provides these attributes)."""

    temporal: Client
    pool: Pool
    settings: Settings

    async def _checked_url(self, url: str) -> str:
        try:
            return await check_registration(url, self.settings.webhook_networks)
        except WebhookRefused as refused:
            raise InvalidRequestError(f"url: {refused}") from None

    async def _ensure_dispatcher(self) -> None:
        await ensure_dispatcher(self.temporal, self.settings.task_queue, DispatcherInput())

    async def _nudge(self, endpoint_id: str) -> None:
        """Wake the endpoint's workflow, so that one disabled or deleted ends now rather than
        at its next wake-up (no workflow: nothing to do)."""
        handle = self.temporal.get_workflow_handle(endpoint_workflow_id(endpoint_id))
        try:
            await handle.signal(WAKE_SIGNAL)
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise

    async def create_webhook(
        self, params: WebhookEndpointCreate | dict[str, Any], *, created_by: str = ""
    ) -> NewWebhookEndpoint:
        """Register an endpoint; its signing secret is in this answer and no other."""
        params = _parse(WebhookEndpointCreate, params)
        url = await self._checked_url(params.url)
        created = await webhooks.create_endpoint(
            self.pool,
            url=url,
            enabled_events=params.enabled_events,
            name=params.name,
            description=params.description,
            signing_secret=new_secret(),
            created_by=created_by,
        )
        await self._ensure_dispatcher()
        return created

    async def get_webhook(self, endpoint_id: str) -> WebhookEndpoint:
        return await webhooks.get_endpoint(self.pool, _id("webhook endpoint", endpoint_id))

    async def list_webhooks(
        self,
        *,
        limit: int | None = None,
        after_id: str | None = None,
        before_id: str | None = None,
        order: str | None = None,
    ) -> WebhookEndpointPage:
        if after_id is not None and before_id is not None:
            raise InvalidRequestError("give after_id or before_id, not both")
        if order not in (None, "asc", "desc"):
            raise InvalidRequestError(f"order must be asc or desc, not {order!r}")
        return await webhooks.list_endpoints(
            self.pool,
            limit=_limit(limit),
            after_id=None if after_id is None else _id("webhook endpoint", after_id),
            before_id=None if before_id is None else _id("webhook endpoint", before_id),
            ascending=order == "asc",
        )

    async def update_webhook(
        self, endpoint_id: str, params: WebhookEndpointUpdate | dict[str, Any]
    ) -> WebhookEndpoint:
        """Change an endpoint. `state: enabled` resumes deliveries still pending (events that
        happened while it was disabled are never delivered) and clears `disabled_reason`."""
        params = _parse(WebhookEndpointUpdate, params)
        current = await self.get_webhook(endpoint_id)
        url = None if params.url is None else await self._checked_url(params.url)
        updated = await webhooks.update_endpoint(
            self.pool,
            endpoint_id,
            webhooks.EndpointChange(
                url=url,
                enabled_events=params.enabled_events or None,
                name=params.name,
                description=params.description,
                state=params.state,
            ),
        )
        if current.state == "disabled" and updated.state == "enabled":
            await webhooks.requeue_pending(self.pool, endpoint_id)
            await self._ensure_dispatcher()
        elif current.state == "enabled" and updated.state == "disabled":
            await self._nudge(endpoint_id)
        return updated

    async def enable_webhook(self, endpoint_id: str) -> WebhookEndpoint:
        return await self.update_webhook(endpoint_id, {"state": "enabled"})

    async def disable_webhook(self, endpoint_id: str) -> WebhookEndpoint:
        return await self.update_webhook(endpoint_id, {"state": "disabled"})

    async def delete_webhook(self, endpoint_id: str) -> WebhookEndpointDeleted:
        """Gone for good, with its deliveries and their log."""
        await webhooks.delete_endpoint(self.pool, _id("webhook endpoint", endpoint_id))
        await self._nudge(endpoint_id)
        return WebhookEndpointDeleted(id=endpoint_id)

    async def regenerate_webhook_secret(
        self, endpoint_id: str, *, grace_seconds: float | None = None
    ) -> WebhookSigningSecret:
        """A new signing secret, shown once. For `grace_seconds` (default
        REVERIE_WEBHOOK_ROTATION_GRACE_SECONDS; 0: none) deliveries carry a signature with the
        old secret too, so receivers can switch over without dropping any."""
        grace = (
            self.settings.webhook_rotation_grace_seconds if grace_seconds is None else grace_seconds
        )
        if (
            not isinstance(grace, int | float)
            or isinstance(grace, bool)
            or not 0 <= grace <= 30 * 24 * 3600
        ):
            raise InvalidRequestError(
                f"grace_period_seconds must be 0 to {30 * 24 * 3600} (30 days), not {grace!r}"
            )
        secret = new_secret()
        until = await webhooks.rotate_secret(
            self.pool, _id("webhook endpoint", endpoint_id), secret, float(grace)
        )
        return WebhookSigningSecret(signing_secret=secret, previous_secret_expires_at=until)

    async def test_webhook(self, endpoint_id: str) -> WebhookDelivery:
        """Send the endpoint a `webhook.test` event now (signed, retried and logged as any)."""
        delivery_id = await webhooks.add_test_delivery(
            self.pool, _id("webhook endpoint", endpoint_id), TEST_EVENT_TYPE
        )
        await self._ensure_dispatcher()
        return await webhooks.get_delivery(self.pool, delivery_id)

    async def list_webhook_deliveries(
        self,
        endpoint_id: str,
        *,
        limit: int | None = None,
        page: str | None = None,
        state: str | None = None,
        event_id: str | None = None,
    ) -> WebhookDeliveryPage:
        """An endpoint's deliveries, newest first (`state`: pending, delivered or failed)."""
        if state is not None and state not in DELIVERY_STATES:
            raise InvalidRequestError(
                f"state must be one of {', '.join(DELIVERY_STATES)}, not {state!r}"
            )
        return await webhooks.list_deliveries(
            self.pool,
            _id("webhook endpoint", endpoint_id),
            limit=_limit(limit),
            page=page,
            state=state,
            event_id=None if event_id is None else _id("event", event_id),
        )

    async def get_webhook_delivery(self, delivery_id: str) -> WebhookDelivery:
        """A delivery with every attempt (time, status, latency, error, address)."""
        return await webhooks.get_delivery(self.pool, _id("webhook delivery", delivery_id))

    async def redeliver_webhook(self, delivery_id: str) -> WebhookDelivery:
        """Attempt a delivered or failed delivery again: a new round of retries, under the same
        `webhook-id` (receivers that de-duplicate will see it once)."""
        delivery = await webhooks.redeliver(self.pool, _id("webhook delivery", delivery_id))
        await self._ensure_dispatcher()
        return delivery
