"""Intake's request span (FastAPI's own, on once setup_tracing installed a provider) starts
the trace its events carry (Envelope.wrap takes the current span)."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.events import Envelope, ReferralSubmitted
from shared.tracing import setup_tracing


async def test_a_request_span_starts_the_trace_of_the_events_it_makes() -> None:
    exporter = InMemorySpanExporter()
    setup_tracing("test").add_span_processor(SimpleSpanProcessor(exporter))
    app = FastAPI()
    made: list[Envelope] = []

    @app.post("/v1/referrals/{rid}")
    async def submit(rid: str) -> dict[str, str]:
        made.append(Envelope.wrap(ReferralSubmitted(
            referral_id=rid, agency_id="demo", pmks_category="fakir_miskin", urgency="routine",  # type: ignore[arg-type]
            region_code="12.71", age_band="30-34", gender="female", modality="any",  # type: ignore[arg-type]
            consent_share=True), source="intake", subject=rid))
        return {"ok": rid}

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.post("/v1/referrals/r-1")
    assert r.status_code == 200
    spans = exporter.get_finished_spans()
    request = next(s for s in spans if s.name == "POST /v1/referrals/{rid}")
    endpoint = next(s for s in spans if s.name == "fastapi.endpoint")
    assert request.parent is None
    assert request.context is not None
    assert endpoint.context is not None
    assert endpoint.parent is not None
    assert endpoint.parent.span_id == request.context.span_id
    _, trace_id, span_id, _ = made[0].traceparent.split("-")  # type: ignore[union-attr]
    assert int(trace_id, 16) == request.context.trace_id
    assert int(span_id, 16) == endpoint.context.span_id
