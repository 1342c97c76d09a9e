"""Agencies told at once: webhook endpoints, one delivery per endpoint for every step on a
referral's timeline, and the worker that sends them.

- Enqueued with the step. Every TimelineEntry added through an intake session (any use case,
  any handler) gets its deliveries added in the same flush, so in the same transaction: a
  crash after the step's commit loses no delivery, and a rolled-back step sends none
  (`WebhookSession`, wired by bootstrap). The body holds ids and codes only, never the
  person's data (`step_payload`).
- Signed per Standard Webhooks 1.0 (`standardwebhooks`): `webhook-id` is the delivery's id,
  the same on every attempt; after a rotation the old secret signs too, until the overlap
  ends. Secrets are sealed at rest with intake's FieldCipher (intake must sign with them, so
  a hash would not do) and shown once.
- Sent by `WebhookSender`, a worker that claims due rows under a lease (several replicas never
  send one row at once), records each attempt and retries with exponential backoff and
  jitter for WEBHOOK_GIVE_UP_HOURS. Then the delivery has failed, the endpoint is marked
  failing, and the agency's staff and the operators are mailed (one mail when it starts
  failing; a later success marks it active again).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import random
import secrets as pysecrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, Field
from sqlalchemy import event, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session
from standardwebhooks import Webhook

from intake.adapters.crypto import FieldCipher, KeyringError
from intake.adapters.orm import (
    AgencyStaff,
    Outbox,
    Referral,
    TimelineEntry,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from intake.adapters.webhook_http import UnsafeUrl, check_url, guarded_client
from shared.events import new_id, utcnow
from shared.periodic import PeriodicWorker

log = logging.getLogger("rujukan.intake.webhooks")

ACTIVE, FAILING, DELETED = "active", "failing", "deleted"
PENDING, DELIVERED, FAILED, CANCELLED = "pending", "delivered", "failed", "cancelled"
# Steps the agency does not need told: its own submission (it has the 202 answer).
NOT_SENT = frozenset({"submitted"})
# What of the event behind a step goes into the webhook's body: ids and codes only.
CODES = ("decision_id", "service_id", "reason_code", "outcome_code", "level")
STEP_EVENTS = "webhook_step_events"


class Sender(Protocol):
    async def send(self, *, to: str, subject: str, body: str) -> None: ...


class NoSuchEndpoint(Exception):
    pass


class NoSuchDelivery(Exception):
    pass


class TooManyEndpoints(Exception):
    pass


# --- read models ------------------------------------------------------------------------


class EndpointView(BaseModel):
    id: str
    url: str
    status: str = Field(description="active, or failing: a delivery gave up after every retry (until one succeeds)")
    created_at: datetime
    rotated_at: datetime | None
    failing_since: datetime | None
    previous_secret_until: datetime | None = Field(
        description="until when the secret before the last rotation still signs (next to the new one)")


class EndpointWithSecret(EndpointView):
    secret: str = Field(description="the signing secret (whsec_...): shown this once, kept sealed")


class EndpointList(BaseModel):
    items: list[EndpointView]


class AttemptView(BaseModel):
    at: datetime
    status_code: int | None = Field(description="the receiver's HTTP status; null when no answer came")
    error: str = Field(description="why the attempt failed (empty for a 2xx)")
    duration_ms: int


class DeliveryView(BaseModel):
    id: str = Field(description="the webhook-id header, the same on every attempt")
    event_type: str
    referral_id: str | None
    status: str = Field(description="pending, delivered, failed (gave up) or cancelled (endpoint removed)")
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    payload: dict[str, Any]
    attempts: list[AttemptView]


class DeliveryList(BaseModel):
    items: list[DeliveryView] = Field(description="newest first")


# --- signing ------------------------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + base64.b64encode(pysecrets.token_bytes(32)).decode()


def signature(secrets: Sequence[str], msg_id: str, at: datetime, body: str) -> str:
    """The `webhook-signature` header: one `v1,<base64>` per secret, space-separated."""
    return " ".join(Webhook(s).sign(msg_id, at, body) for s in secrets)


def _aad(endpoint_id: str) -> str:
    return f"webhook:{endpoint_id}:secret"


# --- enqueuing with the step ---------------------------------------------------------------


def note_step_event(s: AsyncSession, event_id: str, data: Any) -> None:
    """Keep the event behind a step for its webhook's codes (read when the session flushes)."""
    s.info.setdefault(STEP_EVENTS, {})[event_id] = data


