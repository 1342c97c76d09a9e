"""Traces leave a service by OTLP only when OTEL_EXPORTER_OTLP_ENDPOINT is set: a service
process (its own, as the tracer provider is once per process) sends its spans to a real
OTLP/HTTP receiver of the test's own, as protobuf on /v1/traces, named by its service; with
the variable unset nothing is sent."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

ROOT = Path(__file__).resolve().parents[2]

# What a service does: install its provider at start, handle something in a span, stop.
SERVICE = """
from shared.tracing import setup_tracing, tracer
provider = setup_tracing("matching")
with tracer.start_as_current_span("matching handle referral.submitted.v1") as span:
    span.set_attribute("rujukan.event_id", "01TESTEVENT")
provider.shutdown()  # as at a service's stop: what is batched goes out
"""


class Collector(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Receive)
        self.received: list[tuple[str, str, ExportTraceServiceRequest]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Receive(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        self.server.received.append((self.path, self.headers.get("Content-Type", ""), request))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def run_service(**env: str) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    r = subprocess.run([sys.executable, "-c", SERVICE], cwd=ROOT, env={**clean, **env},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_a_service_exports_its_spans_by_otlp_when_configured(collector: Collector) -> None:
    run_service(OTEL_EXPORTER_OTLP_ENDPOINT=collector.url)
    assert collector.received, "no OTLP request reached the collector"
    path, content_type, request = collector.received[0]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    spans = [(resource_spans.resource, span) for resource_spans in request.resource_spans
             for scope in resource_spans.scope_spans for span in scope.spans]
    assert [span.name for _, span in spans] == ["matching handle referral.submitted.v1"]
    resource, span = spans[0]
    assert {a.key: a.value.string_value for a in resource.attributes}["service.name"] == "matching"
    assert {a.key: a.value.string_value for a in span.attributes} == {"rujukan.event_id": "01TESTEVENT"}
    assert len(span.trace_id) == 16
    assert any(span.trace_id)


def test_without_the_endpoint_nothing_is_sent(collector: Collector) -> None:
    run_service()
    assert collector.received == []
