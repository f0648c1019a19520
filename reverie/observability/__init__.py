"""What operators watch: traces (OpenTelemetry), metrics (Prometheus) and JSON logs.

`setup(settings)` turns on what the settings ask for, once per process; everything else here
costs nothing when it is off (metrics are then no-ops, traces go to no exporter)."""

from __future__ import annotations

from reverie.observability.logs import configure_logging
from reverie.observability.metrics import metrics_runtime
from reverie.observability.tracing import configure_tracing
from reverie.settings import Settings


def setup(settings: Settings, *, level: int | None = None) -> None:
    """Logs, traces and metrics as configured; safe to call more than once."""
    configure_logging(settings, level=level)
    configure_tracing(settings)
    metrics_runtime(settings)


__all__ = ["setup"]