def _codes_of(session: Session, entry: TimelineEntry) -> dict[str, Any]:
    data: Any = session.info.get(STEP_EVENTS, {}).pop(entry.event_id, None)
    if data is not None:
        values = {k: getattr(data, k, None) for k in CODES}
    else:  # a step of intake's own (cancel, rematch): its event is in the outbox beside it
        values = {}
        for obj in session.new:
            if isinstance(obj, Outbox) and obj.event_id == entry.event_id:
                values = {k: json.loads(obj.envelope).get("data", {}).get(k) for k in CODES}
                break
    return {k: v for k, v in values.items() if isinstance(v, str | int) and v != ""}


def step_payload(entry: TimelineEntry, referral: Referral, codes: dict[str, Any]) -> dict[str, Any]:
    at = entry.at or utcnow()
    return {
        "type": f"referral.{entry.kind}",
        "timestamp": at.isoformat(),
        "data": {
            "step_id": entry.event_id, "referral_id": referral.id, "external_ref": referral.external_ref,
            "kind": entry.kind, "moved_to": entry.status, "status": referral.status, "at": at.isoformat(),
            **codes,
        },
    }


class WebhookSession(Session):
    """Intake's session: adds the webhook deliveries of every new timeline step to its flush."""


@event.listens_for(WebhookSession, "before_flush")
def _enqueue_steps(session: Session, flush_context: Any, instances: Any) -> None:
    entries = [o for o in session.new if isinstance(o, TimelineEntry) and o.kind not in NOT_SENT]
    endpoints: dict[str, list[str]] = {}
    for entry in entries:
        referral = session.get(Referral, entry.referral_id)
        if referral is None:
            continue
        # Every step changes what the agency reads, so polling (updated_since) answers it too.
        referral.updated_at = max(referral.updated_at, utcnow()) if referral.updated_at else utcnow()
        if referral.agency_id not in endpoints:
            endpoints[referral.agency_id] = list(session.scalars(
                select(WebhookEndpoint.id).where(WebhookEndpoint.agency_id == referral.agency_id,
                                                 WebhookEndpoint.status.in_((ACTIVE, FAILING)))
                .order_by(WebhookEndpoint.created_at)).all())
        targets = endpoints[referral.agency_id]
        if not targets:
            continue
        body = json.dumps(step_payload(entry, referral, _codes_of(session, entry)), separators=(",", ":"))
        now = utcnow()
        for endpoint_id in targets:
            session.add(WebhookDelivery(
                id=f"msg_{new_id()}", endpoint_id=endpoint_id, agency_id=referral.agency_id,
                referral_id=referral.id, event_type=f"referral.{entry.kind}", payload=body, status=PENDING,
                attempts=0, created_at=now, window_started_at=now, next_attempt_at=now))


def use_webhook_sessions(sessions: async_sessionmaker[AsyncSession]) -> None:
    """Make every session of this maker enqueue webhooks with timeline steps."""
    sessions.configure(sync_session_class=WebhookSession)


# --- endpoints (the agency API) -------------------------------------------------------------


def _view(row: WebhookEndpoint) -> EndpointView:
    return EndpointView(id=row.id, url=row.url, status=row.status, created_at=row.created_at,
                        rotated_at=row.rotated_at, failing_since=row.failing_since,
                        previous_secret_until=row.previous_secret_until)


def _delivery_view(row: WebhookDelivery, attempts: list[WebhookAttempt]) -> DeliveryView:
    return DeliveryView(
        id=row.id, event_type=row.event_type, referral_id=row.referral_id, status=row.status,
        created_at=row.created_at, next_attempt_at=row.next_attempt_at if row.status == PENDING else None,
        delivered_at=row.delivered_at, payload=json.loads(row.payload),
        attempts=[AttemptView(at=a.at, status_code=a.status_code, error=a.error, duration_ms=a.duration_ms)
                  for a in attempts])


