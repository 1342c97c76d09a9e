"""Crisis escalation: a crisis (or risk-flagged) proposal that nobody accepts within the
acknowledgement time (CRISIS_ACK_MINUTES) is proposed to the next crisis-capable
professional as well, with a seat held there too, and the agency, the receivers and the
operators are told (referral.escalated.v1). A second silence escalates again. The first to
accept keeps its seat; the others are withdrawn (closed_loop.withdraw_others). When no other
crisis-capable service is left, the escalation is still published (service_id "") and the
case escalates no further: the proposals stay open until their holds expire.

Safe with several replicas: a case is escalated with its row locked (SKIP LOCKED, so a
replica working on it is left alone) and only when its `escalate_after` is still due.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from matching.adapters.orm import Outbox, ReferralCase
from matching.domain.states import CaseState
from matching.service_layer import seats
from matching.service_layer.deciding import SOURCE, Propose
from shared.events import Envelope, ReferralEscalated, ReferralMatched, ReferralSubmitted
from shared.outbox import OutboxRelay, add_events

log = logging.getLogger("rujukan.matching")

REASON_UNANSWERED = "crisis_unanswered"


async def escalate_due(sessions: async_sessionmaker[AsyncSession], relay: OutboxRelay, propose: Propose, *,
                       now: datetime, limit: int = 100) -> int:
    """Escalate every crisis proposal unanswered past its time; how many escalated."""
    async with sessions() as s:
        due = (await s.execute(
            select(ReferralCase.referral_id, ReferralCase.escalate_after)
            .where(ReferralCase.state == CaseState.proposed, ReferralCase.escalate_after <= now)
            .order_by(ReferralCase.escalate_after).limit(limit))).all()
    escalated = 0
    for referral_id, seen in due:
        async with sessions() as s, s.begin():
            case = await seats.lock_case(s, referral_id, skip_locked=True)
            # The deadline seen is the claim: another replica that escalated it first moved it.
            if case is None or case.state != CaseState.proposed or case.escalate_after != seen:
                continue  # answered, escalated by another replica, or being worked on
            out = await escalate(s, case, propose, now=now)
            add_events(s, Outbox, out)
        if out:
            escalated += 1
            relay.kick()
    if escalated:
        log.info("escalated %d unanswered crisis proposals", escalated)
    return escalated


async def escalate(s: AsyncSession, case: ReferralCase, propose: Propose, *, now: datetime) -> list[Envelope]:
    """One escalation of a locked, proposed case: the next crisis-capable service proposed
    too (its own decision, seat held), then referral.escalated.v1."""
    waiting = await seats.open_holds(s, case.referral_id)
    if not waiting:
        case.escalate_after = None
        return []
    previous = next((h for h in waiting if h.decision_id == case.current_decision_id), waiting[-1])
    facts = ReferralSubmitted.model_validate(case.facts)
    out = await propose(s, case, trigger="escalated", proposed=frozenset(h.service_id for h in waiting),
                        only_if_found=True)
    new = next((x.payload() for x in out if x.type == ReferralMatched.TYPE), None)
    level = case.escalation_level = (case.escalation_level or 0) + 1
    if not isinstance(new, ReferralMatched):
        case.escalate_after = None  # nobody else to ask: told once, at this level
    waited = max(0.0, (now - previous.created_at) / timedelta(minutes=1))
    log.info("referral %s escalated (level %d, %s)", case.referral_id, level,
             "another service proposed" if new else "no other crisis-capable service")
    return [*out, Envelope.wrap(ReferralEscalated(
        referral_id=case.referral_id,
        decision_id=new.decision_id if isinstance(new, ReferralMatched) else previous.decision_id,
        previous_decision_id=previous.decision_id,
        service_id=new.service_id if isinstance(new, ReferralMatched) else "",
        level=level, reason_code=REASON_UNANSWERED, minutes_waited=round(waited, 2), at=now,
        urgency=facts.urgency, risk_flags=facts.risk_flags,
    ), source=SOURCE, subject=case.referral_id)]
