"""Matching's use cases: decide on a submitted referral and hold a seat for it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from matching.adapters.orm import Decision, Outbox, ProcessedEvent, ReferralCase, SeatHold, Service
from matching.domain.decision import ReferralFacts, Verdict, rank
from matching.service_layer.directory import candidates, to_view
from shared.events import (
    Candidate,
    Envelope,
    EventData,
    Recipient,
    ReferralMatched,
    ReferralSubmitted,
    ReferralUnmatched,
    ReferralWaitlisted,
    new_id,
    utcnow,
)
from shared.outbox import OutboxRelay, add_events
from shared.streams import Message

SOURCE = "rujukan/matching"
MAX_CANDIDATES_LISTED = 20


def facts_of(e: ReferralSubmitted) -> ReferralFacts:
    return ReferralFacts(
        referral_id=e.referral_id, pmks_category=e.pmks_category, region_code=e.region_code,
        age_band=e.age_band, gender=e.gender, languages=tuple(e.languages), modality=e.modality,
        urgency=e.urgency, risk_flags=tuple(e.risk_flags), needs=tuple(e.needs),
    )


def candidate_list(chosen: Verdict | None, ranking_rest: list[Verdict]) -> list[Candidate]:
    out = []
    if chosen is not None:
        out.append(Candidate(service_id=chosen.service.id, score=chosen.score[0] if chosen.score else None,
                             outcome="chosen", reasons_id=chosen.reasons_id, reasons_en=chosen.reasons_en))
    for v in ranking_rest[: MAX_CANDIDATES_LISTED - len(out)]:
        out.append(Candidate(
            service_id=v.service.id, outcome=v.excluded_en or "ranked lower",
            reasons_id=[v.excluded_id or "peringkat lebih rendah"],
            reasons_en=[v.excluded_en or "ranked lower"],
        ))
    return out


@dataclass
class Matching:
    sessions: async_sessionmaker[AsyncSession]
    relay: OutboxRelay
    hold_routine: timedelta
    hold_urgent: timedelta

    async def handle(self, messages: list[Message]) -> None:
        """Decide on a batch of events in one transaction; each event takes effect once."""
        async with self.sessions() as s, s.begin():
            ids = [m.envelope.id for m in messages]
            seen = set((await s.scalars(select(ProcessedEvent.event_id)
                                        .where(ProcessedEvent.event_id.in_(ids)))).all())
            out: list[Envelope] = []
            for m in messages:
                if m.envelope.id in seen:
                    continue
                seen.add(m.envelope.id)
                s.add(ProcessedEvent(event_id=m.envelope.id, event_type=m.envelope.type))
                out.extend(await self._apply(s, m.data))
            add_events(s, Outbox, out)
        if out:
            self.relay.kick()

    async def _apply(self, s: AsyncSession, data: EventData) -> list[Envelope]:
        if isinstance(data, ReferralSubmitted):
            return await self.decide(s, data)
        return []

    async def decide(self, s: AsyncSession, e: ReferralSubmitted) -> list[Envelope]:
        if await s.get(ReferralCase, e.referral_id) is not None:
            return []  # already decided (the same referral published twice)
        facts = facts_of(e)
        case = ReferralCase(referral_id=e.referral_id, facts=e.model_dump(mode="json"), state="submitted")
        s.add(case)
        services = await candidates(s, e.pmks_category, e.region_code)
        ranking = rank(facts, [to_view(x) for x in services], frozenset(case.declined_service_ids or []))
        by_id = {x.id: x for x in services}
        decision_id = new_id()
        for i, verdict in enumerate(ranking.chosen):
            if await self._hold_seat(s, verdict.service.id):
                svc = by_id[verdict.service.id]
                expires = utcnow() + (self.hold_urgent if facts.urgent else self.hold_routine)
                s.add(SeatHold(id=new_id(), referral_id=e.referral_id, service_id=svc.id,
                               decision_id=decision_id, state="held", expires_at=expires))
                others = ranking.chosen[:i] + ranking.chosen[i + 1:] + ranking.excluded
                cands = candidate_list(verdict, others)
                case.state = "proposed"
                s.add(Decision(id=decision_id, referral_id=e.referral_id, outcome="proposed",
                               service_id=svc.id, reasons_id=verdict.reasons_id,
                               reasons_en=verdict.reasons_en,
                               candidates=[c.model_dump() for c in cands]))
                return [Envelope.wrap(ReferralMatched(
                    referral_id=e.referral_id, decision_id=decision_id, service_id=svc.id,
                    service_name=svc.name, organization_name=svc.organization.name,
                    resource_kind=svc.resource_kind, pmks_category=e.pmks_category,
                    region_code=e.region_code, urgency=e.urgency, hold_expires_at=expires,
                    reasons_id=verdict.reasons_id, reasons_en=verdict.reasons_en,
                    recipients=[Recipient(contact_id=svc.contact_id, email=svc.contact_email)],
                    candidates=cands,
                ), source=SOURCE, subject=e.referral_id)]
        # Nobody could take it now. If some were refused only for want of a seat, wait.
        full = [v for v in ranking.excluded if v.excluded_en == "no free seat"]
        cands = candidate_list(None, ranking.excluded)
        if full or ranking.chosen:
            case.state = "waitlisted"
            reasons_id = [f"semua layanan yang sesuai penuh ({len(full) or len(ranking.chosen)}); "
                          "menunggu kursi kosong"]
            reasons_en = [f"every suitable service is full ({len(full) or len(ranking.chosen)}); "
                          "waiting for a free seat"]
            cls: type[ReferralUnmatched] = ReferralWaitlisted
        else:
            case.state = "unmatched"
            reasons_id = ["tidak ada layanan yang sesuai"
                          + (f": {len(services)} kandidat ditolak" if services else " di wilayah ini")]
            reasons_en = ["no suitable service"
                          + (f": {len(services)} candidates refused" if services else " in this area")]
            cls = ReferralUnmatched
        s.add(Decision(id=decision_id, referral_id=e.referral_id, outcome=case.state, service_id=None,
                       reasons_id=reasons_id, reasons_en=reasons_en,
                       candidates=[c.model_dump() for c in cands]))
        return [Envelope.wrap(cls(
            referral_id=e.referral_id, decision_id=decision_id, pmks_category=e.pmks_category,
            region_code=e.region_code, urgency=e.urgency, reasons_id=reasons_id,
            reasons_en=reasons_en, candidates=cands,
        ), source=SOURCE, subject=e.referral_id)]

    @staticmethod
    async def _hold_seat(s: AsyncSession, service_id: str) -> bool:
        """Take one seat if one is free. The conditional UPDATE is atomic in the database,
        so concurrent matchers can never hold more seats than exist."""
        res = await s.execute(
            update(Service).where(Service.id == service_id, Service.seats_available > 0)
            .values(seats_available=Service.seats_available - 1)
            .execution_options(synchronize_session=False)
        )
        return bool(res.rowcount)  # type: ignore[attr-defined]

    async def decisions_for(self, referral_id: str) -> list[Decision]:
        async with self.sessions() as s:
            return list((await s.scalars(select(Decision).where(Decision.referral_id == referral_id)
                                         .order_by(Decision.created_at))).all())
