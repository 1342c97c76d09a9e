"""Logs as JSON lines and OpenTelemetry traces carried by the envelope's `traceparent`.

Logs: `LOG_FORMAT=json` writes one JSON object a line (service, level, logger, message, and
while a handler processes an event, its event id and trace id); text stays the default for
`make run`. Only the log call's message is written: the project's rule that log messages
name ids and counts, never personal data, holds here as everywhere.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

from opentelemetry import trace

# The event a handler is processing in this task (None outside a handler).
current_event_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("rujukan_event_id", default=None)


@contextlib.contextmanager
def event_context(event_id: str | None) -> Iterator[None]:
    token = current_event_id.set(event_id)
    try:
        yield
    finally:
        current_event_id.reset(token)


def current_trace_id() -> str | None:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "service": self.service,
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (event_id := current_event_id.get()) is not None:
            out["event_id"] = event_id
        if (trace_id := current_trace_id()) is not None:
            out["trace_id"] = trace_id
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)
