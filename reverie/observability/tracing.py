"""OpenTelemetry traces: Temporal's tracing interceptor on every client and worker, and a span
per HTTP API request, so one trace runs from a request through its workflow to its activities.

On when OTEL_EXPORTER_OTLP_ENDPOINT is set (exported by OTLP/HTTP; the other OTEL_* variables
apply), or when a test hands in its own provider (`use_provider`). Off, nothing is intercepted.
"""

from __future__ import annotations

import os
import time
from typing import Any

from aiohttp import web
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from reverie.observability.metrics import METRICS
from reverie.settings import Settings

INSTRUMENTATION = "reverie"
_tracer: trace.Tracer | None = None


def use_provider(provider: TracerProvider | None) -> None:
    """Trace with this provider from now on (None: stop). Clients connected before keep what
    they had."""
    global _tracer
    _tracer = provider.get_tracer(INSTRUMENTATION) if provider is not None else None


def tracer() -> trace.Tracer | None:
    return _tracer


def otlp_provider(endpoint: str) -> TracerProvider:
    """A provider exporting in batches by OTLP/HTTP to `endpoint` (its /v1/traces)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    service = os.environ.get("OTEL_SERVICE_NAME") or "reverie"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def configure_tracing(settings: Settings) -> None:
    """An OTLP exporter for this process when an endpoint is configured (once)."""
    if _tracer is not None or not settings.otlp_endpoint:
        return
    provider = otlp_provider(settings.otlp_endpoint)
    trace.set_tracer_provider(provider)
    use_provider(provider)


def temporal_interceptors() -> list[Any]:
    """Temporal's tracing interceptor when tracing is on: on a client it traces what the client
    starts, and workers built on that client trace workflows and activities."""
    if _tracer is None:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(_tracer)]


def _route(request: web.Request) -> str:
    """The route's pattern (`/v1/sessions/{session_id}`), never the ids in the path."""
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


@web.middleware
async def observe_requests(request: web.Request, handler: Any) -> web.StreamResponse:
    """A server span per request (joining the caller's trace from `traceparent`) and the
    request's duration in the metrics."""
    started = time.monotonic()
    route = _route(request)
    status = 500
    try:
        if _tracer is None:
            response = await handler(request)
        else:
            context = propagate.extract(request.headers)
            with _tracer.start_as_current_span(
                f"{request.method} {route}",
                context=context,
                kind=trace.SpanKind.SERVER,
                attributes={"http.request.method": request.method, "http.route": route},
            ) as span:
                response = await handler(request)
                span.set_attribute("http.response.status_code", response.status)
        status = response.status
        return response
    except web.HTTPException as error:
        status = error.status
        raise
    finally:
        METRICS.api_request(request.method, route, status, time.monotonic() - started)