@dataclass
class Webhooks:
    sessions: async_sessionmaker[AsyncSession]
    cipher: FieldCipher
    allow_private: bool = False  # development: loopback and private receivers
    overlap_hours: float = 24.0
    max_per_agency: int = 10
    kick: Any = None  # called after a redelivery is asked (the sender's kick)

    async def register(self, agency_id: str, url: str) -> EndpointWithSecret:
        await check_url(url, self.allow_private)  # UnsafeUrl
        secret = new_secret()
        eid = new_id()
        async with self.sessions() as s, s.begin():
            count = len((await s.scalars(select(WebhookEndpoint.id).where(
                WebhookEndpoint.agency_id == agency_id, WebhookEndpoint.status != DELETED))).all())
            if count >= self.max_per_agency:
                raise TooManyEndpoints(self.max_per_agency)
            row = WebhookEndpoint(id=eid, agency_id=agency_id, url=url, status=ACTIVE, created_at=utcnow(),
                                  secret_enc=self.cipher.seal(secret, _aad(eid)))
            s.add(row)
        return EndpointWithSecret(**_view(row).model_dump(), secret=secret)

    async def _own(self, s: AsyncSession, agency_id: str, endpoint_id: str, lock: bool = False) -> WebhookEndpoint:
        row = await s.get(WebhookEndpoint, endpoint_id, with_for_update=lock)
        if row is None or row.agency_id != agency_id or row.status == DELETED:
            raise NoSuchEndpoint(endpoint_id)
        return row

    async def all(self, agency_id: str) -> EndpointList:
        async with self.sessions() as s:
            rows = (await s.scalars(select(WebhookEndpoint).where(
                WebhookEndpoint.agency_id == agency_id, WebhookEndpoint.status != DELETED)
                .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id))).all()
        return EndpointList(items=[_view(r) for r in rows])

    async def delete(self, agency_id: str, endpoint_id: str) -> None:
        """The endpoint stops getting steps; what was still pending for it is cancelled."""
        now = utcnow()
        async with self.sessions() as s, s.begin():
            row = await self._own(s, agency_id, endpoint_id, lock=True)
            row.status, row.deleted_at = DELETED, now
            row.secret_enc, row.previous_secret_enc = "", None
            await s.execute(update(WebhookDelivery).where(
                WebhookDelivery.endpoint_id == endpoint_id, WebhookDelivery.status == PENDING)
                .values(status=CANCELLED, next_attempt_at=None))

    async def rotate(self, agency_id: str, endpoint_id: str) -> EndpointWithSecret:
        """A new secret signs from now on; the one it replaces signs too for the overlap."""
        secret = new_secret()
        now = utcnow()
        async with self.sessions() as s, s.begin():
            row = await self._own(s, agency_id, endpoint_id, lock=True)
            row.previous_secret_enc = row.secret_enc
            row.previous_secret_until = now + timedelta(hours=self.overlap_hours)
            row.secret_enc = self.cipher.seal(secret, _aad(endpoint_id))
            row.rotated_at = now
        return EndpointWithSecret(**_view(row).model_dump(), secret=secret)

    async def deliveries(self, agency_id: str, endpoint_id: str, limit: int = 50) -> DeliveryList:
        async with self.sessions() as s:
            await self._own(s, agency_id, endpoint_id)
            rows = list((await s.scalars(select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)
                                         .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
                                         .limit(limit))).all())
            attempts: dict[str, list[WebhookAttempt]] = {r.id: [] for r in rows}
            if rows:
                for a in (await s.scalars(select(WebhookAttempt).where(
                        WebhookAttempt.delivery_id.in_(list(attempts))).order_by(WebhookAttempt.id))).all():
                    attempts[a.delivery_id].append(a)
        return DeliveryList(items=[_delivery_view(r, attempts[r.id]) for r in rows])

    async def redeliver(self, agency_id: str, endpoint_id: str, delivery_id: str) -> DeliveryView:
        """Send the delivery again now (same webhook-id), with a new retry window."""
        now = utcnow()
        async with self.sessions() as s, s.begin():
            await self._own(s, agency_id, endpoint_id)
            row = await s.get(WebhookDelivery, delivery_id, with_for_update=True)
            if row is None or row.endpoint_id != endpoint_id:
                raise NoSuchDelivery(delivery_id)
            row.status, row.next_attempt_at, row.window_started_at, row.lease_until = PENDING, now, now, None
            attempts = list((await s.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id)
                                             .order_by(WebhookAttempt.id))).all())
        if self.kick is not None:
            self.kick()
        return _delivery_view(row, attempts)


