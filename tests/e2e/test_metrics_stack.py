"""The system at a glance, proven on the running stack: three service processes (as `make
run` starts them), a real Redis and a real SMTP server. Two referrals, one of them a crisis,
and a poison entry go in; each service's /metrics then shows the counts they caused — the
requests, the referrals and decisions, the times to decision and to the first mail (the
crisis apart), FastStream's entries per stream, the dead letter — and nothing personal."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

import httpx
import pytest
import redis as redis_sync
from prometheus_client.parser import text_string_to_metric_families

from devtools.mailcatcher import MailCatcher
from shared.streams.topology import SUBMITTED, SUBMITTED_URGENT, dead_letter_stream
from tests.apps import DEMO_KEY
from tests.e2e.conftest import StackFactory
from tests.e2e.test_first_referral import PERSONAL, referral_body, wait_status

pytestmark = pytest.mark.e2e

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(port: int) -> tuple[str, Samples]:
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert r.status_code == 200, r.text
    samples: Samples = defaultdict(list)
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[s.name].append((s.labels, s.value))
    return r.text, samples


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for ls, v in samples.get(name, []) if all(ls.get(k) == want for k, want in labels.items()))


def scraped_once(port: int, name: str, count: float, timeout: float = 30) -> Samples:
    """The service's samples once `name` totals `count`."""
    deadline = time.monotonic() + timeout
    while total(samples := scrape(port)[1], name) != count:
        assert time.monotonic() < deadline, f"{name} stayed at {total(samples, name)}, not {count}"
        time.sleep(0.2)
    return samples


def until(check: Any, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_metrics_count_what_the_referrals_and_a_poison_entry_caused(
        stack_factory: StackFactory, smtp_server: MailCatcher, database: str) -> None:
    smtp_server.clear()
    stack = stack_factory(database=database, smtp_url=smtp_server.url)
    port = {name: stack.port(name) for name in ("intake", "matching", "notify")}
    auth = {"Authorization": f"Bearer {DEMO_KEY}"}
    crisis = referral_body("PPA-MDN-2026-0900")
    crisis["urgency"] = "crisis"
    ids = []
    for body in (referral_body("PPA-MDN-2026-0899"), crisis):
        r = httpx.post(f"http://127.0.0.1:{port['intake']}/v1/referrals", json=body, headers=auth, timeout=10)
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    redis = redis_sync.Redis.from_url(stack.redis_url)
    try:
        redis.xadd(SUBMITTED, {"type": "referral.submitted", "event": "{not json"})  # a poison entry
        for rid in ids:
            wait_status(f"http://127.0.0.1:{port['intake']}", rid, {"proposed"}, timeout=60)
        until(lambda: redis.xlen(dead_letter_stream("matching")) == 1, "the poison entry was not dead-lettered")
    finally:
        redis.close()

    _, i = scrape(port["intake"])
    assert total(i, "rujukan_http_requests_total", method="POST", route="/v1/referrals", status="202") == 2
    assert total(i, "rujukan_referrals", status="proposed") == 2
    assert total(i, "rujukan_dead_letters") == 0
    assert total(i, "rujukan_dependency_up", service="intake") == 2  # Redis and the database read

    # The histograms are observed just after each commit: scraped once they have counted.
    m = scraped_once(port["matching"], "rujukan_referral_decision_seconds_count", 2)
    assert total(m, "rujukan_dead_letters", group="matching") == 1
    assert total(m, "rujukan_decisions", outcome="proposed") == 2
    assert total(m, "rujukan_referral_decision_seconds_count", urgency="crisis", outcome="proposed") == 1
    assert total(m, "rujukan_referral_decision_seconds_count", urgency="routine", outcome="proposed") == 1
    assert total(m, "faststream_received_messages_total", app_name="matching", handler=SUBMITTED_URGENT) >= 1
    assert total(m, "faststream_received_messages_total", app_name="matching", handler=SUBMITTED) >= 2  # + poison

    n = scraped_once(port["notify"], "rujukan_referral_notification_seconds_count", 2)
    assert total(n, "rujukan_referral_notification_seconds_count", urgency="crisis") == 1
    assert total(n, "rujukan_referral_notification_seconds_count", urgency="routine") == 1
    assert total(n, "rujukan_deliveries", state="sent") >= 2
    assert total(n, "rujukan_dead_letters", group="notify") == 0

    # Counts and closed-set labels only: no id, nothing the agency told about the person.
    for name in ("intake", "matching", "notify"):
        text, samples = scrape(port[name])
        # Every figure was read: each domain query runs on this database, Redis answered.
        assert total(samples, "rujukan_dependency_up", service=name) == 2, name
        for secret in (*PERSONAL, *ids, "PPA-MDN-2026-0899", json.dumps(crisis["client"]["contact"]["email"])):
            assert secret not in text, (name, secret)
