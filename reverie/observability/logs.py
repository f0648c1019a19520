"""Logs as one JSON object a line (REVERIE_LOG_FORMAT=json), each naming its session and thread
when it has them: from the record's own `session_id`/`thread_id`, from `log_context`, or from
the Temporal activity or workflow that logged it (a session's workflow id is its session id)."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import trace

from reverie.settings import Settings

_session: contextvars.ContextVar[str | None] = contextvars.ContextVar("session_id", default=None)
_thread: contextvars.ContextVar[str | None] = contextvars.ContextVar("thread_id", default=None)


@contextlib.contextmanager
def log_context(session_id: str | None = None, thread_id: str | None = None) -> Iterator[None]:
    """Name the session (and thread) every log line inside is about."""
    tokens = [_session.set(session_id), _thread.set(thread_id)]
    try:
        yield
    finally:
        _thread.reset(tokens[1])
        _session.reset(tokens[0])


def without_password(url: str) -> str:
    """A URL fit for a log line: any `user:password@` it carries is cut to `user:***@`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def _temporal_ids(record: logging.LogRecord) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key in ("temporal_activity", "temporal_workflow"):
        details = getattr(record, key, None)
        if isinstance(details, dict):
            found["workflow_id"] = details.get("workflow_id")
            kind = details.get("activity_type") or details.get("workflow_type")
            if kind:
                found["activity" if key == "temporal_activity" else "workflow"] = kind
    return found


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(_temporal_ids(record))
        workflow_id = line.get("workflow_id")
        session = getattr(record, "session_id", None) or _session.get()
        if session is None and isinstance(workflow_id, str) and workflow_id.startswith("sesn_"):
            session = workflow_id
        thread = getattr(record, "thread_id", None) or _thread.get()
        line["session_id"] = session
        line["thread_id"] = thread
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            line["trace_id"] = f"{span.trace_id:032x}"
            line["span_id"] = f"{span.span_id:016x}"
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps({k: v for k, v in line.items() if v is not None}, default=str)


# Line breaks and terminal controls: what would let text from a model, a URL path or a
# session forge a log line of its own, or rewrite a terminal (tab stays).
_CONTROLS = {
    c: chr(c).encode("unicode_escape").decode()
    for c in [*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F, 0x85, 0x2028, 0x2029]
}


class OneLineFilter(logging.Filter):
    """Text logs: a record's message stays on one line, whatever its arguments hold (JSON
    lines escape them anyway). Tracebacks are left as they are."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format is the handler's to report (handleError), not ours
            return True
        escaped = message.translate(_CONTROLS)
        if escaped != message:
            record.msg, record.args = escaped, None
        return True


def configure_logging(settings: Settings, *, level: int | None = None) -> None:
    """JSON lines on stderr when asked; otherwise the process's own (text) logging stays,
    each message kept to one line."""
    root = logging.getLogger()
    if level is not None:
        root.setLevel(level)
    if not root.handlers:  # as Python's last resort would print, but through the filter
        root.addHandler(logging.StreamHandler())
    if settings.log_format != "json":
        for handler in root.handlers:
            if not any(isinstance(f, OneLineFilter) for f in handler.filters):
                handler.addFilter(OneLineFilter())
        return
    for handler in root.handlers:
        handler.setFormatter(JsonFormatter())
