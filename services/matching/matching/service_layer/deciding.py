"""Deciding on a referral: propose the best candidate with a free seat, holding that seat;
else the referral waits for one (waitlisted) or nothing suits it (unmatched). Every
decision is recorded with the candidates considered and why each lost.

Every seat moves with a conditional UPDATE (seats.take), so several matching replicas can
decide side by side.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from matching.adapters.orm import Decision, ReferralCase, SeatHold
from matching.domain.decision import EXCLUSIONS, ReferralFacts, Verdict, rank, why_lower
from matching.domain.states import CaseState, HoldState
from matching.service_layer import receivers, seats
from matching.service_layer.index import DirectoryIndex
from matching.service_layer.shortlist import describe, shortlist
from shared.events import (
    Candidate,
    Envelope,
    Recipient,
    ReferralMatched,
    ReferralSubmitted,
    ReferralUnmatched,
    ReferralWaitlisted,
    new_id,
    utcnow,
)

log = logging.getLogger("rujukan.matching")

SOURCE = "rujukan/matching"
MAX_CANDIDATES_LISTED = 25


@dataclass(frozen=True)
class Decided:
    """A first decision: its events, and what the time-to-decision metric needs (closed sets)."""

    events: list[Envelope]
    urgency: str
    outcome: str  # the CaseState it left the case in: proposed, waitlisted or unmatched
    submitted_at: datetime | None
    decided_at: datetime


class Propose(Protocol):
    """`propose` with this replica's index and hold durations."""

    async def __call__(self, s: AsyncSession, case: ReferralCase, *, trigger: str, quiet: bool = False,
                       proposed: frozenset[str] = frozenset(), only_if_found: bool = False) -> list[Envelope]: ...


def facts_of(e: ReferralSubmitted) -> ReferralFacts:
    return ReferralFacts(
        referral_id=e.referral_id, pmks_category=e.pmks_category, region_code=e.region_code,
        age_band=e.age_band, gender=e.gender, languages=tuple(e.languages), modality=e.modality,
        urgency=e.urgency, risk_flags=tuple(e.risk_flags), needs=tuple(e.needs),
    )


def candidate_list(chosen: Verdict | None, eligible: list[Verdict], excluded: list[Verdict],
                   taken: set[str]) -> list[Candidate]:
    """The candidates considered, the chosen one first, each loser with why it lost."""
    out = []
    if chosen is not None:
        out.append(Candidate(service_id=chosen.service.id, score=chosen.composite, outcome="chosen",
                             reasons_id=chosen.reasons_id, reasons_en=chosen.reasons_en))
    for v in eligible:
        if v is chosen:
            continue
        if v.service.id in taken or chosen is None:
            why_id, why_en = EXCLUSIONS["taken"]
        else:
            why_id, why_en = why_lower(chosen, v)
        out.append(Candidate(service_id=v.service.id, score=v.composite, outcome=f"ranked lower: {why_en}",
                             reasons_id=[why_id], reasons_en=[why_en]))
    for v in excluded:
        out.append(Candidate(service_id=v.service.id, outcome=v.excluded_en,
                             reasons_id=[v.excluded_id], reasons_en=[v.excluded_en]))
    return out[:MAX_CANDIDATES_LISTED]


async def decide(s: AsyncSession, e: ReferralSubmitted, propose: Propose,
                 submitted_at: datetime | None = None) -> Decided | None:
    """The first decision on a referral; None when it was decided (the same referral
    published twice) or cancelled before."""
    if await seats.lock_case(s, e.referral_id) is not None:
        return None
    facts = facts_of(e)
    case = ReferralCase(referral_id=e.referral_id, facts=e.model_dump(mode="json"), state=CaseState.submitted,
                        declined_service_ids=[], lapsed_service_ids=[], pmks_category=e.pmks_category,
                        region_code=e.region_code, urgent=facts.urgent, submitted_at=submitted_at)
    s.add(case)
    await s.flush()  # a replica deciding the same referral at once fails here, not later
    events = await propose(s, case, trigger="submitted")
    return Decided(events=events, urgency=e.urgency, outcome=case.state, submitted_at=submitted_at,
                   decided_at=case.updated_at)


