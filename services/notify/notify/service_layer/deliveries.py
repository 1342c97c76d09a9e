"""Deliveries: turn decisions into mails to their receivers, and send them.

A delivery row is written in the same transaction as the event that caused it (one per
decision, recipient and kind: the proposal, or a notice that closes it), and the mail is
sent after commit by the delivery worker, urgent first, a round at a time (see
`Notify.deliver_due`). Sends are recorded in chunks: the rows marked sent together with
their `notification.sent` events in the outbox. The recipients' inbox
(service_layer.inbox) is kept up to date from the same events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import aliased

from notify.adapters.channels import receiver_secret
from notify.adapters.mailer import Mailer
from notify.adapters.orm import ChannelDelivery, Delivery, Outbox, ProcessedEvent, Proposal, SigninCode
from notify.domain.messages import (
    access_section,
    inbox_link,
    operator_alert,
    proposal,
    proposal_html,
    reminder,
    token_section,
    webhook_secret,
    webhook_secret_section,
)
from notify.domain.states import DeliveryState, ProposalStatus
from notify.service_layer.channels import ChannelRounds, queue_channels, queue_follow_up
from notify.service_layer.credentials import (
    WHOLE_INBOX,
    discard_system_tokens,
    mint_signin_code,
    mint_system_token,
    register,
)
from notify.service_layer.failures import FailureTally, no_tally, tally_given_up
from notify.service_layer.inbox import CLOSED_LOOP, record_proposal, urgent_of
from shared.db import first_time
from shared.events import (
    Envelope,
    EventData,
    NotificationFailed,
    NotificationSent,
    ReceiverRegistered,
    ReferralEscalated,
    ReferralMatched,
    new_id,
    utcnow,
)
from shared.outbox import OutboxRelay, add_events
from shared.streams.consumer import Message
from shared.tracing import continued

log = logging.getLogger("rujukan.notify")
SOURCE = "rujukan/notify"
# Mails that belong to no referral (no notification event): an operator's system token, and
# the link to a receiver's whole inbox asked for from its pages.
NO_REFERRAL = ("system_token", "inbox_link", "webhook_secret")
# Mails of a referral that are not the receiver's (no notification event either): the alert
# to the operators on duty when a crisis proposal escalates.
NO_EVENT = (*NO_REFERRAL, "operator_alert")
# The operators on duty, as a delivery's receiver (its address is the setting's, when sent).
OPERATORS = "operators"


class NotificationObserver(Protocol):
    """Told when a referral's receivers are first mailed its proposal, once recorded."""

    def __call__(self, urgency: str, submitted_at: datetime | None, sent_at: datetime) -> None: ...


