"""Prometheus metrics: the Temporal SDK's own and Reverie's, on one endpoint per process.

The Temporal SDK's runtime serves Prometheus (REVERIE_METRICS_HOST:REVERIE_METRICS_PORT) and
gives a meter for custom metrics; Reverie's go through that meter, so one scrape sees both.
Any code records through `METRICS` (`METRICS.turn(...)`, `METRICS.tool(...)`, ...): no-ops until
a process turns metrics on. Dream durations (`reverie_dream_duration`) are recorded by the
worker's interceptor, in workflow time (observability/interceptor.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from temporalio.common import MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from reverie.models.agents import BUILTIN_TOOL_NAMES
from reverie.settings import Settings

Attributes = Mapping[str, str | int | float | bool]
# Distinct values one label keeps (model names come from users, stop reasons from the model):
# past this, `other`, so that no one can grow the metrics without bound.
MAX_LABEL_VALUES = 100
# HTTP methods as labels: any other token a client sends (aiohttp accepts any) is `other`.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class ReverieMetrics:
    """Reverie's own instruments, made on first use from whichever meter is bound."""

    def __init__(self) -> None:
        self._meter: MetricMeter = MetricMeter.noop
        self._instruments: dict[str, Any] = {}
        self._labels: dict[str, set[str]] = {}

    def _label(self, kind: str, value: str) -> str:
        seen = self._labels.setdefault(kind, set())
        value = value[:100]
        if value in seen:
            return value
        if len(seen) >= MAX_LABEL_VALUES:
            return "other"
        seen.add(value)
        return value

    def bind(self, meter: MetricMeter) -> None:
        self._meter = meter
        self._instruments.clear()

    def _counter(self, name: str, description: str, unit: str | None = None) -> Any:
        found = self._instruments.get(name)
        if found is None:
            found = self._instruments[name] = self._meter.create_counter(name, description, unit)
        return found

    def _histogram(self, name: str, description: str) -> Any:
        found = self._instruments.get(name)
        if found is None:
            found = self._instruments[name] = self._meter.create_histogram_float(
                name, description, "s"
            )
        return found

    def _gauge(self, name: str, description: str) -> Any:
        found = self._instruments.get(name)
        if found is None:
            found = self._instruments[name] = self._meter.create_gauge(name, description)
        return found

    # ---- what other code calls ------------------------------------------------------------

    def turn(self, stop_reason: str) -> None:
        """A turn of a session ended (its model's last step answered without a tool use)."""
        self._counter("reverie_turns", "Turns ended, by stop reason").add(
            1, {"stop_reason": self._label("stop_reason", stop_reason)}
        )

    def model_request(
        self, model: str, *, ok: bool, input_tokens: int = 0, output_tokens: int = 0
    ) -> None:
        """One request to the Messages API and the tokens it used. A model name takes one of
        the label's values only once a request for it succeeded: names the model server
        refuses (anyone with a key may make up any) are `other`."""
        known = ok or model[:100] in self._labels.get("model", set())
        attributes = {"model": self._label("model", model) if known else "other"}
        self._counter("reverie_model_requests", "Model requests, by model and outcome").add(
            1, {**attributes, "outcome": "ok" if ok else "error"}
        )
        if input_tokens:
            self._counter("reverie_model_input_tokens", "Prompt tokens, by model").add(
                input_tokens, attributes
            )
        if output_tokens:
            self._counter("reverie_model_output_tokens", "Answer tokens, by model").add(
                output_tokens, attributes
            )

    def tool(self, tool: str, seconds: float, *, is_error: bool) -> None:
        """Only built-in tools run here; any other name the model makes up is `other` (else
        a model could take the 100 label values before the real tools were ever used)."""
        label = tool if tool in BUILTIN_TOOL_NAMES else "other"
        self._histogram("reverie_tool_duration", "Tool runs, by tool").record(
            seconds, {"tool": label, "is_error": str(is_error).lower()}
        )

    @contextmanager
    def tool_timer(self, tool: str) -> Iterator[dict[str, bool]]:
        """Times a tool run; set `outcome["is_error"]` inside to label it."""
        outcome = {"is_error": False}
        started = time.monotonic()
        try:
            yield outcome
        except BaseException:
            outcome["is_error"] = True
            raise
        finally:
            self.tool(tool, time.monotonic() - started, is_error=outcome["is_error"])

    def webhook(self, *, delivered: int = 0, failed: int = 0, retrying: int = 0) -> None:
        counter = self._counter("reverie_webhook_deliveries", "Webhook deliveries, by outcome")
        for outcome, count in (("delivered", delivered), ("failed", failed), ("retry", retrying)):
            if count:
                counter.add(count, {"outcome": outcome})

    def activity(self, name: str, seconds: float, *, ok: bool) -> None:
        self._histogram("reverie_activity_duration", "Activity runs, by activity").record(
            seconds, {"activity": name, "outcome": "ok" if ok else "error"}
        )

    def queue_depth(self, task_queue: str, kind: str, backlog: int) -> None:
        self._gauge("reverie_task_queue_backlog", "Tasks waiting for a worker").set(
            max(backlog, 0), {"task_queue": task_queue, "kind": kind}
        )

    def api_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self._histogram("reverie_api_request_duration", "HTTP API requests").record(
            seconds,
            {
                "method": method if method in HTTP_METHODS else "other",
                "route": route,
                "status": str(status),
            },
        )


METRICS = ReverieMetrics()
_runtimes: dict[str, Runtime | None] = {}
log = logging.getLogger("reverie.observability")


def metrics_address(settings: Settings) -> str | None:
    if not settings.metrics_port:
        return None
    host = settings.metrics_host
    return f"[{host}]:{settings.metrics_port}" if ":" in host else f"{host}:{settings.metrics_port}"


def metrics_runtime(settings: Settings) -> Runtime | None:
    """The process's Temporal runtime serving Prometheus, made once per address; None when
    metrics are off. Reverie's own metrics are bound to its meter."""
    address = metrics_address(settings)
    if address is None:
        return None
    if address in _runtimes:
        return _runtimes[address]
    prometheus = PrometheusConfig(bind_address=address, durations_as_seconds=True)
    try:
        runtime: Runtime | None = Runtime(telemetry=TelemetryConfig(metrics=prometheus))
    except ValueError as error:
        # Another process on this host serves that port (a one-shot `reverie key create`
        # beside a running `reverie api`, say): this one runs without metrics.
        log.warning("no metrics from this process: %s on %s", error, address)
        runtime = None
    _runtimes[address] = runtime
    if runtime is not None:
        METRICS.bind(runtime.metric_meter)
    return runtime
