"""The recipients' inbox: the proposals sent to each contact, the responses they give
(accept; decline with a reason; then in progress; completed with an outcome), and the
tokens they authenticate with.

A response is checked here against what the recipient was sent (its own proposal, in
time, in turn), recorded, and published as `referral.response` to matching, which owns the
seat and has the last word: it answers with `referral.status_changed` (applied) or
`referral.response_refused` (e.g. the hold had expired meanwhile), and both land here too.

Recipients' credentials: a token is random, shown once, kept only as its SHA-256, and
grants access to one contact's proposals. An operator issues long-lived ones for a
provider's own system; each proposal mail carries a fresh one (minted when it is sent,
valid for `token_ttl`), so a social worker can answer straight from the mail.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from notify.adapters.orm import Delivery, Outbox, Proposal, RecipientToken, Response
from notify.domain.messages import notice
from shared.events import (
    Envelope,
    EventData,
    ReferralCancelled,
    ReferralMatched,
    ReferralResponse,
    ReferralResponseRefused,
    ReferralStatusChanged,
    new_id,
    utcnow,
)
from shared.outbox import OutboxRelay, add_events
from shared.vocab import is_urgent

SOURCE = "rujukan/notify"
TOKEN_PREFIX = "rjk_"  # noqa: S105 - a marker that tells a recipient token apart, not a secret
ResponseKind = Literal["accepted", "declined", "in_progress", "completed"]
OPEN = ("proposed", "accepted", "in_progress")
# Where the recipient's proposal must stand for each response.
RESPONSE_FROM: dict[str, tuple[str, ...]] = {
    "accepted": ("proposed",),
    "declined": ("proposed",),
    "in_progress": ("accepted",),
    "completed": ("accepted", "in_progress"),
}


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class NotFound(Exception):
    pass


class Conflict(Exception):
    """The response does not fit where the proposal stands (with why)."""


async def mint_token(s: AsyncSession, contact_id: str, source: str, expires_at: datetime | None) -> tuple[str, str]:
    """A new token for a contact: (token id, the token itself, never stored)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = new_id()
    s.add(RecipientToken(id=token_id, contact_id=contact_id, token_sha256=digest(token), source=source,
                         expires_at=expires_at))
    return token_id, token


# --- from matching's events (inside Notify.handle's transaction) ------------------------


def urgent_of(urgency: str, risk_flags: Sequence[str]) -> bool:
    """Mail first what is urgent: a crisis or a risk flag (the urgent lane), or priority."""
    return is_urgent(urgency, list(risk_flags)) or urgency == "priority"


async def record_proposal(s: AsyncSession, e: ReferralMatched) -> None:
    existing = set((await s.scalars(select(Proposal.contact_id).where(Proposal.decision_id == e.decision_id))).all())
    for r in e.recipients:
        if r.contact_id in existing:
            continue
        s.add(Proposal(
            decision_id=e.decision_id, contact_id=r.contact_id, referral_id=e.referral_id, service_id=e.service_id,
            service_name=e.service_name, organization_name=e.organization_name, pmks_category=e.pmks_category,
            region_code=e.region_code, urgency=e.urgency, risk_flags=list(e.risk_flags),
            reasons_id=e.reasons_id, reasons_en=e.reasons_en, hold_expires_at=e.hold_expires_at, status="proposed",
        ))


async def apply_closed_loop(s: AsyncSession, data: EventData) -> int:
    """Bring the inbox up to date with a step matching applied, or the agency's
    cancellation, and queue the notices the recipients must get. Returns how many."""
    if isinstance(data, ReferralStatusChanged):
        items = await _items(s, Proposal.decision_id == data.decision_id)
        if data.status == "hold_expired":
            return await _close(s, [p for p in items if p.status == "proposed"], "expired", "hold_expired", None)
        for p in items:
            p.status, p.updated_at = data.status, utcnow()
        return 0
    if isinstance(data, ReferralResponseRefused):
        items = await _items(s, Proposal.decision_id == data.decision_id)
        closed = {"hold_expired": "expired", "cancelled": "cancelled", "not_current": "withdrawn"}
        if data.reason_code in closed:
            for p in items:
                p.status, p.status_reason, p.updated_at = closed[data.reason_code], data.reason_code, utcnow()
        return await _close(s, [p for p in items if p.contact_id == data.responder_contact_id], None,
                            "response_refused", data.reason_code)
    if isinstance(data, ReferralCancelled):
        items = await _items(s, Proposal.referral_id == data.referral_id)
        return await _close(s, [p for p in items if p.status in OPEN], "cancelled", "cancelled", data.reason_code)
    return 0


async def _items(s: AsyncSession, where: object) -> list[Proposal]:
    return list((await s.scalars(select(Proposal).where(where).with_for_update())).all())  # type: ignore[arg-type]


