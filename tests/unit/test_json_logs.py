"""LOG_FORMAT=json: one JSON object a line, with the event id and trace id while a handler works."""

from __future__ import annotations

import json
import logging

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from shared.runtime import configure_logging
from shared.tracing import JsonFormatter, event_context


def _record(msg: str, *args: object, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            import sys
            exc_info = sys.exc_info()
    return logging.LogRecord("rujukan.streams", logging.WARNING, __file__, 1, msg, args, exc_info)


def test_a_line_outside_a_handler_names_service_level_logger_and_message_only() -> None:
    line = JsonFormatter("matching").format(_record("consumer %s: %d entries", "matching", 3))
    assert "\n" not in line
    out = json.loads(line)
    assert {k: out[k] for k in ("service", "level", "logger", "message")} == {
        "service": "matching", "level": "WARNING", "logger": "rujukan.streams",
        "message": "consumer matching: 3 entries"}
    assert "event_id" not in out
    assert "trace_id" not in out


def test_a_line_inside_a_handler_carries_the_event_and_trace_ids() -> None:
    ctx = SpanContext(trace_id=0x4BF92F3577B34DA6A3CE929D0E0E4736, span_id=0x00F067AA0BA902B7, is_remote=True,
                      trace_flags=TraceFlags(1))
    with event_context("01JEVENT"), trace.use_span(NonRecordingSpan(ctx)):
        out = json.loads(JsonFormatter("notify").format(_record("sent", exc=True)))
    assert out["event_id"] == "01JEVENT"
    assert out["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert "ValueError: boom" in out["exc"]
    assert "\n" not in JsonFormatter("notify").format(_record("x", exc=True))
    # Out of the handler again: nothing leaks into the next line.
    assert "event_id" not in json.loads(JsonFormatter("notify").format(_record("idle")))


def test_a_message_that_looks_like_json_cannot_forge_fields() -> None:
    out = json.loads(JsonFormatter("intake").format(_record('x", "level": "DEBUG')))
    assert out["level"] == "WARNING"
    assert out["message"] == 'x", "level": "DEBUG'


def test_configure_logging_writes_json_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        monkeypatch.setenv("LOG_FORMAT", "json")
        configure_logging("intake")
        logging.getLogger("rujukan.test").info("started %d workers", 2)
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert json.loads(line)["message"] == "started 2 workers"
        monkeypatch.delenv("LOG_FORMAT")
        configure_logging("intake")
        logging.getLogger("rujukan.test").info("started %d workers", 2)
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.endswith("intake INFO rujukan.test: started 2 workers")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
