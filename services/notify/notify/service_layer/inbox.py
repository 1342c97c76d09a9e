"""The receivers' inbox: the proposals sent to each receiver, the responses they give
(accept; decline with a reason; then in progress; completed with an outcome).

A response is checked here against what the receiver was sent (its own proposal, one its
credential opens, in time, in turn), recorded, and published as `referral.response` to
matching, which owns the seat and has the last word: it answers with
`referral.status_changed` (applied) or `referral.response_refused` (e.g. the hold had
expired meanwhile), and both land here too. How receivers sign in: service_layer.credentials.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from notify.adapters.orm import Delivery, Outbox, Proposal, ReceiverResponse
from notify.domain.messages import notice
from notify.domain.states import OPEN_PROPOSALS, SHARING_PROPOSALS, ProposalStatus
from notify.service_layer.channels import queue_follow_up
from notify.service_layer.credentials import Credential, learn_from_proposal
from shared.events import (
    Envelope,
    EventData,
    ReferralCancelled,
    ReferralMatched,
    ReferralProposalWithdrawn,
    ReferralResponse,
    ReferralResponseRefused,
    ReferralStatusChanged,
    new_id,
    utcnow,
)
from shared.outbox import OutboxRelay, add_events
from shared.vocab import is_urgent

SOURCE = "rujukan/notify"
ResponseKind = Literal["accepted", "declined", "in_progress", "completed"]
# Where the receiver's proposal must stand for each response.
RESPONSE_FROM: dict[str, tuple[ProposalStatus, ...]] = {
    "accepted": (ProposalStatus.proposed,),
    "declined": (ProposalStatus.proposed,),
    "in_progress": (ProposalStatus.accepted,),
    "completed": (ProposalStatus.accepted, ProposalStatus.in_progress),
}


class NotFound(Exception):
    pass


class NotOpened(Exception):
    """The receiver's own proposal, but not one this sign-in opens (a mail's link opens its
    proposal only)."""


class Conflict(Exception):
    """The response does not fit where the proposal stands (with why)."""


# --- from matching's events (inside Notify.handle's transaction) ------------------------


def urgent_of(urgency: str, risk_flags: Sequence[str]) -> bool:
    """Mail first what is urgent: a crisis or a risk flag (the urgent lane), or priority."""
    return is_urgent(urgency, list(risk_flags)) or urgency == "priority"


async def record_proposal(s: AsyncSession, e: ReferralMatched) -> None:
    existing = set((await s.scalars(select(Proposal.receiver_id).where(Proposal.decision_id == e.decision_id))).all())
    for r in e.recipients:
        if r.receiver_id in existing:
            continue
        await learn_from_proposal(s, r.receiver_id, e.service_id, r.contact_id, r.email)
        s.add(Proposal(
            decision_id=e.decision_id, receiver_id=r.receiver_id, referral_id=e.referral_id, service_id=e.service_id,
            service_name=e.service_name, organization_name=e.organization_name, pmks_category=e.pmks_category,
            region_code=e.region_code, urgency=e.urgency, risk_flags=list(e.risk_flags),
            reasons_id=e.reasons_id, reasons_en=e.reasons_en, hold_expires_at=e.hold_expires_at,
            status=ProposalStatus.proposed, submitted_at=e.submitted_at,
        ))


async def status_changed(s: AsyncSession, data: ReferralStatusChanged) -> int:
    """A step matching applied: the inbox follows it; an expired hold is noticed to the recipients."""
    items = await _items(s, Proposal.decision_id == data.decision_id)
    if data.status == "hold_expired":
        return await _close(s, [p for p in items if p.status == ProposalStatus.proposed], ProposalStatus.expired,
                            "hold_expired", None)
    for p in items:
        p.status, p.updated_at = data.status, utcnow()
    return 0


async def response_refused(s: AsyncSession, data: ReferralResponseRefused) -> int:
    """A response matching could not apply: the proposal closes where the reason says so,
    and the receiver who gave it is told."""
    items = await _items(s, Proposal.decision_id == data.decision_id)
    closed = {"hold_expired": ProposalStatus.expired, "cancelled": ProposalStatus.cancelled,
              "not_current": ProposalStatus.withdrawn}
    if data.reason_code in closed:
        for p in items:
            p.status, p.status_reason, p.updated_at = closed[data.reason_code], data.reason_code, utcnow()
    return await _close(s, [p for p in items if p.receiver_id == data.responder_receiver_id], None,
                        "response_refused", data.reason_code)


async def referral_cancelled(s: AsyncSession, data: ReferralCancelled) -> int:
    """The agency cancelled: every open proposal of the referral closes, with a notice."""
    items = await _items(s, Proposal.referral_id == data.referral_id)
    return await _close(s, [p for p in items if p.status in OPEN_PROPOSALS], ProposalStatus.cancelled, "cancelled",
                        data.reason_code)


async def proposal_withdrawn(s: AsyncSession, data: ReferralProposalWithdrawn) -> int:
    """Another proposal of the referral was accepted first: this one closes (withdrawn, shown
    closed on the page and the API), and each of its receivers still waiting is told."""
    items = await _items(s, Proposal.decision_id == data.decision_id)
    if data.receiver_ids:
        items = [p for p in items if p.receiver_id in data.receiver_ids]
    return await _close(s, [p for p in items if p.status == ProposalStatus.proposed], ProposalStatus.withdrawn,
                        "withdrawn", data.reason_code)


# The closed loop's steps, by exact event type; each returns how many notices it queued.
CLOSED_LOOP: dict[type[EventData], Callable[[AsyncSession, Any], Awaitable[int]]] = {
    ReferralStatusChanged: status_changed,
    ReferralResponseRefused: response_refused,
    ReferralCancelled: referral_cancelled,
    ReferralProposalWithdrawn: proposal_withdrawn,
}


async def _items(s: AsyncSession, where: object) -> list[Proposal]:
    return list((await s.scalars(select(Proposal).where(where).with_for_update())).all())  # type: ignore[arg-type]


async def _close(s: AsyncSession, items: list[Proposal], status: ProposalStatus | None, kind: str,
                 reason_code: str | None) -> int:
    """Move the items (when `status`) and queue one notice of `kind` to each recipient."""
    n = 0
    for p in items:
        if status is not None:
            p.status, p.status_reason, p.updated_at = status, reason_code, utcnow()
        email = await s.scalar(select(Delivery.email).where(
            Delivery.decision_id == p.decision_id, Delivery.receiver_id == p.receiver_id,
            Delivery.kind == "proposal"))
        already = await s.scalar(select(Delivery.id).where(
            Delivery.decision_id == p.decision_id, Delivery.receiver_id == p.receiver_id,
            Delivery.kind == kind))
        if email is None or already is not None:
            continue
        subject, body = notice(kind, referral_id=p.referral_id, organization_name=p.organization_name,
                               service_name=p.service_name, pmks_category=p.pmks_category,
                               region_code=p.region_code, urgency=p.urgency, reason_code=reason_code)
        s.add(Delivery(id=new_id(), referral_id=p.referral_id, decision_id=p.decision_id,
                       receiver_id=p.receiver_id, kind=kind, email=email, subject=subject, body=body,
                       urgent=urgent_of(p.urgency, p.risk_flags)))
        n += 1
        n += await queue_follow_up(s, p.decision_id, p.receiver_id, kind, "referral.proposal_closed", ("webhook",),
                                   status=p.status, notice=kind, reason_code=reason_code)
    return n


# --- the receivers' side -----------------------------------------------------------------


@dataclass(frozen=True)
class ResponseEntry:
    response: str
    reason_code: str | None
    outcome_code: str | None
    receiver_id: str
    at: datetime


@dataclass(frozen=True)
class ProposalItem:
    """A proposal in the receiver's inbox, with its responses when they were asked for."""

    decision_id: str
    referral_id: str
    service_id: str
    service_name: str
    organization_name: str
    pmks_category: str
    region_code: str
    urgency: str
    risk_flags: list[str]
    reasons_id: list[str]
    reasons_en: list[str]
    hold_expires_at: datetime | None
    status: str
    status_reason: str | None
    created_at: datetime
    updated_at: datetime
    responses: list[ResponseEntry] | None = None

    @property
    def shares_personal_data(self) -> bool:
        """Whether the receiver may read the person's details at intake now."""
        return self.status in SHARING_PROPOSALS


