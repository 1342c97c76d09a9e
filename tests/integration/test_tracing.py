"""One event's trace from the request that made it, through the outbox and a stream hop, to
its handler and the events the handler makes: one trace id, parent by parent."""

from __future__ import annotations

import asyncio
import json
import logging

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from devtools.redis_server import RedisProcess
from shared.events import Envelope, ReferralSubmitted
from shared.streams.consumer import Message, StreamConsumer
from shared.streams.topology import SUBMITTED, SUBMITTED_URGENT, connect, provision
from shared.tracing import JsonFormatter, setup_tracing, tracer
from tests.integration.test_streams import submitted, until
from tests.integration.test_streams_recovery import _commit, _relay, outbox_db, own_redis

__all__ = ["outbox_db", "own_redis"]


def _exporter() -> InMemorySpanExporter:
    exporter = InMemorySpanExporter()
    setup_tracing("test").add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


async def test_one_trace_from_the_request_through_the_outbox_and_the_stream_to_the_handler(
    own_redis: RedisProcess, outbox_db: async_sessionmaker[AsyncSession]
) -> None:
    exporter = _exporter()
    redis = connect(own_redis.url)
    group = "g-trace"
    topology = {group: [SUBMITTED_URGENT, SUBMITTED]}
    await provision(redis, topology)
    relay = _relay(outbox_db, redis)
    await relay.check_redis()

    made: dict[str, Envelope] = {}
    lines: dict[str, dict[str, str]] = {}

    async def handler(ms: list[Message]) -> None:
        for m in ms:
            # What the handler makes carries its span on; its log lines name the event and trace.
            made[m.envelope.id] = Envelope.wrap(m.data, source="test", subject=m.envelope.subject)  # type: ignore[arg-type]
            rec = logging.LogRecord("rujukan.test", logging.INFO, __file__, 1, "handled", (), None)
            lines[m.envelope.id] = json.loads(JsonFormatter("test").format(rec))

    c = StreamConsumer(redis, group=group, consumer="c", streams=topology[group], handler=handler,
                       topology=topology, block_ms=100, batch=1)
    task = asyncio.create_task(c.run())
    try:
        with tracer.start_as_current_span("POST /v1/referrals") as request_span:
            in_request = submitted()
        outside = submitted()  # made outside any span: the outbox starts its trace
        broken = submitted().model_copy(update={"traceparent": "00-not-a-trace-01"})  # a forged header
        await _commit(outbox_db, [in_request, outside, broken])
        assert await relay.publish_pending() == 3
        await until(lambda: _all(made, [in_request.id, outside.id, broken.id]))
    finally:
        c.stop()
        await asyncio.wait_for(task, 10)
        await redis.aclose()

    spans = exporter.get_finished_spans()
    handled = {s.attributes["rujukan.event_id"]: s for s in spans  # type: ignore[index]
               if s.name == f"{group} handle {in_request.type}"}
    req = request_span.get_span_context()
    h = handled[in_request.id]
    assert h.context is not None
    assert h.parent is not None
    assert h.context.trace_id == req.trace_id
    assert h.parent.span_id == req.span_id
    trace_id, span_id = made[in_request.id].traceparent.split("-")[1:3]  # type: ignore[union-attr]
    assert int(trace_id, 16) == req.trace_id
    assert int(span_id, 16) == h.context.span_id
    assert lines[in_request.id]["event_id"] == in_request.id
    assert lines[in_request.id]["trace_id"] == format(req.trace_id, "032x")

    stored = _one(spans, f"outbox {outside.type}", outside.id)
    o = handled[outside.id]
    assert stored.context is not None
    assert o.parent is not None
    assert o.parent.span_id == stored.context.span_id
    assert o.context is not None
    assert o.context.trace_id == stored.context.trace_id != req.trace_id

    # A malformed traceparent starts a trace of its own; the event is handled all the same.
    b = handled[broken.id]
    assert b.parent is None
    assert b.context is not None
    assert b.context.trace_id not in (req.trace_id, stored.context.trace_id)


async def test_no_span_no_traceparent_and_no_change_to_the_envelope() -> None:
    env = Envelope.wrap(ReferralSubmitted(
        referral_id="r1", agency_id="demo", pmks_category="fakir_miskin", urgency="routine",  # type: ignore[arg-type]
        region_code="12.71", age_band="30-34", gender="female", modality="any", consent_share=True,  # type: ignore[arg-type]
    ), source="test", subject="r1")
    assert env.traceparent is None
    assert Envelope.model_validate_json(env.model_dump_json()) == env


async def _all(made: dict[str, Envelope], ids: list[str]) -> bool:
    return all(i in made for i in ids)


def _one(spans: tuple[ReadableSpan, ...], name: str, event_id: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name and (s.attributes or {}).get("rujukan.event_id") == event_id]
    assert len(found) == 1
    return found[0]