# --- encryption keys ------------------------------------------------------------------------


async def reseal_secrets(sessions: async_sessionmaker[AsyncSession], cipher: FieldCipher) -> int:
    """Seal every endpoint's secrets under the current key (for `rujukan keys rotate`, so an
    old key can go); how many endpoints were re-sealed."""
    current = f"v1:{cipher.current}:"
    done = 0
    async with sessions() as s, s.begin():
        rows = (await s.scalars(select(WebhookEndpoint).where(WebhookEndpoint.status != DELETED)
                                .with_for_update())).all()
        for row in rows:
            changed = False
            if row.secret_enc and not row.secret_enc.startswith(current):
                row.secret_enc = cipher.seal(cipher.open(row.secret_enc, _aad(row.id)), _aad(row.id))
                changed = True
            if row.previous_secret_enc and not row.previous_secret_enc.startswith(current):
                row.previous_secret_enc = cipher.seal(cipher.open(row.previous_secret_enc, _aad(row.id)),
                                                      _aad(row.id))
                changed = True
            done += changed
    return done


async def secrets_by_key(sessions: async_sessionmaker[AsyncSession]) -> dict[str, int]:
    """How many endpoint secrets each key id seals (for `rujukan keys status`)."""
    counts: dict[str, int] = {}
    async with sessions() as s:
        for sealed, previous in (await s.execute(select(WebhookEndpoint.secret_enc, WebhookEndpoint.previous_secret_enc)
                                                 .where(WebhookEndpoint.status != DELETED))).all():
            for value in (sealed, previous):
                if value:
                    kid = value.split(":", 2)[1]
                    counts[kid] = counts.get(kid, 0) + 1
    return counts


# --- the sender ---------------------------------------------------------------------------


@dataclass
class SenderSettings:
    timeout_s: float = 10.0
    concurrency: int = 4
    batch: int = 20
    lease_s: float = 60.0
    backoff_base_s: float = 10.0
    backoff_max_s: float = 3600.0
    give_up_hours: float = 24.0
    operator_emails: list[str] = field(default_factory=list)
    allow_private: bool = False


