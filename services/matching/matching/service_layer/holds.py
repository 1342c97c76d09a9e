"""Holds that expire: a seat held for a referral whose receiver did not answer in time goes
back, and the next candidate is proposed."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from matching.adapters.orm import Outbox, ReferralCase, SeatHold, Service
from matching.domain.states import CaseState, HoldState
from matching.service_layer import seats
from matching.service_layer.deciding import SOURCE, Propose
from shared.events import Envelope, ReferralStatusChanged, ReferralSubmitted, utcnow
from shared.outbox import OutboxRelay, add_events

log = logging.getLogger("rujukan.matching")


async def expire_due(sessions: async_sessionmaker[AsyncSession], relay: OutboxRelay, propose: Propose, *,
                     cutoff: datetime, on_freed: Callable[[set[str]], None], limit: int = 100) -> int:
    """Release holds whose deadline (plus grace) passed before `cutoff` and propose the next
    candidate. Safe with several replicas: a case another replica is working on is
    skipped (SKIP LOCKED), and a hold is released by one transaction only."""
    async with sessions() as s:
        due = (await s.execute(
            select(SeatHold.id, SeatHold.referral_id).join(
                ReferralCase, ReferralCase.referral_id == SeatHold.referral_id)
            .where(SeatHold.state == HoldState.held, SeatHold.expires_at < cutoff)
            .order_by(ReferralCase.urgent.desc(), SeatHold.expires_at).limit(limit)
        )).all()
    expired = 0
    for hold_id, referral_id in due:
        freed: set[str] = set()
        async with sessions() as s, s.begin():
            case = await seats.lock_case(s, referral_id, skip_locked=True)
            hold = await s.get(SeatHold, hold_id, populate_existing=True)
            if case is None or hold is None or hold.state != HoldState.held or hold.expires_at >= cutoff:
                continue
            if not await seats.release(s, hold_id, "expired", only_held=True):
                continue
            freed.add(hold.service_id)
            expired += 1
            out: list[Envelope] = []
            facts = ReferralSubmitted.model_validate(case.facts)
            svc = await s.get(Service, hold.service_id)
            out.append(Envelope.wrap(ReferralStatusChanged(
                referral_id=referral_id, decision_id=hold.decision_id, service_id=hold.service_id,
                service_name=svc.name if svc else "", organization_name=svc.organization.name if svc else "",
                status="hold_expired", actor="matching", at=utcnow(), urgency=facts.urgency,
                risk_flags=facts.risk_flags,
            ), source=SOURCE, subject=referral_id))
            if case.state == CaseState.proposed:
                case.lapsed_service_ids = [*(case.lapsed_service_ids or []), hold.service_id]
                # While a crisis escalates, another proposal may still be open: it stays.
                still_open = await seats.open_holds(s, referral_id)
                if still_open:
                    if case.current_decision_id == hold.decision_id:
                        case.current_decision_id = still_open[-1].decision_id
                elif case.current_decision_id == hold.decision_id:
                    out.extend(await propose(s, case, trigger="hold_expired"))
            add_events(s, Outbox, out)
        relay.kick()
        on_freed(freed)
    if expired:
        log.info("released %d expired holds", expired)
    return expired