def _item(p: Proposal, responses: Sequence[ReceiverResponse] | None = None) -> ProposalItem:
    return ProposalItem(
        decision_id=p.decision_id, referral_id=p.referral_id, service_id=p.service_id,
        service_name=p.service_name, organization_name=p.organization_name, pmks_category=p.pmks_category,
        region_code=p.region_code, urgency=p.urgency, risk_flags=list(p.risk_flags),
        reasons_id=list(p.reasons_id), reasons_en=list(p.reasons_en), hold_expires_at=p.hold_expires_at,
        status=p.status, status_reason=p.status_reason, created_at=p.created_at, updated_at=p.updated_at,
        responses=None if responses is None else [
            ResponseEntry(response=r.response, reason_code=r.reason_code, outcome_code=r.outcome_code,
                          receiver_id=r.receiver_id, at=r.created_at) for r in responses],
    )


@dataclass
class Inbox:
    sessions: async_sessionmaker[AsyncSession]
    relay: OutboxRelay

    async def proposals(self, who: Credential, status: str | None, limit: int, offset: int) -> list[ProposalItem]:
        """The receiver's proposals that this credential opens, newest first."""
        q = select(Proposal).where(Proposal.receiver_id == who.receiver_id)
        if who.proposals is not None:
            q = q.where(Proposal.decision_id.in_(sorted(who.proposals)))
        if status:
            q = q.where(Proposal.status == status)
        async with self.sessions() as s:
            return [_item(p) for p in (await s.scalars(q.order_by(Proposal.created_at.desc(), Proposal.decision_id)
                                                       .limit(limit).offset(offset))).all()]

    async def proposal(self, who: Credential, decision_id: str) -> ProposalItem:
        """One of the receiver's proposals that this credential opens, and its responses."""
        async with self.sessions() as s:
            p = await self._opened(s, who, decision_id)
            responses = (await s.scalars(select(ReceiverResponse).where(
                ReceiverResponse.decision_id == decision_id, ReceiverResponse.receiver_id == who.receiver_id)
                .order_by(ReceiverResponse.created_at))).all()
            return _item(p, responses)

    @staticmethod
    async def _opened(s: AsyncSession, who: Credential, decision_id: str, lock: bool = False) -> Proposal:
        p = await s.get(Proposal, (decision_id, who.receiver_id), with_for_update=lock)
        if p is None:
            raise NotFound(decision_id)
        if not who.opens(decision_id):
            raise NotOpened(decision_id)
        return p

    async def respond(self, who: Credential, decision_id: str, response: ResponseKind,
                      reason_code: str | None = None, outcome_code: str | None = None) -> tuple[ProposalItem, bool]:
        """Record a response and publish it to matching, in one transaction. Returns
        (proposal, whether anything changed): the same response again changes nothing."""
        now = utcnow()
        async with self.sessions() as s, s.begin():
            p = await self._opened(s, who, decision_id, lock=True)
            if p.status == response:
                return _item(p), False
            if p.status not in RESPONSE_FROM[response]:
                raise Conflict(f"the proposal is {p.status}: '{response}' is not possible now")
            if response in ("accepted", "declined") and p.hold_expires_at is not None and now > p.hold_expires_at:
                raise Conflict("the time to answer has run out: the seat was released to the next candidate")
            event = Envelope.wrap(ReferralResponse(
                referral_id=p.referral_id, decision_id=decision_id, service_id=p.service_id, response=response,
                reason_code=reason_code, outcome_code=outcome_code, responder_receiver_id=who.receiver_id,
                responded_at=now, urgency=p.urgency, risk_flags=p.risk_flags,
            ), source=SOURCE, subject=p.referral_id)
            s.add(ReceiverResponse(id=event.id, decision_id=decision_id, receiver_id=who.receiver_id,
                           referral_id=p.referral_id, response=response, reason_code=reason_code,
                           outcome_code=outcome_code, credential_id=who.id, created_at=now))
            p.status, p.status_reason, p.updated_at = response, reason_code or outcome_code, now
            add_events(s, Outbox, [event])
        self.relay.kick()
        return _item(p), True
