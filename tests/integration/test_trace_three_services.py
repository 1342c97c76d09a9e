"""One referral's trace through the three services: intake's request, the outbox's publish,
matching's decision, notify's handling, the mail, and the mail's outcome back on intake's
timeline, all in one trace, each span's parent in it; and nothing personal in any span.

The three apps run in this process with their real lifespans (migrations, streams,
consumers, relays, the delivery round) on one real Redis, a database each and a real SMTP
server, with one tracer provider (the process's; spans of the apps are told apart by what
each service names them: its consumer group, its HTTP routes, its mail)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from devtools.mailcatcher import MailCatcher
from shared.tracing import setup_tracing
from tests.apps import eventually
from tests.integration.test_http_boundary import AGENCY, client, make, sqlite, started
from tests.integration.test_intake import body as referral
from tests.mails import text_of

# What the agency tells about the person: none of it may reach a span.
PERSONAL = {"name": "Kartika Wulandari", "phone": "+62 813 9876 5432", "email": "kartika.w@example.org",
            "initials": "KW", "narrative": "Diusir dari rumah kontrakan di Jalan Melati 12 bersama dua anaknya."}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span this test's code ends. The process has one tracer provider (OpenTelemetry's
    global is set once): setup_tracing installs it or returns it, and the exporter is added to
    it, then stopped, so that it keeps nothing of the tests that follow."""
    exporter = InMemorySpanExporter()
    setup_tracing("test").add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        exporter.shutdown()


def told_by_the_agency(ref: str) -> dict[str, Any]:
    body = referral(ref, narrative=PERSONAL["narrative"])
    body["client"]["initials"] = PERSONAL["initials"]
    body["client"]["contact"] = {k: PERSONAL[k] for k in ("name", "phone", "email")}
    return body


async def test_one_referral_is_one_trace_through_intake_matching_and_notify(
    tmp_path: Path, redis_url: str, redis: Any, mailbox: MailCatcher, spans: InMemorySpanExporter
) -> None:
    apps = [make("intake", sqlite(tmp_path, "intake"), redis_url),
            make("matching", sqlite(tmp_path, "matching"), redis_url, seed_demo=True),
            make("notify", sqlite(tmp_path, "notify"), redis_url, smtp_url=mailbox.url)]
    async with started(*apps) as asgis, client(asgis[0]) as intake:
        r = await intake.post("/v1/referrals", json=told_by_the_agency("PPA-MDN-TRACE-1"), headers=AGENCY)
        assert r.status_code == 202, r.text
        rid = r.json()["id"]
        mail = await mailbox.wait_for_async(lambda m: rid in text_of(m), timeout=60)
        assert mail["To"] == "unit.ppa@polrestabes-medan.example"  # the receiver, not the person

        async def notified() -> bool:  # the mail's outcome is back on the agency's timeline
            view = (await intake.get(f"/v1/referrals/{rid}", headers=AGENCY)).json()
            return any(step["kind"] == "notified" for step in view["timeline"])

        await eventually(notified, timeout=30)
    # The apps have stopped: every span of the trace has ended and been exported.
    finished = spans.get_finished_spans()

    request = one(finished, lambda s: s.name == "POST /v1/referrals")
    assert request.parent is None  # the agency sent no traceparent: the request starts the trace
    trace_id = ctx(request).trace_id
    in_trace = [s for s in finished if ctx(s).trace_id == trace_id]
    names = [s.name for s in in_trace]
    # Intake: the request and its published event; matching: its decision; notify: its
    # handling and the mail; intake again: the mail's outcome on the timeline.
    for hop in ("outbox publish referral.submitted.v1", "matching handle referral.submitted.v1",
                "outbox publish referral.matched.v2", "notify handle referral.matched.v2", "notify mail send",
                "outbox publish notification.sent.v2", "intake handle notification.sent.v2"):
        assert hop in names, (hop, names)
    assert {"intake", "matching", "notify"} <= {s.name.split(" ")[0] for s in in_trace}

    # Connected: one root, and every other span's parent is a span of the trace.
    ids = {ctx(s).span_id for s in in_trace}
    assert [s.name for s in in_trace if s.parent is None] == ["POST /v1/referrals"]
    orphans = [s.name for s in in_trace if s.parent is not None and s.parent.span_id not in ids]
    assert orphans == []
    # Each hop hangs under the one before it.
    assert parent_of(in_trace, "matching handle referral.submitted.v1").name in ("POST /v1/referrals",
                                                                                 "fastapi.endpoint")
    assert chain(in_trace, "notify mail send")[:2] == ["notify mail send", "notify handle referral.matched.v2"]
    assert "matching handle referral.submitted.v1" in chain(in_trace, "notify mail send")
    # The mail's outcome continues the trace of the delivery's queuing, not a trace of its own.
    assert chain(in_trace, "intake handle notification.sent.v2")[1] == "notify handle referral.matched.v2"
    # The mail span names its message, nothing of it.
    mail_span = one(in_trace, lambda s: s.name == "notify mail send")
    assert set(mail_span.attributes or {}) == {"rujukan.message_id"}

    # Nothing the agency told about the person is in any span of the test (trace or not):
    # names, attributes, events, links, status.
    told = json.dumps([as_text(s) for s in finished], ensure_ascii=False)
    assert rid in told  # ids are there (the timeline's GETs name it): the check reads what the spans hold
    for secret in (*PERSONAL.values(), "Kartika", "Wulandari", "813 9876", "Jalan Melati", '"KW"'):
        assert secret not in told, secret


def ctx(s: ReadableSpan) -> Any:
    assert s.context is not None
    return s.context


def one(spans: Any, match: Any) -> ReadableSpan:
    found = [s for s in spans if match(s)]
    assert len(found) == 1, [s.name for s in found]
    return found[0]


def parent_of(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    child = one(spans, lambda s: s.name == name)
    assert child.parent is not None, name
    return one(spans, lambda s: ctx(s).span_id == child.parent.span_id)  # type: ignore[union-attr]


def chain(spans: list[ReadableSpan], name: str) -> list[str]:
    """The names from the span up to the root, parent by parent."""
    by_id = {ctx(s).span_id: s for s in spans}
    span: ReadableSpan | None = one(spans, lambda s: s.name == name)
    names = []
    while span is not None:
        names.append(span.name)
        span = by_id.get(span.parent.span_id) if span.parent is not None else None
    return names


def as_text(s: ReadableSpan) -> dict[str, Any]:
    return {"name": s.name, "attributes": dict(s.attributes or {}),
            "events": [(e.name, dict(e.attributes or {})) for e in s.events],
            "links": [dict(link.attributes or {}) for link in s.links],
            "status": s.status.description, "resource": dict(s.resource.attributes)}
