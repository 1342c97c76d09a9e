"""Prometheus metrics of a service at `/metrics`: HTTP requests by route template and status
and their duration, its consumer group's streams (length, pending, lag, dead letters) and
the domain's counts (one GROUP BY query), read at scrape time with a short timeout; how long
referrals waited for their first decision (matching) and for their first proposal mail
(notify), crisis apart; and FastStream's own figures of the messages each stream delivered.

Only counts and labels from closed sets (route templates, statuses, stream names): never an
id or anything personal. Open like /health (the front door does not route it; services'
ports are internal)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from faststream.redis.prometheus import RedisPrometheusMiddleware
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import bindparam, text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.db import UTCDateTime
from shared.events import utcnow
from shared.streams.topology import TOPOLOGY, dead_letter_stream
from shared.vocab import Urgency

log = logging.getLogger("rujukan.metrics")

SCRAPE_TIMEOUT_S = 2.0

@dataclass(frozen=True)
class Count:
    """One gauge read with one query: its rows are (label values..., count)."""

    name: str
    doc: str
    labels: tuple[str, ...]
    sql: str


# Service -> its domain's gauges. `:minute_ago` and `:soon` are bound at scrape time.
DOMAIN_COUNTS: dict[str, tuple[Count, ...]] = {
    "intake": (
        Count("rujukan_referrals", "Referrals by status.", ("status",),
              "SELECT status, COUNT(*) FROM referral GROUP BY status"),
        Count("rujukan_crisis_undecided", "Crisis referrals submitted over a minute ago, still undecided.", (),
              "SELECT COUNT(*) FROM referral WHERE status = 'submitted' AND urgency = 'crisis' "
              "AND created_at < :minute_ago"),
        Count("rujukan_webhook_endpoints", "Agencies' webhook endpoints by status (failing: deliveries failing).",
              ("status",), "SELECT status, COUNT(*) FROM webhook_endpoint GROUP BY status"),
    ),
    "matching": (
        Count("rujukan_decisions", "Decisions by outcome.", ("outcome",),
              "SELECT outcome, COUNT(*) FROM decision GROUP BY outcome"),
        Count("rujukan_holds_expiring", "Seat holds running out within the hour.", (),
              "SELECT COUNT(*) FROM seat_hold WHERE state = 'held' AND expires_at < :soon"),
    ),
    "notify": (
        Count("rujukan_deliveries", "Deliveries by state (failed: out of attempts).", ("state",),
              "SELECT state, COUNT(*) FROM delivery GROUP BY state"),
        # A crisis or a risk flag must reach a person in minutes: its mail still unsent after a
        # minute (the relay refusing, a backoff) pages, long before its attempts run out.
        Count("rujukan_urgent_mail_waiting", "Urgent mails (a crisis, a risk flag) queued over a minute ago, unsent.",
              (), "SELECT COUNT(*) FROM delivery WHERE state = 'pending' AND urgent AND created_at < :minute_ago"),
    ),
}


class Snapshot(Collector):
    """What the route read at scrape time (async), handed to prometheus_client's sync collect."""

    def __init__(self, service: str, group: str) -> None:
        self.service, self.group = service, group
        self.streams: list[tuple[str, int, int, int]] = []  # stream, length, pending, lag
        self.dead_letters = 0
        self.domain: dict[str, list[tuple[tuple[str, ...], int]]] = {}
        self.up = {"redis": 0, "database": 0}

    async def refresh(self, redis: Any, engine: Any) -> None:
        try:
            await asyncio.wait_for(self._read_streams(redis), SCRAPE_TIMEOUT_S)
            self.up["redis"] = 1
        except Exception as e:  # a scrape says Redis is down; it never fails
            self.up["redis"] = 0
            log.warning("metrics: streams unreadable (%s)", type(e).__name__)
        try:
            await asyncio.wait_for(self._read_domain(engine), SCRAPE_TIMEOUT_S)
            self.up["database"] = 1
        except Exception as e:
            self.up["database"] = 0
            log.warning("metrics: domain counts unreadable (%s)", type(e).__name__)

    async def _read_streams(self, redis: Any) -> None:
        rows: list[tuple[str, int, int, int]] = []
        for stream in TOPOLOGY.get(self.group, []):
            length = int(await redis.xlen(stream))
            pending = lag = 0
            for info in await redis.xinfo_groups(stream):
                name = info.get("name")
                if (name.decode() if isinstance(name, bytes) else name) == self.group:
                    pending = int(info.get("pending") or 0)
                    # Redis 7 counts the entries not yet delivered; None when it cannot tell.
                    raw_lag = info.get("lag")
                    lag = int(raw_lag) if raw_lag is not None else 0
            rows.append((stream, length, pending, lag))
        self.streams = rows
        self.dead_letters = int(await redis.xlen(dead_letter_stream(self.group)))

    async def _read_domain(self, engine: Any) -> None:
        now = utcnow()
        found: dict[str, list[tuple[tuple[str, ...], int]]] = {}
        async with engine.connect() as conn:
            for count in DOMAIN_COUNTS.get(self.service, ()):
                query = text(count.sql)
                binds = {"minute_ago": now - timedelta(minutes=1), "soon": now + timedelta(hours=1)}
                used = {k: v for k, v in binds.items() if f":{k}" in count.sql}
                query = query.bindparams(*(bindparam(k, type_=UTCDateTime) for k in used)) if used else query
                rows = (await conn.execute(query, used)).all()
                found[count.name] = [(tuple(str(v) for v in row[:-1]), int(row[-1] or 0)) for row in rows]
        self.domain = found

    def collect(self) -> Iterator[GaugeMetricFamily]:
        length = GaugeMetricFamily("rujukan_stream_length", "Entries in a stream the group reads.",
                                   labels=["group", "stream"])
        pending = GaugeMetricFamily("rujukan_stream_pending", "Entries delivered to the group, not yet acknowledged.",
                                    labels=["group", "stream"])
        lag = GaugeMetricFamily("rujukan_stream_lag", "Entries not yet delivered to the group.",
                                labels=["group", "stream"])
        for stream, n, p, g in self.streams:
            length.add_metric([self.group, stream], n)
            pending.add_metric([self.group, stream], p)
            lag.add_metric([self.group, stream], g)
        yield from (length, pending, lag)
        dead = GaugeMetricFamily("rujukan_dead_letters", "Entries in the group's dead-letter stream.",
                                 labels=["group"])
        dead.add_metric([self.group], self.dead_letters)
        yield dead
        up = GaugeMetricFamily("rujukan_dependency_up", "Whether the last scrape could read it.",
                               labels=["service", "dependency"])
        for dependency, value in self.up.items():
            up.add_metric([self.service, dependency], value)
        yield up
        for count in DOMAIN_COUNTS.get(self.service, ()):
            gauge = GaugeMetricFamily(count.name, count.doc, labels=list(count.labels))
            for label_values, n in self.domain.get(count.name, []):
                gauge.add_metric(list(label_values), n)
            yield gauge


HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetrics:
    """Requests by method, route template (never the path: it holds ids) and status, and their duration."""

    def __init__(self, app: ASGIApp, requests: Counter, duration: Histogram) -> None:
        self.app, self.requests, self.duration = app, requests, duration

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [500]
        started = time.perf_counter()

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            # A client names the method: outside HTTP's own, one label, or each made-up method
            # would be a new series (memory without bound).
            method = scope.get("method", "")
            method = method if method in HTTP_METHODS else "other"
            self.requests.labels(method, template, str(status[0])).inc()
            self.duration.labels(method, template).observe(time.perf_counter() - started)


# From seconds (a crisis is decided and mailed in seconds) to days (a waitlisted referral is
# proposed when a seat frees).
WAIT_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600,
                24 * 3600, 72 * 3600)
# What a first decision can be (matching's CaseState for a decision; rujukan_decisions' outcomes).
DECISION_OUTCOMES = ("proposed", "waitlisted", "unmatched")


class _Waits:
    """A histogram of waits since submission, its labels from closed sets only: every
    combination exists from the start (rate() works from the first scrape), and a value
    outside them is not observed rather than becoming a new series."""

    def __init__(self, histogram: Histogram, allowed: tuple[tuple[str, ...], ...]) -> None:
        self.histogram, self.allowed = histogram, allowed
        for values in itertools.product(*allowed):
            histogram.labels(*values)

    def _observe(self, submitted_at: datetime | None, now: datetime, *values: str) -> None:
        if submitted_at is None:  # an event from before the time was carried
            return
        if any(v not in allowed for v, allowed in zip(values, self.allowed, strict=True)):
            log.warning("metrics: a wait not observed, a label value outside its set")
            return
        self.histogram.labels(*values).observe(max((now - submitted_at).total_seconds(), 0.0))


class DecisionTimes(_Waits):
    """matching: from a referral's submission to its first decision, by urgency and outcome."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(Histogram(
            "rujukan_referral_decision_seconds",
            "From a referral's submission to matching's first decision on it, by urgency and outcome.",
            ["urgency", "outcome"], buckets=WAIT_BUCKETS, registry=registry),
            (tuple(Urgency), DECISION_OUTCOMES))

    def __call__(self, urgency: str, outcome: str, submitted_at: datetime | None, decided_at: datetime) -> None:
        self._observe(submitted_at, decided_at, urgency, outcome)


class NotificationTimes(_Waits):
    """notify: from a referral's submission to the first proposal mail sent for it, by urgency."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(Histogram(
            "rujukan_referral_notification_seconds",
            "From a referral's submission to the first proposal mail sent to a receiver, by urgency.",
            ["urgency"], buckets=WAIT_BUCKETS, registry=registry),
            (tuple(Urgency),))

    def __call__(self, urgency: str, submitted_at: datetime | None, sent_at: datetime) -> None:
        self._observe(submitted_at, sent_at, urgency)


def stream_metrics(registry: CollectorRegistry, service: str) -> RedisPrometheusMiddleware:
    """FastStream's middleware for the broker: messages received and processed per stream
    (its `handler` label), their duration and those in process, on the app's registry
    (`faststream_*`, `app_name` the service). A batch counts its entries; its status is
    "acked" (the consumer never fails a batch: what fails shows as dead letters); its size
    reads 0 (the entries reach the consumer unparsed, see shared/streams/consumer.py)."""
    return RedisPrometheusMiddleware(registry=registry, app_name=service)


def install_metrics(app: FastAPI, service: str, group: str) -> CollectorRegistry:
    """`/metrics` and the HTTP middleware, on a registry of this app's own."""
    registry = CollectorRegistry(auto_describe=True)
    requests = Counter("rujukan_http_requests", "HTTP requests by route template and status.",
                       ["method", "route", "status"], registry=registry)
    duration = Histogram("rujukan_http_request_duration_seconds", "HTTP request duration by route template.",
                         ["method", "route"], registry=registry)
    snapshot = Snapshot(service, group)
    registry.register(snapshot)
    app.add_middleware(HttpMetrics, requests=requests, duration=duration)

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        runtime = getattr(request.app.state, "runtime", None)
        if runtime is not None:
            await snapshot.refresh(runtime.redis, runtime.engine)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    app.state.metrics_registry = registry
    return registry

