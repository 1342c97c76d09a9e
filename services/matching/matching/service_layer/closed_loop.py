"""The closed loop after a proposal: the receiver's responses (accepted, in progress,
completed, declined) and the agency's cancellation. What cannot apply is refused with why.

While a crisis escalates, a referral has several open proposals (held seats): the first
accepted keeps its seat and the others are withdrawn (their seats released); a response to
a withdrawn proposal is refused like one no longer current; a decline of one of them leaves
the others open; a cancellation releases every seat.

Every change to a referral happens with its case row locked (seats.lock_case) and every
seat moves with a conditional UPDATE (seats.confirm / seats.release).
"""

from __future__ import annotations

import logging
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from matching.adapters.orm import ReferralCase, SeatHold, Service
from matching.domain.states import CLOSED_CASES, CaseState, HoldState
from matching.service_layer import seats
from matching.service_layer.deciding import SOURCE, Propose
from matching.service_layer.shortlist import describe
from shared.events import (
    Envelope,
    HandoverContact,
    ReferralCancelled,
    ReferralProposalWithdrawn,
    ReferralResponse,
    ReferralResponseRefused,
    ReferralStatusChanged,
    utcnow,
)

log = logging.getLogger("rujukan.matching")

# Where a case may be when each response arrives (the seat's own state is checked too).
RESPONSE_FROM: dict[str, frozenset[CaseState]] = {
    "accepted": frozenset({CaseState.proposed}),
    "declined": frozenset({CaseState.proposed}),
    "in_progress": frozenset({CaseState.accepted}),
    "completed": frozenset({CaseState.accepted, CaseState.in_progress}),
}
RefusalCode = Literal["hold_expired", "cancelled", "not_current", "invalid_transition"]


async def respond(s: AsyncSession, e: ReferralResponse, freed: set[str], propose: Propose) -> list[Envelope]:
    """A receiver's response: confirm or release the seat, move the case, propose the
    next candidate after a decline. What cannot apply is refused with why."""
    case = await seats.lock_case(s, e.referral_id)
    hold = await s.scalar(select(SeatHold).where(SeatHold.decision_id == e.decision_id))

    def refused(code: RefusalCode) -> list[Envelope]:
        log.info("referral %s: %s response refused (%s)", e.referral_id, e.response, code)
        return [Envelope.wrap(ReferralResponseRefused(
            referral_id=e.referral_id, decision_id=e.decision_id, service_id=e.service_id, response=e.response,
            responder_receiver_id=e.responder_receiver_id, reason_code=code,
            urgency=e.urgency, risk_flags=e.risk_flags,
        ), source=SOURCE, subject=e.referral_id)]

    if (case is None or hold is None or hold.service_id != e.service_id or hold.referral_id != e.referral_id
            or hold.receiver_id != e.responder_receiver_id):
        # Only the receiver the proposal went to moves its seat.
        return refused("not_current")
    if e.response == "declined" and e.service_id not in (case.declined_service_ids or []):
        # Even a decline that comes too late is remembered: never propose it there again.
        case.declined_service_ids = [*(case.declined_service_ids or []), e.service_id]
    if case.state == CaseState.cancelled:
        return refused("cancelled")
    if hold.state == HoldState.released and hold.release_reason == "withdrawn":
        return refused("not_current")  # another proposal of this referral was accepted first
    if hold.state == HoldState.released and hold.release_reason == "expired":
        return [] if e.response == "declined" else refused("hold_expired")
    if hold.state == HoldState.released and hold.release_reason == e.response == "declined":
        return []  # the same decline twice: it took effect once
    # Current: the proposal the case points at, or any proposal still open while it escalates.
    if case.current_decision_id != e.decision_id and not (
            hold.state == HoldState.held and case.state == CaseState.proposed):
        return refused("not_current")
    if case.state == e.response:
        return []  # the same answer twice: it took effect once
    if case.state not in RESPONSE_FROM[e.response]:
        return refused("invalid_transition")

    svc = await s.get(Service, hold.service_id)
    handover = None
    if e.response == "accepted" and svc is not None:
        # Whom the agency calls now: the receiving contact, as the directory gives it.
        about = await describe(s, svc.id)
        handover = HandoverContact(name=about.contact_name[:200], phone=about.reach.phone,
                                   email=about.contact_email[:320])
    changed = Envelope.wrap(ReferralStatusChanged(
        referral_id=e.referral_id, decision_id=e.decision_id, service_id=e.service_id,
        service_name=svc.name if svc else "", organization_name=svc.organization.name if svc else "",
        status=e.response, reason_code=e.reason_code, outcome_code=e.outcome_code,
        actor=f"receiver:{e.responder_receiver_id}", at=e.responded_at, urgency=e.urgency, risk_flags=e.risk_flags,
        handover=handover,
    ), source=SOURCE, subject=e.referral_id)
    case.updated_at = utcnow()
    if e.response == "accepted":
        if not await seats.confirm(s, hold.id):
            return refused("invalid_transition")
        case.state, case.current_decision_id, case.escalate_after = CaseState.accepted, e.decision_id, None
        return [changed, *await withdraw_others(s, e, hold.id, freed)]
    if e.response == "in_progress":
        case.state = CaseState.in_progress
        return [changed]
    if e.response == "completed":
        if await seats.release(s, hold.id, "completed"):
            freed.add(hold.service_id)
        case.state, case.current_decision_id = CaseState.completed, None
        return [changed]
    # declined: the seat goes back and the next candidate is proposed at once, unless
    # another proposal of this (escalated) referral is still open.
    if not await seats.release(s, hold.id, "declined", only_held=True):
        return refused("invalid_transition")
    freed.add(hold.service_id)
    still_open = await seats.open_holds(s, e.referral_id)
    if still_open:
        if case.current_decision_id == e.decision_id:
            case.current_decision_id = still_open[-1].decision_id
        return [changed]
    return [changed, *await propose(s, case, trigger="declined")]