async def _close(s: AsyncSession, items: list[Proposal], status: str | None, kind: str,
                 reason_code: str | None) -> int:
    """Move the items (when `status`) and queue one notice of `kind` to each recipient."""
    n = 0
    for p in items:
        if status is not None:
            p.status, p.status_reason, p.updated_at = status, reason_code, utcnow()
        email = await s.scalar(select(Delivery.email).where(
            Delivery.decision_id == p.decision_id, Delivery.recipient_contact_id == p.contact_id,
            Delivery.kind == "proposal"))
        already = await s.scalar(select(Delivery.id).where(
            Delivery.decision_id == p.decision_id, Delivery.recipient_contact_id == p.contact_id,
            Delivery.kind == kind))
        if email is None or already is not None:
            continue
        subject, body = notice(kind, referral_id=p.referral_id, organization_name=p.organization_name,
                               service_name=p.service_name, pmks_category=p.pmks_category,
                               region_code=p.region_code, urgency=p.urgency, reason_code=reason_code)
        s.add(Delivery(id=new_id(), referral_id=p.referral_id, decision_id=p.decision_id,
                       recipient_contact_id=p.contact_id, kind=kind, email=email, subject=subject, body=body,
                       urgent=urgent_of(p.urgency, p.risk_flags)))
        n += 1
    return n


# --- the recipients' side ----------------------------------------------------------------


@dataclass
class Inbox:
    sessions: async_sessionmaker[AsyncSession]
    relay: OutboxRelay

    async def authenticate(self, token: str) -> RecipientToken | None:
        """The token's record if it is valid now (not revoked, not expired)."""
        if not token.startswith(TOKEN_PREFIX):
            return None
        async with self.sessions() as s:
            t = await s.scalar(select(RecipientToken).where(RecipientToken.token_sha256 == digest(token)))
        if t is None or t.revoked_at is not None or (t.expires_at is not None and t.expires_at <= utcnow()):
            return None
        return t

    async def issue_token(self, contact_id: str, valid_for: timedelta) -> tuple[str, str, datetime]:
        """An operator's token for a contact: (token id, token, expiry)."""
        expires_at = utcnow() + valid_for
        async with self.sessions() as s, s.begin():
            token_id, token = await mint_token(s, contact_id, "operator", expires_at)
        return token_id, token, expires_at

    async def revoke_token(self, contact_id: str, token_id: str) -> bool:
        async with self.sessions() as s, s.begin():
            res = await s.execute(update(RecipientToken).where(
                RecipientToken.id == token_id, RecipientToken.contact_id == contact_id,
                RecipientToken.revoked_at.is_(None)).values(revoked_at=utcnow()))
        return bool(res.rowcount)  # type: ignore[attr-defined]

    async def proposals(self, contact_id: str, status: str | None, limit: int, offset: int) -> list[Proposal]:
        q = select(Proposal).where(Proposal.contact_id == contact_id)
        if status:
            q = q.where(Proposal.status == status)
        async with self.sessions() as s:
            return list((await s.scalars(q.order_by(Proposal.created_at.desc(), Proposal.decision_id)
                                         .limit(limit).offset(offset))).all())

    async def proposal(self, contact_id: str, decision_id: str) -> tuple[Proposal, list[Response]]:
        """One of the contact's proposals and the responses given to it; only its own."""
        async with self.sessions() as s:
            p = await s.get(Proposal, (decision_id, contact_id))
            if p is None:
                raise NotFound(decision_id)
            responses = list((await s.scalars(select(Response).where(
                Response.decision_id == decision_id).order_by(Response.created_at))).all())
        return p, responses

    async def respond(self, token: RecipientToken, decision_id: str, response: ResponseKind,
                      reason_code: str | None = None, outcome_code: str | None = None) -> tuple[Proposal, bool]:
        """Record a response and publish it to matching, in one transaction. Returns
        (proposal, whether anything changed): the same response again changes nothing."""
        now = utcnow()
        async with self.sessions() as s, s.begin():
            p = await s.get(Proposal, (decision_id, token.contact_id), with_for_update=True)
            if p is None:
                raise NotFound(decision_id)
            if p.status == response:
                return p, False
            if p.status not in RESPONSE_FROM[response]:
                raise Conflict(f"the proposal is {p.status}: '{response}' is not possible now")
            if response in ("accepted", "declined") and p.hold_expires_at is not None and now > p.hold_expires_at:
                raise Conflict("the time to answer has run out: the seat was released to the next candidate")
            event = Envelope.wrap(ReferralResponse(
                referral_id=p.referral_id, decision_id=decision_id, service_id=p.service_id, response=response,
                reason_code=reason_code, outcome_code=outcome_code, responder_contact_id=token.contact_id,
                responded_at=now, urgency=p.urgency, risk_flags=p.risk_flags,
            ), source=SOURCE, subject=p.referral_id)
            s.add(Response(id=event.id, decision_id=decision_id, contact_id=token.contact_id,
                           referral_id=p.referral_id, response=response, reason_code=reason_code,
                           outcome_code=outcome_code, token_id=token.id, created_at=now))
            p.status, p.status_reason, p.updated_at = response, reason_code or outcome_code, now
            add_events(s, Outbox, [event])
        self.relay.kick()
        return p, True
