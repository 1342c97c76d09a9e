"""The other channels' rounds: a proposal (or reminder) to a receiver's webhook, SMS or
WhatsApp, and an escalation's alert to the operators' webhook.

A `channel_delivery` row is queued in the same transaction as the proposal's mail (which is
always sent too: email is the fallback) and sent after commit by this worker, urgent first,
like mail (`Notify.deliver_due`): one conditional UPDATE claims a round past a lease (safe
with several replicas), the single-use sign-in link is minted in that transaction, and each
attempt is recorded with exponential backoff until `max_attempts`. Attempts are kept in
notify's own table (the operators' deliveries view); the referral's `notification.sent` event
stays the mail's. A message carries ids and codes, the category, the area and the sign-in
link: never personal data."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from notify.adapters.channels import Channel
from notify.adapters.orm import ChannelDelivery, Delivery, Proposal
from notify.domain.messages import channel_text
from notify.domain.states import DeliveryState, ProposalStatus
from notify.service_layer.credentials import mint_signin_code
from notify.service_layer.failures import FailureTally, no_tally, tally_given_up
from shared.events import Recipient, ReferralMatched, new_id, utcnow

log = logging.getLogger("rujukan.notify.channels")
# The channels a contact may prefer besides email, and what each needs from the directory.
OTHER_CHANNELS = {"webhook": "webhook_url", "sms": "phone", "whatsapp": "phone"}


def queue_channels(s: AsyncSession, e: ReferralMatched, r: Recipient, urgent: bool) -> list[str]:
    """Queue the proposal on each other channel the contact prefers and the directory gives an
    address for; returns those channels."""
    queued: list[str] = []
    for channel in dict.fromkeys(r.channels):
        address = str(getattr(r, OTHER_CHANNELS.get(channel, ""), "") or "")
        if channel == "email" or not address:
            continue
        s.add(ChannelDelivery(
            id=new_id(), referral_id=e.referral_id, decision_id=e.decision_id, receiver_id=r.receiver_id,
            kind="proposal", channel=channel, address=address, urgent=urgent,
            payload={"type": "referral.proposed", "data": {
                "referral_id": e.referral_id, "decision_id": e.decision_id, "receiver_id": r.receiver_id,
                "service_id": e.service_id, "pmks_category": e.pmks_category, "region_code": e.region_code,
                "urgency": e.urgency, "risk_flags": list(e.risk_flags),
                "hold_expires_at": e.hold_expires_at.isoformat() if e.hold_expires_at else None}}))
        queued.append(channel)
    return queued


async def queue_follow_up(s: AsyncSession, decision_id: str, receiver_id: str, kind: str, event_type: str,
                          channels: tuple[str, ...], **data: Any) -> int:
    """After the proposal, on the same channels it went to (those of `channels`): its reminder,
    or the notice that closed it (to the webhook: the receiver's system must know). Once per
    kind and channel; the message is the proposal's ids and codes with `data` added."""
    sent = (await s.scalars(select(ChannelDelivery).where(
        ChannelDelivery.decision_id == decision_id, ChannelDelivery.receiver_id == receiver_id,
        ChannelDelivery.kind == "proposal", ChannelDelivery.channel.in_(channels)))).all()
    n = 0
    for c in sent:
        earlier = c.payload.get("data")
        if await s.scalar(select(ChannelDelivery.id).where(
                ChannelDelivery.decision_id == decision_id, ChannelDelivery.receiver_id == receiver_id,
                ChannelDelivery.kind == kind, ChannelDelivery.channel == c.channel)) is not None:
            continue
        s.add(ChannelDelivery(id=new_id(), referral_id=c.referral_id, decision_id=decision_id,
                              receiver_id=receiver_id, kind=kind, channel=c.channel, address=c.address,
                              urgent=c.urgent, payload={"type": event_type,
                                       "data": {**(earlier if isinstance(earlier, dict) else {}), **data}}))
        n += 1
    return n


@dataclass(frozen=True, slots=True)
class _Claimed:
    id: str
    channel: str
    address: str
    attempts: int
    payload: dict[str, Any]
    text: str


@dataclass
class ChannelRounds:
    sessions: async_sessionmaker[AsyncSession]
    channels: Mapping[str, Channel]
    public_url: str = "http://127.0.0.1:8003"
    signin_code_ttl: timedelta = timedelta(hours=24)
    max_attempts: int = 8
    poll_interval_s: float = 2.0
    claim_lease_s: float = 60.0
    # Told how many deliveries were given up on, once recorded (`rujukan status`'s tally).
    tally_failed: FailureTally = no_tally
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                sent = await self.deliver_due()
            except Exception as e:  # database away: retry on the next round
                log.warning("channel round failed: %s: %s", type(e).__name__, e)
                sent = 0
            if sent:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval_s)

    async def deliver_due(self, limit: int = 50) -> int:
        """Send what is due, urgent first; returns how many were attempted."""
        claimed = await self._claim(limit)
        for c in claimed:
            channel = self.channels.get(c.channel)
            if channel is None:
                await self._record(c, "dropped", f"no {c.channel} channel is configured")
                continue
            try:
                await channel.send(message_id=c.id, address=c.address, payload=c.payload, text=c.text)
                error = None
            except Exception as e:
                error = f"{type(e).__name__}: {e}"[:500]
            await self._record(c, None, error)
        return len(claimed)

    async def _claim(self, limit: int) -> list[_Claimed]:
        now = utcnow()
        due = (select(ChannelDelivery.id)
               .where(ChannelDelivery.state == DeliveryState.pending, ChannelDelivery.next_attempt_at <= now)
               .order_by(ChannelDelivery.urgent.desc(), ChannelDelivery.created_at).limit(limit)
               .with_for_update(skip_locked=True))
        expires_at = now + self.signin_code_ttl
        base = self.public_url.rstrip("/")
        async with self.sessions() as s, s.begin():
            rows = (await s.execute(
                update(ChannelDelivery)
                .where(ChannelDelivery.id.in_(due.scalar_subquery()), ChannelDelivery.state == DeliveryState.pending,
                       ChannelDelivery.next_attempt_at <= now)
                .values(next_attempt_at=now + timedelta(seconds=self.claim_lease_s))
                .returning(ChannelDelivery.id, ChannelDelivery.decision_id, ChannelDelivery.receiver_id,
                           ChannelDelivery.kind, ChannelDelivery.channel, ChannelDelivery.address,
                           ChannelDelivery.payload, ChannelDelivery.attempts, ChannelDelivery.urgent,
                           ChannelDelivery.created_at)
                .execution_options(synchronize_session=False))).all()
            claimed = []
            for r in sorted(rows, key=lambda r: (not r.urgent, r.created_at)):
                payload: dict[str, Any] = {**r.payload, "timestamp": now.isoformat()}
                text = ""
                if r.kind == "reminder":
                    p = await s.get(Proposal, (r.decision_id, r.receiver_id))
                    if p is None or p.status != ProposalStatus.proposed or (
                            p.hold_expires_at is not None and p.hold_expires_at <= now):
                        await s.execute(update(ChannelDelivery).where(ChannelDelivery.id == r.id).values(
                            state=DeliveryState.dropped, last_error="answered, or its hold ran out, first")
                            .execution_options(synchronize_session=False))
                        continue
                if r.kind in ("proposal", "reminder"):
                    data = dict(payload["data"])
                    # The link's code renews through the proposal's mail (a new link goes by email).
                    mail_id = await s.scalar(select(Delivery.id).where(
                        Delivery.decision_id == r.decision_id, Delivery.receiver_id == r.receiver_id,
                        Delivery.kind == "proposal"))
                    _, code = mint_signin_code(s, receiver_id=r.receiver_id, decision_id=r.decision_id,
                                               delivery_id=mail_id or r.id, expires_at=expires_at)
                    data["signin_url"] = f"{base}/signin/{code}"
                    payload["data"] = data
                    text = channel_text(pmks_category=data["pmks_category"], region_code=data["region_code"],
                                        signin_url=data["signin_url"], reminder=r.kind == "reminder")
                claimed.append(_Claimed(id=r.id, channel=r.channel, address=r.address, attempts=r.attempts,
                                        payload=payload, text=text))
        return claimed

    async def _record(self, c: _Claimed, state: str | None, error: str | None) -> None:
        now = utcnow()
        attempts = c.attempts + 1
        values: dict[str, object] = {"attempts": attempts}
        if state is not None:
            values.update(state=state, last_error=error or "")
        elif error is None:
            values.update(state=DeliveryState.sent, sent_at=now)
        elif attempts >= self.max_attempts:
            values.update(state=DeliveryState.failed, last_error=error)
            log.error("channel delivery %s (%s) failed for good: %s", c.id, c.channel, error)
        else:
            # Exponential backoff: 5 s, 10 s, 20 s, ... capped at 10 minutes.
            values.update(last_error=error, next_attempt_at=now + timedelta(seconds=min(5 * 2 ** (attempts - 1), 600)))
            log.warning("channel delivery %s (%s) attempt %d failed: %s", c.id, c.channel, attempts, error)
        async with self.sessions() as s, s.begin():
            res = await s.execute(update(ChannelDelivery).where(ChannelDelivery.id == c.id,
                                                                ChannelDelivery.state == DeliveryState.pending)
                                  .values(**values).execution_options(synchronize_session=False))
        if values.get("state") == DeliveryState.failed and res.rowcount:  # type: ignore[attr-defined]
            await tally_given_up(self.tally_failed, 1)