async def withdraw_others(s: AsyncSession, e: ReferralResponse, accepted_hold_id: str,
                          freed: set[str]) -> list[Envelope]:
    """The referral's other open proposals, withdrawn: seat released, receiver told."""
    out = []
    for other in await seats.open_holds(s, e.referral_id):
        if other.id == accepted_hold_id or not await seats.release(s, other.id, "withdrawn", only_held=True):
            continue
        freed.add(other.service_id)
        log.info("referral %s: proposal %s withdrawn (accepted elsewhere)", e.referral_id, other.decision_id)
        out.append(Envelope.wrap(ReferralProposalWithdrawn(
            referral_id=e.referral_id, decision_id=other.decision_id, service_id=other.service_id,
            receiver_ids=[other.receiver_id] if other.receiver_id else [], reason_code="accepted_elsewhere",
            at=utcnow(), urgency=e.urgency, risk_flags=e.risk_flags,
        ), source=SOURCE, subject=e.referral_id))
    return out


async def cancel(s: AsyncSession, e: ReferralCancelled, freed: set[str]) -> list[Envelope]:
    """The agency cancelled: release the seat. Intake has already recorded it and notify
    tells the receiver, both from the same event; matching has nothing to add."""
    case = await seats.lock_case(s, e.referral_id)
    if case is None:
        # Cancelled before its submission reached us (it waits in a longer lane): keep a
        # tombstone so that the submission, when it comes, is not decided.
        s.add(ReferralCase(referral_id=e.referral_id, facts={}, state=CaseState.cancelled, declined_service_ids=[],
                           lapsed_service_ids=[], urgent=False))
        return []
    if case.state in CLOSED_CASES:
        return []
    for hold in await seats.live_holds(s, e.referral_id):  # every open proposal's seat
        if await seats.release(s, hold.id, "cancelled"):
            freed.add(hold.service_id)
    case.state, case.current_decision_id, case.updated_at = CaseState.cancelled, None, utcnow()
    case.escalate_after = None
    log.info("referral %s cancelled by its agency", e.referral_id)
    return []