async def propose(s: AsyncSession, case: ReferralCase, *, index: DirectoryIndex, hold_routine: timedelta,
                  hold_urgent: timedelta, crisis_ack: timedelta, trigger: str, quiet: bool = False,
                  proposed: frozenset[str] = frozenset(), only_if_found: bool = False) -> list[Envelope]:
    """Propose the best candidate with a free seat, holding that seat; else waitlist or
    report unmatched. `quiet`: a retry that changes nothing records nothing. `proposed`:
    services this referral is proposed to now, passed over (an escalation asks another);
    `only_if_found`: when nobody can take it, change nothing and return nothing.

    A crisis proposal escalates if nobody accepts it within `crisis_ack` (escalation.py)."""
    e = ReferralSubmitted.model_validate(case.facts)
    facts = facts_of(e)
    passed_by = (frozenset(case.declined_service_ids or []), frozenset(case.lapsed_service_ids or []), proposed)
    # The in-memory index answers when it can (see service_layer.index); should every
    # candidate of its best tiers have lost its seat meanwhile, the exact database
    # shortlist decides, as it always does for small directories and the waitlist.
    fast = await index.shortlist(s, facts, passed_by[0], passed_by[1] | proposed)
    decision_id = new_id()
    taken: set[str] = set()
    now = utcnow()
    for views in ([fast] if fast is not None else []) + [None]:
        if views is None:
            views = (await shortlist(s, facts)).views
        ranking = rank(facts, views, *passed_by)
        for verdict in ranking.chosen:
            if not await seats.take(s, verdict.service.id):
                taken.add(verdict.service.id)  # another referral took the last seat meanwhile
                continue
            svc = verdict.service
            about = await describe(s, svc.id)
            receiver_id = await receivers.of_service(s, svc.id)
            expires = now + (hold_urgent if facts.urgent else hold_routine)
            s.add(SeatHold(id=new_id(), referral_id=case.referral_id, service_id=svc.id, decision_id=decision_id,
                           receiver_id=receiver_id, state=HoldState.held, expires_at=expires))
            cands = candidate_list(verdict, ranking.chosen, ranking.excluded, taken)
            case.state, case.current_decision_id, case.updated_at = CaseState.proposed, decision_id, now
            case.escalate_after = now + crisis_ack if facts.urgent else None
            s.add(Decision(id=decision_id, referral_id=case.referral_id, outcome=CaseState.proposed, service_id=svc.id,
                           reasons_id=verdict.reasons_id, reasons_en=verdict.reasons_en,
                           candidates=[c.model_dump() for c in cands], trigger=trigger, created_at=now))
            log.info("referral %s proposed to %s (%s)", case.referral_id, svc.id, trigger)
            return [Envelope.wrap(ReferralMatched(
                referral_id=case.referral_id, decision_id=decision_id, service_id=svc.id,
                service_name=about.name, organization_name=about.organization_name,
                resource_kind=svc.resource_kind, pmks_category=e.pmks_category,
                region_code=e.region_code, urgency=e.urgency, risk_flags=e.risk_flags, hold_expires_at=expires,
                submitted_at=case.submitted_at, reasons_id=verdict.reasons_id, reasons_en=verdict.reasons_en,
                recipients=[Recipient(receiver_id=receiver_id, contact_id=about.contact_id,
                                      email=about.contact_email, phone=about.reach.phone,
                                      webhook_url=about.reach.webhook_url, channels=list(about.reach.channels))],
                candidates=cands,
            ), source=SOURCE, subject=case.referral_id)]

    if only_if_found:
        return []
    # Nobody can take it now. If some were refused only for want of a seat, it waits; the
    # online services without a seat were left out of the shortlist: are any of them suitable?
    if not taken and not any(v.excluded_code == "full" for v in ranking.excluded):
        full_online = await shortlist(s, facts, full_online=True)
        extra = rank(facts, full_online.views, *passed_by)
        ranking.excluded += extra.excluded
    # (a service taken by another referral during the first look is counted once)
    full = [v for v in ranking.excluded if v.excluded_code == "full" and v.service.id not in taken]
    passed = [v for v in ranking.excluded if v.excluded_code in ("declined", "lapsed")]
    cands = candidate_list(None, ranking.chosen, ranking.excluded, taken)
    if full or taken:
        state = CaseState.waitlisted
        n = len(full) + len(taken)
        reasons_id = [f"semua layanan yang sesuai penuh ({n}); menunggu kursi kosong"]
        reasons_en = [f"every suitable service is full ({n}); waiting for a free seat"]
        cls: type[ReferralUnmatched | ReferralWaitlisted] = ReferralWaitlisted
    else:
        state = CaseState.unmatched
        if passed:
            reasons_id = [f"semua layanan yang sesuai ({len(passed)}) sudah menolak atau tidak menanggapi"]
            reasons_en = [f"every suitable service ({len(passed)}) declined or did not answer"]
        elif ranking.excluded:
            reasons_id = [f"tidak ada layanan yang sesuai: {len(ranking.excluded)} kandidat ditolak"]
            reasons_en = [f"no suitable service: {len(ranking.excluded)} candidates refused"]
        else:
            reasons_id = ["tidak ada layanan yang sesuai di wilayah ini"]
            reasons_en = ["no suitable service in this area"]
        cls = ReferralUnmatched
    if quiet and state == case.state:
        return []
    case.state, case.current_decision_id, case.updated_at, case.escalate_after = state, None, now, None
    s.add(Decision(id=decision_id, referral_id=case.referral_id, outcome=state, service_id=None,
                   reasons_id=reasons_id, reasons_en=reasons_en, candidates=[c.model_dump() for c in cands],
                   trigger=trigger, created_at=now))
    log.info("referral %s %s (%s)", case.referral_id, state, trigger)
    return [Envelope.wrap(cls(
        referral_id=case.referral_id, decision_id=decision_id, pmks_category=e.pmks_category,
        region_code=e.region_code, urgency=e.urgency, risk_flags=e.risk_flags, reasons_id=reasons_id,
        reasons_en=reasons_en, candidates=cands,
    ), source=SOURCE, subject=case.referral_id)]