def backoff(attempts: int, base_s: float, max_s: float) -> float:
    """Exponential (base * 2^(n-1), capped) with jitter: between half and all of it."""
    delay = min(max_s, base_s * 2 ** min(max(attempts - 1, 0), 30))
    return delay / 2 + random.uniform(0, delay / 2)


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookSender(PeriodicWorker):
    """Sends due deliveries: claims them under a lease, calls the URL (checked again when
    called), records the attempt, and schedules the next one or gives up."""

    name = "webhook sender"

    def __init__(self, sessions: async_sessionmaker[AsyncSession], cipher: FieldCipher, mail: Sender,
                 settings: SenderSettings, interval_s: float = 1.0) -> None:
        super().__init__(interval_s)
        self.sessions, self.cipher, self.mail, self.settings = sessions, cipher, mail, settings
        self.owner = pysecrets.token_hex(4)
        self._kicked = asyncio.Event()
        self._client: httpx.AsyncClient | None = None

    def kick(self) -> None:
        self._kicked.set()

    def stop(self) -> None:
        super().stop()
        self._kicked.set()

    async def run(self) -> None:
        self._client = guarded_client(self.settings.allow_private, self.settings.timeout_s,
                                      self.settings.concurrency)
        try:
            while not self.stopping:
                try:
                    while await self.round_count() and not self.stopping:
                        pass  # a full batch: more may be due
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    log.warning("%s: round failed: %s: %s", self.name, type(e).__name__, e)
                self._kicked.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kicked.wait(), timeout=self.interval_s)
        finally:
            await self._client.aclose()

    async def round(self) -> None:
        await self.round_count()

    async def round_count(self) -> bool:
        """Send one batch of due deliveries; True when the batch was full."""
        claimed = await self._claim()
        if not claimed:
            return False
        gate = asyncio.Semaphore(max(self.settings.concurrency, 1))

        async def one(delivery_id: str) -> None:
            async with gate:
                try:
                    await self.send(delivery_id)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # the lease runs out and another round tries again
                    log.warning("%s: delivery %s: %s: %s", self.name, delivery_id, type(e).__name__, e)

        await asyncio.gather(*(one(d) for d in claimed))
        return len(claimed) >= self.settings.batch

    async def _claim(self) -> list[str]:
        """Due rows, each taken under a lease by a conditional UPDATE (on PostgreSQL the
        SELECT also skips rows another replica is claiming)."""
        now = utcnow()
        lease = now + timedelta(seconds=self.settings.lease_s)
        free = or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now)
        async with self.sessions() as s, s.begin():
            ids = list((await s.scalars(
                select(WebhookDelivery.id).where(WebhookDelivery.status == PENDING,
                                                 WebhookDelivery.next_attempt_at <= now, free)
                .order_by(WebhookDelivery.next_attempt_at).limit(self.settings.batch)
                .with_for_update(skip_locked=True))).all())
            claimed = []
            for did in ids:
                result = await s.execute(update(WebhookDelivery).where(
                    WebhookDelivery.id == did, WebhookDelivery.status == PENDING, free).values(lease_until=lease))
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    claimed.append(did)
        return claimed

    def _secrets(self, endpoint: WebhookEndpoint, now: datetime) -> list[str]:
        found = [self.cipher.open(endpoint.secret_enc, _aad(endpoint.id))]
        if endpoint.previous_secret_enc and endpoint.previous_secret_until and endpoint.previous_secret_until > now:
            found.append(self.cipher.open(endpoint.previous_secret_enc, _aad(endpoint.id)))
        return found

    async def send(self, delivery_id: str) -> None:
        async with self.sessions() as s:
            delivery = await s.get(WebhookDelivery, delivery_id)
            endpoint = None if delivery is None else await s.get(WebhookEndpoint, delivery.endpoint_id)
        if delivery is None or endpoint is None:
            return
        if endpoint.status == DELETED:
            async with self.sessions() as s, s.begin():
                await s.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
                                .values(status=CANCELLED, next_attempt_at=None, lease_until=None))
            return
        now = utcnow()
        outcome = await self._call(endpoint, delivery, now)
        await self._record(delivery, endpoint, outcome, now)

    async def _call(self, endpoint: WebhookEndpoint, delivery: WebhookDelivery, now: datetime) -> Outcome:
        assert self._client is not None
        started = time.monotonic()
        try:
            headers = {
                "content-type": "application/json",
                "webhook-id": delivery.id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signature(self._secrets(endpoint, now), delivery.id, now, delivery.payload),
            }
            await check_url(endpoint.url, self.settings.allow_private)
            r = await self._client.post(endpoint.url, content=delivery.payload.encode(), headers=headers)
            await r.aclose()
            code: int | None = r.status_code
            error = "" if 200 <= r.status_code < 300 else f"HTTP {r.status_code}"
        except UnsafeUrl as e:
            code, error = None, f"refused: {e}"
        except KeyringError:  # an operator removed the key before `rujukan keys rotate` re-sealed it
            code, error = None, "not signed: the endpoint's secret is sealed with a key no longer configured"
        except httpx.TimeoutException:
            code, error = None, "timed out"
        except httpx.HTTPError as e:
            code, error = None, f"{type(e).__name__}: {e}"[:200]
        finally:
            self._client.cookies.clear()
        return Outcome(code, error[:200], int((time.monotonic() - started) * 1000))

    async def _record(self, delivery: WebhookDelivery, endpoint: WebhookEndpoint, outcome: Outcome,
                      now: datetime) -> None:
        gave_up = False
        started_failing = False
        async with self.sessions() as s, s.begin():
            row = await s.get(WebhookDelivery, delivery.id, with_for_update=True)
            if row is None:
                return
            s.add(WebhookAttempt(delivery_id=row.id, at=now, status_code=outcome.status_code, error=outcome.error,
                                 duration_ms=outcome.duration_ms))
            row.attempts += 1
            row.lease_until = None
            ep = await s.get(WebhookEndpoint, endpoint.id, with_for_update=True)
            if outcome.ok:
                row.status, row.delivered_at, row.next_attempt_at = DELIVERED, utcnow(), None
                if ep is not None and ep.status == FAILING:
                    ep.status, ep.failing_since = ACTIVE, None
                    log.info("webhook endpoint %s of agency %s delivers again", ep.id, ep.agency_id)
            elif row.status != PENDING:
                pass  # cancelled meanwhile (endpoint removed): keep the attempt, send no more
            elif utcnow() - row.window_started_at >= timedelta(hours=self.settings.give_up_hours):
                row.status, row.next_attempt_at = FAILED, None
                gave_up = True
                if ep is not None and ep.status == ACTIVE:
                    ep.status, ep.failing_since = FAILING, utcnow()
                    started_failing = True
            else:
                row.next_attempt_at = utcnow() + timedelta(seconds=backoff(
                    row.attempts, self.settings.backoff_base_s, self.settings.backoff_max_s))
            staff = [] if not started_failing else list((await s.scalars(
                select(AgencyStaff.email).where(AgencyStaff.agency_id == endpoint.agency_id))).all())
        if gave_up:
            host = urlsplit(endpoint.url).hostname or "?"
            log.warning("webhook delivery %s to endpoint %s of agency %s (host %s) gave up after %d attempts: %s",
                        delivery.id, endpoint.id, endpoint.agency_id, host, row.attempts, outcome.error)
        if started_failing:
            await self._tell(endpoint, staff, outcome)

    async def _tell(self, endpoint: WebhookEndpoint, staff: list[str], outcome: Outcome) -> None:
        """Mail the agency's staff and the operators: the endpoint is failing (ids and the host only)."""
        host = urlsplit(endpoint.url).hostname or "?"
        hours = self.settings.give_up_hours
        subject = "Webhook Rujukan gagal / Rujukan webhook failing"
        body = (
            f"Webhook {endpoint.id} (host {host}) dari lembaga {endpoint.agency_id} tidak menerima pemberitahuan "
            f"selama {hours:g} jam percobaan ulang; statusnya kini 'failing'. Periksa penerima Anda, lalu minta "
            f"pengiriman ulang lewat POST /v1/webhooks/{endpoint.id}/deliveries/{{id}}/redeliver. "
            f"Perubahan rujukan juga dapat dibaca lewat GET /v1/referrals?updated_since=...\n\n"
            f"Webhook {endpoint.id} (host {host}) of agency {endpoint.agency_id} did not take a delivery for "
            f"{hours:g} hours of retries; it is now marked 'failing'. Check your receiver, then ask for a "
            f"redelivery with POST /v1/webhooks/{endpoint.id}/deliveries/{{id}}/redeliver. Referral changes can "
            f"also be polled with GET /v1/referrals?updated_since=...\n\nLast error: {outcome.error}\n"
        )
        log.warning("webhook endpoint %s of agency %s (host %s) is failing: %s", endpoint.id, endpoint.agency_id,
                    host, outcome.error)
        for to in [*staff, *self.settings.operator_emails]:
            try:
                await self.mail.send(to=to, subject=subject, body=body)
            except Exception as e:
                log.warning("webhook failing notice: mail not sent: %s", type(e).__name__)


def then_kick(handler: Callable[[Any], Awaitable[None]], kick: Callable[[], None]) -> Callable[[Any], Awaitable[None]]:
    """The consumer's batch handler, then the sender woken: the batch's steps go out at once."""

    async def handle(messages: Any) -> None:
        await handler(messages)
        kick()

    return handle
