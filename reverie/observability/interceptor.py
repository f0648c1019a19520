"""A worker interceptor that measures every activity and reads the metrics its results carry
(turns ended, webhook deliveries), so that activity code does not have to."""

from __future__ import annotations

import time
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from reverie.observability.metrics import METRICS


class _MeasuredActivity(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        name = activity.info().activity_type
        started = time.monotonic()
        ok = False
        try:
            result = await super().execute_activity(input)
            ok = True
        finally:
            METRICS.activity(name, time.monotonic() - started, ok=ok)
        _read_result(result)
        return result


def _read_result(result: Any) -> None:
    """Turns end with a model step that asks for no tool; deliveries report their outcomes."""
    stop_reason = getattr(result, "stop_reason", None)
    if isinstance(stop_reason, str) and hasattr(result, "tool_uses"):
        if stop_reason != "tool_use":
            METRICS.turn(stop_reason)
    elif hasattr(result, "delivered") and hasattr(result, "failed"):
        METRICS.webhook(delivered=result.delivered, failed=result.failed, retrying=result.retrying)


class MetricsInterceptor(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _MeasuredActivity(next)
