"""Logs as JSON lines and OpenTelemetry traces carried by the envelope's `traceparent`.

Logs: `LOG_FORMAT=json` writes one JSON object a line (service, level, logger, message, and
while a handler processes an event, its event id and trace id); text stays the default for
`make run`. Only the log call's message is written: the project's rule that log messages
name ids and counts, never personal data, holds here as everywhere.

Traces: the envelope's W3C `traceparent` carries the trace from where an event was made (the
request or the handler that made it; `Envelope.wrap` takes the current span), through the
outbox (which stamps an event made outside any span with a span of its own, and makes each
publish a span), to each consumer's handling (a child span, `StreamConsumer`), whose events
carry it on. Work stored for later (a delivery's mail) keeps the traceparent of what queued
it and runs in that trace (`continued`). Spans are exported by OTLP only when
OTEL_EXPORTER_OTLP_ENDPOINT is set (the `otlp` extra); otherwise they are made for the ids
in the logs and dropped. Span attributes are ids and types only.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

log = logging.getLogger("rujukan.tracing")
_PROPAGATOR = TraceContextTextMapPropagator()
# A proxy: it uses the provider setup_tracing installs, and makes no-op spans before that.
tracer = trace.get_tracer("rujukan")

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


def setup_tracing(service: str) -> TracerProvider:
    """Install the process's tracer provider once (later calls return it)."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("OTEL_EXPORTER_OTLP_ENDPOINT is set but the OTLP exporter is not installed "
                        "(uv sync --extra otlp); traces are not exported")
        else:
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


def current_traceparent() -> str | None:
    """The current span's W3C traceparent, None outside a (recording) span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


@contextlib.contextmanager
def continued(traceparent: str | None) -> Iterator[None]:
    """Run in the trace a stored traceparent names: work done later for an event, outside its
    handler (a delivery round's mail for the decision that queued it). Without one, or with a
    malformed one, in a trace of its own, never in whatever the caller's context holds."""
    token = otel_context.attach(context_of(traceparent) or Context())
    try:
        yield
    finally:
        otel_context.detach(token)


def context_of(traceparent: str | None) -> Context | None:
    """The context a span continues from an envelope's traceparent (None: a new trace);
    a malformed traceparent starts a new trace rather than failing the handler."""
    if not traceparent:
        return None
    return _PROPAGATOR.extract({"traceparent": traceparent})