@dataclass
class Notify:
    sessions: async_sessionmaker[AsyncSession]
    relay: OutboxRelay
    mailer: Mailer
    max_attempts: int = 8
    poll_interval_s: float = 2.0
    claim_lease_s: float = 60.0
    # Sends recorded per transaction; also the most mails a crash can send twice.
    record_every: int = 1
    # Where receivers sign in (the proposal mail's link), and how long that link works.
    public_url: str = "http://127.0.0.1:8003"
    signin_code_ttl: timedelta = timedelta(hours=24)
    # The operators on duty (OPERATOR_ALERT_EMAILS): where an escalation's alert is mailed.
    operator_emails: tuple[str, ...] = ()
    # Derives each receiver's webhook secret (adapters.channels.receiver_secret).
    webhook_key: str = ""
    # A routine proposal's one reminder goes out this long before its hold runs out (0: none).
    reminder_before: timedelta = timedelta(hours=12)
    # The other channels' rounds, woken when a batch queued messages for them.
    channel_rounds: ChannelRounds | None = None
    # Told when a referral's first proposal mail was sent (the time-to-notification metric).
    observe_notification: NotificationObserver = field(default=lambda *_: None)
    # Told how many deliveries were given up on, once recorded (`rujukan status`'s tally).
    tally_failed: FailureTally = field(default=no_tally)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    # Set when an urgent delivery is queued: a round sending routine mail stops for it.
    _urgent_queued: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _reminders_at: float = float("-inf")

    async def handle(self, messages: list[Message]) -> None:
        """Record the deliveries a batch of decisions asks for; each event takes effect once."""
        created = 0
        urgent = False
        async with self.sessions() as s, s.begin():
            for m in await first_time(s, ProcessedEvent, messages):
                handler = HANDLERS.get(type(m.data))
                if handler is None:
                    continue  # an event notify has no use for
                n = await handler(s, m.data)
                if n:
                    created += n
                    urgent = urgent or urgent_of(str(m.envelope.data.get("urgency")),
                                                 list(m.envelope.data.get("risk_flags", [])))
        if created:
            if urgent:
                self._urgent_queued.set()
            self._wake.set()
            if self.channel_rounds is not None:
                self.channel_rounds.wake()

    async def deliveries_of(self, referral_id: str) -> list[Delivery]:
        """A referral's deliveries, oldest first (for operators: how mail went)."""
        async with self.sessions() as s:
            return list((await s.scalars(select(Delivery).where(Delivery.referral_id == referral_id)
                                         .order_by(Delivery.created_at))).all())

    async def channel_deliveries_of(self, referral_id: str) -> list[ChannelDelivery]:
        """A referral's messages on other channels, oldest first (for operators)."""
        async with self.sessions() as s:
            return list((await s.scalars(select(ChannelDelivery).where(ChannelDelivery.referral_id == referral_id)
                                         .order_by(ChannelDelivery.created_at))).all())

    # --- the delivery worker ----------------------------------------------------------

    def wake(self) -> None:
        """Deliveries were queued outside a batch of events (a proposal mailed again)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                # Reminders are looked for once per poll interval, not every round.
                if time.monotonic() - self._reminders_at >= self.poll_interval_s:
                    self._reminders_at = time.monotonic()
                    await self.queue_reminders()
                sent = await self.deliver_due()
            except Exception as e:  # database away: retry on the next round
                log.warning("delivery round failed: %s: %s", type(e).__name__, e)
                sent = 0
            if sent:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval_s)

    async def queue_reminders(self, limit: int = 200) -> int:
        """Queue the one reminder of each routine proposal still unanswered whose hold runs
        out within `reminder_before` (and began before that window: a hold shorter than it
        gets none). At most once per proposal and receiver: the delivery's unique
        (decision, receiver, kind) makes a second replica's insert fail, and this round's
        transaction is simply given up (the other replica's reminder stands)."""
        if self.reminder_before <= timedelta(0):
            return 0
        now = utcnow()
        sent = aliased(Delivery)
        reminded = (select(sent.id).where(sent.decision_id == Proposal.decision_id,
                                          sent.receiver_id == Proposal.receiver_id, sent.kind == "reminder")
                    .correlate(Proposal).exists())
        try:
            async with self.sessions() as s, s.begin():
                due = (await s.execute(
                    select(Proposal, Delivery.email)
                    .join(Delivery, (Delivery.decision_id == Proposal.decision_id)
                          & (Delivery.receiver_id == Proposal.receiver_id) & (Delivery.kind == "proposal"))
                    .where(Proposal.status == ProposalStatus.proposed, Proposal.urgency == "routine",
                           Proposal.hold_expires_at.is_not(None), Proposal.hold_expires_at > now,
                           Proposal.hold_expires_at <= now + self.reminder_before, ~reminded)
                    .limit(limit))).all()
                n = 0
                for p, email in due:
                    hold = p.hold_expires_at
                    if hold is None or p.risk_flags or hold - self.reminder_before < p.created_at:
                        continue
                    subject, body = reminder(referral_id=p.referral_id, organization_name=p.organization_name,
                                             service_name=p.service_name, pmks_category=p.pmks_category,
                                             region_code=p.region_code, hold_expires_at=hold)
                    s.add(Delivery(id=new_id(), referral_id=p.referral_id, decision_id=p.decision_id,
                                   receiver_id=p.receiver_id, kind="reminder", email=email, subject=subject,
                                   body=body, urgent=False))
                    n += 1
                    # And on the contact's other channels, as the proposal went.
                    await queue_follow_up(s, p.decision_id, p.receiver_id, "reminder", "referral.reminder",
                                          ("webhook", "sms", "whatsapp"))
        except IntegrityError:
            log.info("reminders queued by another replica meanwhile")
            return 0
        if n:
            self._wake.set()
            if self.channel_rounds is not None:
                self.channel_rounds.wake()
        return n

    async def deliver_due(self, limit: int = 50) -> int:
        """Send what is due, urgent first. Returns how many were attempted.

        A round costs one transaction to claim its deliveries (one conditional UPDATE that
        moves their next attempt past a lease, with their sign-in codes minted alongside),
        the mails over the one SMTP session, and one transaction per `record_every` mails
        to record them (sent rows with their `notification.sent` events, or failures with
        backoff). A crash after a mail is sent and before its chunk is recorded sends those
        mails again when the lease runs out, each with the same Message-ID, so the window
        is at most `record_every` duplicate mails (1 = one mail, as when every mail had
        its own transaction).

        A round of routine mail gives way as soon as an urgent delivery is queued: what it
        sent is recorded, what it claimed but did not send is released (due at once, its
        unmailed sign-in codes deleted and system tokens discarded), and the caller's next
        round starts with the urgent one."""
        self._urgent_queued.clear()
        started = time.monotonic()
        round_ = await self._claim_round(limit)
        done: list[tuple[_Claimed, str | None]] = []
        try:
            for i, d in enumerate(round_):
                # The lease was taken for the whole round: past half of it (a slow or hanging
                # SMTP server), the rest is given back rather than sent under a lease that
                # may run out, when another replica could take it too.
                if (self._stopping.is_set() or (self._urgent_queued.is_set() and not d.urgent)
                        or time.monotonic() - started > self.claim_lease_s / 2):
                    await self._release(round_[i:])
                    return max(i, 1)
                try:
                    with continued(d.traceparent):  # a hop of the trace that queued it, not the round's
                        await self.mailer.send(message_id=d.id, to=d.email, subject=d.subject, body=d.body,
                                               urgent=d.urgent, html=d.html)
                    error = None
                except Exception as e:
                    error = f"{type(e).__name__}: {e}"[:500]
                done.append((d, error))
                if len(done) >= self.record_every:
                    await self._record(done)
                    done = []
        finally:
            if done:
                await self._record(done)
        return len(round_)

    async def _claim_round(self, limit: int) -> list[_Claimed]:
        """Take up to `limit` due deliveries for one send each, urgent first: their next
        attempt is moved past the send's timeout in one conditional UPDATE, so a second
        replica (or round) does not send them too (on PostgreSQL rows another replica is
        claiming are skipped, not waited for; a row claimed meanwhile fails the condition);
        if this process dies mid-round, they are due again when the lease runs out. Each
        proposal mail's sign-in code, and each system token an operator issued, is minted
        in the same transaction, so that only the mail ever holds it (the database keeps
        its hash)."""
        now = utcnow()
        due = (select(Delivery.id).where(Delivery.state == DeliveryState.pending, Delivery.next_attempt_at <= now)
               .order_by(Delivery.urgent.desc(), Delivery.created_at).limit(limit)
               .with_for_update(skip_locked=True))
        expires_at = now + self.signin_code_ttl
        base = self.public_url.rstrip("/")
        async with self.sessions() as s, s.begin():
            rows = (await s.execute(
                update(Delivery).where(Delivery.id.in_(due.scalar_subquery()), Delivery.state == DeliveryState.pending,
                                       Delivery.next_attempt_at <= now)
                .values(next_attempt_at=now + timedelta(seconds=self.claim_lease_s))
                .returning(Delivery.id, Delivery.referral_id, Delivery.decision_id, Delivery.receiver_id,
                           Delivery.kind, Delivery.email, Delivery.subject, Delivery.body, Delivery.urgent,
                           Delivery.attempts, Delivery.created_at, Delivery.traceparent)
                .execution_options(synchronize_session=False))).all()
            claimed = []
            for r in sorted(rows, key=lambda r: (not r.urgent, r.created_at)):
                body, code_id, html, subject, email = r.body, None, None, r.subject, r.email
                if r.kind == "reminder":
                    p = await s.get(Proposal, (r.decision_id, r.receiver_id))
                    if p is None or p.status != ProposalStatus.proposed or (
                            p.hold_expires_at is not None and p.hold_expires_at <= now):
                        await self._drop(s, r.id, "answered, or its hold ran out, before the reminder went out")
                        continue
                    code_id, code = mint_signin_code(s, receiver_id=r.receiver_id, decision_id=r.decision_id,
                                                     delivery_id=r.id, expires_at=expires_at)
                    body += access_section(f"{base}/signin/{code}", expires_at, p.region_code)
                elif r.kind == "operator_alert":
                    if not self.operator_emails:
                        await self._drop(s, r.id, "no OPERATOR_ALERT_EMAILS is set")
                        continue
                    email = ", ".join(self.operator_emails)
                elif r.kind == "webhook_secret":
                    body += webhook_secret_section(receiver_secret(self.webhook_key, r.receiver_id))
                elif r.kind == "proposal":
                    code_id, code = mint_signin_code(s, receiver_id=r.receiver_id, decision_id=r.decision_id,
                                                     delivery_id=r.id, expires_at=expires_at)
                    # The page's sign-in (/signin/...): the mail's button opens the proposal page.
                    link = f"{base}/signin/{code}"
                    p = await s.get(Proposal, (r.decision_id, r.receiver_id))
                    body += access_section(link, expires_at, p.region_code if p else None)
                    if p is not None:
                        html = proposal_html(
                            greeting=p.organization_name, service_name=p.service_name,
                            pmks_category=p.pmks_category, region_code=p.region_code, urgency=p.urgency,
                            risk_flags=list(p.risk_flags), hold_expires_at=p.hold_expires_at,
                            reasons_id=list(p.reasons_id), reasons_en=list(p.reasons_en), signin_url=link,
                            link_expires_at=expires_at)
                elif r.kind == "inbox_link":
                    code_id, code = mint_signin_code(s, receiver_id=r.receiver_id, decision_id=WHOLE_INBOX,
                                                     delivery_id=r.id, expires_at=expires_at)
                    subject, body, html = inbox_link(signin_url=f"{base}/signin/{code}", expires_at=expires_at)
                elif r.kind == "system_token":
                    token = await mint_system_token(s, r.decision_id)  # a system token's id
                    if token is None:  # revoked or expired before it went out: mail nothing
                        await s.execute(update(Delivery).where(Delivery.id == r.id).values(
                            state=DeliveryState.failed,
                            last_error="the token was revoked or expired before it was mailed")
                            .execution_options(synchronize_session=False))
                        continue
                    body += token_section(token, f"{base}/v1/inbox")
                claimed.append(_Claimed(id=r.id, referral_id=r.referral_id, decision_id=r.decision_id,
                                        receiver_id=r.receiver_id, kind=r.kind, email=email,
                                        subject=subject, body=body, urgent=r.urgent, attempts=r.attempts,
                                        code_id=code_id, html=html, traceparent=r.traceparent))
        return claimed

    @staticmethod
    async def _drop(s: AsyncSession, delivery_id: str, why: str) -> None:
        await s.execute(update(Delivery).where(Delivery.id == delivery_id).values(
            state=DeliveryState.dropped, last_error=why).execution_options(synchronize_session=False))

    async def _release(self, unsent: list[_Claimed]) -> None:
        """Give back what a round claimed but did not send: due at once, and the sign-in
        codes and system tokens minted for those mails discarded (nobody holds them)."""
        if not unsent:
            return
        async with self.sessions() as s, s.begin():
            await s.execute(update(Delivery).where(Delivery.id.in_([d.id for d in unsent]),
                                                   Delivery.state == DeliveryState.pending)
                            .values(next_attempt_at=utcnow()).execution_options(synchronize_session=False))
            codes = [d.code_id for d in unsent if d.code_id]
            if codes:
                await s.execute(delete(SigninCode).where(SigninCode.id.in_(codes)))
            await discard_system_tokens(s, [d.decision_id for d in unsent if d.kind == "system_token"])

    async def _record(self, done: list[tuple[_Claimed, str | None]]) -> None:
        """Record a chunk of sends in one transaction: the sent rows with their
        `notification.sent` events, the failures with backoff (or given up on). A system
        token's mail belongs to no referral: it has no event, and when it failed its token
        is discarded (the next attempt mints another)."""
        now = utcnow()
        events: list[Envelope] = []
        told: list[tuple[str, datetime | None]] = []
        given_up = 0
        async with self.sessions() as s, s.begin():
            sent = {d.id: d for d, error in done if error is None}
            if sent:
                marked = (await s.scalars(
                    update(Delivery).where(Delivery.id.in_(list(sent)), Delivery.state == DeliveryState.pending)
                    .values(state=DeliveryState.sent, sent_at=now, attempts=Delivery.attempts + 1)
                    .returning(Delivery.id).execution_options(synchronize_session=False))).all()
                told = await _first_told(s, [sent[i] for i in marked if sent[i].kind == "proposal"])
                for delivery_id in marked:
                    d = sent[delivery_id]
                    if d.kind in NO_EVENT:
                        log.info("delivery %s sent (%s %s)", d.id, d.kind, d.decision_id)
                        continue
                    events.append(Envelope.wrap(NotificationSent(
                        referral_id=d.referral_id, delivery_id=d.id, decision_id=d.decision_id,
                        receiver_id=d.receiver_id, kind=d.kind),
                        source=SOURCE, subject=d.referral_id, traceparent=d.traceparent))
                    log.info("delivery %s sent (referral %s)", d.id, d.referral_id)
            await discard_system_tokens(s, [d.decision_id for d, error in done
                                            if error is not None and d.kind == "system_token"])
            for d, error in done:
                if error is None:
                    continue
                attempts = d.attempts + 1
                values: dict[str, object] = {"attempts": attempts, "last_error": error}
                if attempts >= self.max_attempts:
                    values["state"] = DeliveryState.failed
                else:
                    # Exponential backoff: 5 s, 10 s, 20 s, ... capped at 10 minutes.
                    values["next_attempt_at"] = now + timedelta(seconds=min(5 * 2 ** (attempts - 1), 600))
                res = await s.execute(update(Delivery)
                                      .where(Delivery.id == d.id, Delivery.state == DeliveryState.pending)
                                      .values(**values).execution_options(synchronize_session=False))
                if not res.rowcount:  # type: ignore[attr-defined]
                    continue
                given_up += attempts >= self.max_attempts
                if attempts >= self.max_attempts and d.kind in NO_EVENT:
                    log.error("delivery %s failed for good: %s", d.id, error)
                elif attempts >= self.max_attempts:
                    events.append(Envelope.wrap(NotificationFailed(
                        referral_id=d.referral_id, delivery_id=d.id, decision_id=d.decision_id, kind=d.kind,
                        receiver_id=d.receiver_id,
                        reason=f"gave up after {attempts} attempts: {error}"), source=SOURCE, subject=d.referral_id,
                        traceparent=d.traceparent))
                    log.error("delivery %s failed for good: %s", d.id, error)
                else:
                    log.warning("delivery %s attempt %d failed: %s", d.id, attempts, error)
            if events:
                add_events(s, Outbox, events)
        if events:
            self.relay.kick()
        await tally_given_up(self.tally_failed, given_up)
        for urgency, submitted_at in told:  # once committed: a chunk given up is not counted
            self.observe_notification(urgency, submitted_at, now)


async def _first_told(s: AsyncSession, proposals: list[_Claimed]) -> list[tuple[str, datetime | None]]:
    """The referrals whose receivers these proposal mails are the first to tell (no proposal
    mail of theirs sent before, whichever decision it was for), each once: its urgency and
    when it was submitted."""
    if not proposals:
        return []
    first = {d.referral_id: d for d in reversed(proposals)}
    before = set((await s.scalars(
        select(Delivery.referral_id).where(Delivery.referral_id.in_(list(first)), Delivery.kind == "proposal",
                                           Delivery.state == DeliveryState.sent,
                                           Delivery.id.not_in([d.id for d in proposals])).distinct())).all())
    told = []
    for referral_id, d in first.items():
        p = await s.get(Proposal, (d.decision_id, d.receiver_id))
        if referral_id not in before and p is not None:
            told.append((p.urgency, p.submitted_at))
    return told


async def register_receiver(s: AsyncSession, e: ReceiverRegistered) -> int:
    await register(s, e)
    return 0


async def queue_proposal(s: AsyncSession, e: ReferralMatched) -> int:
    """One proposal mail per recipient not yet sent this decision, and the inbox's item."""
    existing = set((await s.scalars(select(Delivery.receiver_id)
                                    .where(Delivery.decision_id == e.decision_id,
                                           Delivery.kind == "proposal"))).all())
    subject, body = proposal(e)
    urgent = urgent_of(e.urgency, e.risk_flags)
    n = 0
    for r in e.recipients:
        if r.receiver_id in existing:
            continue
        s.add(Delivery(id=new_id(), referral_id=e.referral_id, decision_id=e.decision_id,
                       receiver_id=r.receiver_id, kind="proposal", email=r.email, subject=subject,
                       body=body, urgent=urgent))
        n += 1
        if "webhook" in queue_channels(s, e, r, urgent):
            n += await _mail_webhook_secret(s, r.receiver_id, r.email, e.service_id)
    await record_proposal(s, e)
    return n


async def _mail_webhook_secret(s: AsyncSession, receiver_id: str, email: str, service_id: str) -> int:
    """Once per receiver, the first time its webhook is used: mail it the secret that signs
    its messages (derived, never stored; added to the mail when it is sent)."""
    if await s.scalar(select(Delivery.id).where(Delivery.decision_id == receiver_id[:32],
                                                Delivery.receiver_id == receiver_id,
                                                Delivery.kind == "webhook_secret")) is not None:
        return 0
    subject, body = webhook_secret(service_id=service_id)
    s.add(Delivery(id=new_id(), referral_id="", decision_id=receiver_id[:32], receiver_id=receiver_id,
                   kind="webhook_secret", email=email, subject=subject, body=body, urgent=False))
    return 1


async def alert_operators(s: AsyncSession, e: ReferralEscalated) -> int:
    """A crisis proposal escalated: the operators on duty get a mail (OPERATOR_ALERT_EMAILS)
    and a signed webhook (OPERATOR_ALERT_WEBHOOK_URL, when set), once per escalation: ids,
    codes, category and region only. (The new proposal is its own referral.matched.)"""
    key = f"{e.previous_decision_id[:28]}-{e.level % 1000}"  # one alert per level of one proposal
    if await s.scalar(select(Delivery.id).where(Delivery.decision_id == key, Delivery.receiver_id == OPERATORS,
                                                Delivery.kind == "operator_alert")) is not None:
        return 0
    earlier = await s.scalar(select(Proposal).where(Proposal.decision_id == e.previous_decision_id).limit(1))
    category, region = (earlier.pmks_category, earlier.region_code) if earlier else ("", "")
    subject, body = operator_alert(
        referral_id=e.referral_id, decision_id=e.decision_id, previous_decision_id=e.previous_decision_id,
        service_id=e.service_id, level=e.level, reason_code=e.reason_code, minutes_waited=e.minutes_waited,
        urgency=e.urgency, risk_flags=list(e.risk_flags), pmks_category=category, region_code=region)
    fields = {"referral_id": e.referral_id, "decision_id": e.decision_id,
              "previous_decision_id": e.previous_decision_id, "service_id": e.service_id, "level": e.level,
              "reason_code": e.reason_code, "minutes_waited": e.minutes_waited, "urgency": e.urgency,
              "risk_flags": list(e.risk_flags), "pmks_category": category, "region_code": region,
              "at": e.at.isoformat()}
    s.add(Delivery(id=new_id(), referral_id=e.referral_id, decision_id=key, receiver_id=OPERATORS,
                   kind="operator_alert", email="", subject=subject, body=body, urgent=True))
    s.add(ChannelDelivery(id=new_id(), referral_id=e.referral_id, decision_id=key, receiver_id=OPERATORS,
                          kind="operator_alert", channel="operator_webhook", address="", urgent=True,
                          payload={"type": "referral.escalated", "data": fields}))
    return 1


# Which handler answers each event notify reads, by its exact type; each returns how many
# deliveries it queued.
HANDLERS: dict[type[EventData], Callable[[AsyncSession, Any], Awaitable[int]]] = {
    ReceiverRegistered: register_receiver,
    ReferralMatched: queue_proposal,
    ReferralEscalated: alert_operators,
    **CLOSED_LOOP,
}


@dataclass(frozen=True, slots=True)
class _Claimed:
    """A delivery taken for this round, with its mail's body complete (sign-in link included)."""

    id: str
    referral_id: str
    decision_id: str
    receiver_id: str
    kind: str
    email: str
    subject: str
    body: str
    urgent: bool
    attempts: int
    code_id: str | None
    html: str | None = None  # the HTML alternative (a proposal's, an inbox link's)
    traceparent: str | None = None  # of what queued it: the mail and its outcome continue that trace
