"""Notify's use cases: turn decisions into deliveries, and deliver them.

A delivery row is written in the same transaction as the event that caused it (one per
decision, recipient and kind: the proposal, or a notice that closes it), and the mail is
sent after commit by the delivery worker, urgent first. After a send, the row is marked
sent together with the `notification.sent` event in the outbox. The recipients' inbox
(service_layer.inbox) is kept up to date from the same events.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from notify.adapters.mailer import Mailer
from notify.adapters.orm import Delivery, Outbox, ProcessedEvent
from notify.domain.messages import access_section, proposal
from notify.service_layer.inbox import apply_closed_loop, mint_token, record_proposal, urgent_of
from shared.db import first_time
from shared.events import Envelope, NotificationFailed, NotificationSent, ReferralMatched, new_id, utcnow
from shared.outbox import OutboxRelay, add_events
from shared.streams import Message

log = logging.getLogger("rujukan.notify")
SOURCE = "rujukan/notify"


@dataclass
class Notify:
    sessions: async_sessionmaker[AsyncSession]
    relay: OutboxRelay
    mailer: Mailer
    max_attempts: int = 8
    poll_interval_s: float = 2.0
    claim_lease_s: float = 60.0
    # Where recipients answer (shown in the proposal mail), and how long a mailed token lasts.
    public_url: str = "http://127.0.0.1:8003"
    token_ttl: timedelta = timedelta(days=30)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when an urgent delivery is queued: a round sending routine mail stops for it.
    _urgent_queued: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, messages: list[Message]) -> None:
        """Record the deliveries a batch of decisions asks for; each event takes effect once."""
        created = 0
        urgent = False
        async with self.sessions() as s, s.begin():
            for m in await first_time(s, ProcessedEvent, messages):
                if isinstance(m.data, ReferralMatched):
                    created += await self._deliveries_for(s, m.data)
                    await record_proposal(s, m.data)
                else:
                    n = await apply_closed_loop(s, m.data)
                    created += n
                    if not n:
                        continue
                urgent = urgent or urgent_of(str(m.envelope.data.get("urgency")),
                                             list(m.envelope.data.get("risk_flags", [])))
        if created:
            if urgent:
                self._urgent_queued.set()
            self._wake.set()

    async def _deliveries_for(self, s: AsyncSession, e: ReferralMatched) -> int:
        existing = set((await s.scalars(select(Delivery.recipient_contact_id)
                                        .where(Delivery.decision_id == e.decision_id,
                                               Delivery.kind == "proposal"))).all())
        subject, body = proposal(e)
        n = 0
        for r in e.recipients:
            if r.contact_id in existing:
                continue
            s.add(Delivery(id=new_id(), referral_id=e.referral_id, decision_id=e.decision_id,
                           recipient_contact_id=r.contact_id, kind="proposal", email=r.email, subject=subject,
                           body=body, urgent=urgent_of(e.urgency, e.risk_flags)))
            n += 1
        return n

    # --- the delivery worker ----------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                sent = await self.deliver_due()
            except Exception as e:  # database away: retry on the next round
                log.warning("delivery round failed: %s: %s", type(e).__name__, e)
                sent = 0
            if sent:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval_s)
            except TimeoutError:
                pass

    async def deliver_due(self, limit: int = 50) -> int:
        """Send what is due, urgent first. Returns how many were attempted. A round of
        routine mail gives way as soon as an urgent delivery is queued (the caller's next
        round starts with it), so a crisis never waits behind a batch of routine mail."""
        self._urgent_queued.clear()
        async with self.sessions() as s:
            due = list((await s.scalars(
                select(Delivery).where(Delivery.state == "pending", Delivery.next_attempt_at <= utcnow())
                .order_by(Delivery.urgent.desc(), Delivery.created_at).limit(limit))).all())
        for i, d in enumerate(due):
            if self._stopping.is_set():
                break
            if self._urgent_queued.is_set() and not d.urgent:
                return max(i, 1)
            if not await self._claim(d.id):
                continue  # another replica is sending it
            try:
                body = d.body
                if d.kind == "proposal":
                    body += await self._access(d)
                await self.mailer.send(message_id=d.id, to=d.email, subject=d.subject, body=body,
                                       urgent=d.urgent)
                error = None
            except Exception as e:
                error = f"{type(e).__name__}: {e}"[:500]
            await self._record(d.id, error)
        return len(due)

    async def _access(self, d: Delivery) -> str:
        """The recipient's way to answer: a fresh personal token, minted now so that only
        the mail ever holds it (the database keeps its hash)."""
        expires_at = utcnow() + self.token_ttl
        async with self.sessions() as s, s.begin():
            _, token = await mint_token(s, d.recipient_contact_id, "mail", expires_at)
        return access_section(f"{self.public_url.rstrip('/')}/v1/inbox/{d.decision_id}", token, expires_at)

    async def _claim(self, delivery_id: str) -> bool:
        """Take a delivery for one send: its next attempt is moved past the send's timeout
        in a conditional UPDATE, so a second replica (or round) does not send it too; if
        this process dies mid-send, the delivery is due again when the lease runs out."""
        now = utcnow()
        async with self.sessions() as s, s.begin():
            res = await s.execute(
                update(Delivery).where(Delivery.id == delivery_id, Delivery.state == "pending",
                                       Delivery.next_attempt_at <= now)
                .values(next_attempt_at=now + timedelta(seconds=self.claim_lease_s))
                .execution_options(synchronize_session=False))
        return bool(res.rowcount)  # type: ignore[attr-defined]

    async def _record(self, delivery_id: str, error: str | None) -> None:
        async with self.sessions() as s, s.begin():
            d = await s.get(Delivery, delivery_id)
            if d is None or d.state != "pending":
                return
            d.attempts += 1
            event: NotificationSent | None = None
            if error is None:
                d.state, d.sent_at = "sent", utcnow()
                event = NotificationSent(referral_id=d.referral_id, delivery_id=d.id, decision_id=d.decision_id,
                                         recipient_contact_id=d.recipient_contact_id, kind=d.kind)
                log.info("delivery %s sent (referral %s)", d.id, d.referral_id)
            else:
                d.last_error = error
                if d.attempts >= self.max_attempts:
                    d.state = "failed"
                    event = NotificationFailed(referral_id=d.referral_id, delivery_id=d.id,
                                               decision_id=d.decision_id, kind=d.kind,
                                               recipient_contact_id=d.recipient_contact_id,
                                               reason=f"gave up after {d.attempts} attempts: {error}")
                    log.error("delivery %s failed for good: %s", d.id, error)
                else:
                    # Exponential backoff: 5 s, 10 s, 20 s, ... capped at 10 minutes.
                    d.next_attempt_at = utcnow() + timedelta(seconds=min(5 * 2 ** (d.attempts - 1), 600))
                    log.warning("delivery %s attempt %d failed: %s", d.id, d.attempts, error)
            if event is not None:
                add_events(s, Outbox, [Envelope.wrap(event, source=SOURCE, subject=d.referral_id)])
        if event is not None:
            self.relay.kick()
