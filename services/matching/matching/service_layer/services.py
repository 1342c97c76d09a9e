"""Matching's use cases: decide on a referral and hold a seat for it, then follow the
closed loop — the receiver's responses, the agency's cancellation, holds that expire and
a waitlist served when capacity frees.

Every change to a referral happens with its case row locked (seats.lock_case) and every
seat moves with a conditional UPDATE (seats.take / seats.release), so several matching
replicas can consume, expire and retry side by side.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import and_, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from matching.adapters.orm import (
    Decision,
    Outbox,
    ProcessedEvent,
    ReferralCase,
    SeatHold,
    Service,
    ServiceArea,
    ServiceCategory,
)
from matching.domain.decision import EXCLUSIONS, ReferralFacts, Verdict, rank, why_lower
from matching.service_layer import receivers, seats
from matching.service_layer.index import DirectoryIndex
from matching.service_layer.shortlist import describe, shortlist
from shared.db import first_time
from shared.events import (
    Candidate,
    Envelope,
    EventData,
    Recipient,
    ReferralCancelled,
    ReferralMatched,
    ReferralResponse,
    ReferralResponseRefused,
    ReferralStatusChanged,
    ReferralSubmitted,
    ReferralUnmatched,
    ReferralWaitlisted,
    new_id,
    utcnow,
)
from shared.outbox import OutboxRelay, add_events
from shared.streams import Message

log = logging.getLogger("rujukan.matching")

SOURCE = "rujukan/matching"
MAX_CANDIDATES_LISTED = 25
# Where a case may be when each response arrives (the seat's own state is checked too).
RESPONSE_FROM: dict[str, frozenset[str]] = {
    "accepted": frozenset({"proposed"}),
    "declined": frozenset({"proposed"}),
    "in_progress": frozenset({"accepted"}),
    "completed": frozenset({"accepted", "in_progress"}),
}
CLOSED = frozenset({"completed", "cancelled"})
RefusalCode = Literal["hold_expired", "cancelled", "not_current", "invalid_transition"]


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


@dataclass
class Matching:
    sessions: async_sessionmaker[AsyncSession]
    relay: OutboxRelay
    hold_routine: timedelta
    hold_urgent: timedelta
    # A hold is expired this long after its deadline, so that an answer given in time at
    # the inbox (which refuses late answers itself) still reaches matching first.
    hold_grace: timedelta = timedelta(minutes=2)
    _waitlist_kick: asyncio.Event = field(default_factory=asyncio.Event)
    _freed: set[str] = field(default_factory=set)
    # Where the periodic waitlist sweep goes on (per urgency): a safety net's bookmark only.
    _sweep_after: dict[bool, tuple[datetime, str] | None] = field(default_factory=dict)
    # This replica's own in-memory index of the directory (checked against the directory
    # version on every decision).
    index: DirectoryIndex = field(default_factory=DirectoryIndex)

    # --- events ---------------------------------------------------------------------------

    async def handle(self, messages: list[Message]) -> None:
        """Apply a batch of events in one transaction; each event takes effect once."""
        freed: set[str] = set()
        async with self.sessions() as s, s.begin():
            out: list[Envelope] = []
            for m in await first_time(s, ProcessedEvent, messages):
                out.extend(await self._apply(s, m.data, freed))
            add_events(s, Outbox, out)
        if out:
            self.relay.kick()
        if freed:
            self.kick_waitlist(freed)

    async def _apply(self, s: AsyncSession, data: EventData, freed: set[str]) -> list[Envelope]:
        if isinstance(data, ReferralSubmitted):
            return await self.decide(s, data)
        if isinstance(data, ReferralResponse):
            return await self.respond(s, data, freed)
        if isinstance(data, ReferralCancelled):
            return await self.cancel(s, data, freed)
        return []

    async def decide(self, s: AsyncSession, e: ReferralSubmitted) -> list[Envelope]:
        if await seats.lock_case(s, e.referral_id) is not None:
            return []  # already decided (the same referral published twice), or cancelled before
        facts = facts_of(e)
        case = ReferralCase(referral_id=e.referral_id, facts=e.model_dump(mode="json"), state="submitted",
                            declined_service_ids=[], lapsed_service_ids=[], pmks_category=e.pmks_category,
                            region_code=e.region_code, urgent=facts.urgent)
        s.add(case)
        await s.flush()  # a replica deciding the same referral at once fails here, not later
        return await self.propose(s, case, trigger="submitted")

    async def propose(self, s: AsyncSession, case: ReferralCase, *, trigger: str,
                      quiet: bool = False) -> list[Envelope]:
        """Propose the best candidate with a free seat, holding that seat; else waitlist or
        report unmatched. `quiet`: a waitlist retry that changes nothing records nothing."""
        e = ReferralSubmitted.model_validate(case.facts)
        facts = facts_of(e)
        passed_by = (frozenset(case.declined_service_ids or []), frozenset(case.lapsed_service_ids or []))
        # The in-memory index answers when it can (see service_layer.index); should every
        # candidate of its best tiers have lost its seat meanwhile, the exact database
        # shortlist decides, as it always does for small directories and the waitlist.
        fast = await self.index.shortlist(s, facts, *passed_by)
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
                expires = now + (self.hold_urgent if facts.urgent else self.hold_routine)
                s.add(SeatHold(id=new_id(), referral_id=case.referral_id, service_id=svc.id, decision_id=decision_id,
                               receiver_id=receiver_id, state="held", expires_at=expires))
                cands = candidate_list(verdict, ranking.chosen, ranking.excluded, taken)
                case.state, case.current_decision_id, case.updated_at = "proposed", decision_id, now
                s.add(Decision(id=decision_id, referral_id=case.referral_id, outcome="proposed", service_id=svc.id,
                               reasons_id=verdict.reasons_id, reasons_en=verdict.reasons_en,
                               candidates=[c.model_dump() for c in cands], trigger=trigger, created_at=now))
                log.info("referral %s proposed to %s (%s)", case.referral_id, svc.id, trigger)
                return [Envelope.wrap(ReferralMatched(
                    referral_id=case.referral_id, decision_id=decision_id, service_id=svc.id,
                    service_name=about.name, organization_name=about.organization_name,
                    resource_kind=svc.resource_kind, pmks_category=e.pmks_category,
                    region_code=e.region_code, urgency=e.urgency, risk_flags=e.risk_flags, hold_expires_at=expires,
                    reasons_id=verdict.reasons_id, reasons_en=verdict.reasons_en,
                    recipients=[Recipient(receiver_id=receiver_id, contact_id=about.contact_id,
                                          email=about.contact_email)],
                    candidates=cands,
                ), source=SOURCE, subject=case.referral_id)]

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
            state = "waitlisted"
            n = len(full) + len(taken)
            reasons_id = [f"semua layanan yang sesuai penuh ({n}); menunggu kursi kosong"]
            reasons_en = [f"every suitable service is full ({n}); waiting for a free seat"]
            cls: type[ReferralUnmatched | ReferralWaitlisted] = ReferralWaitlisted
        else:
            state = "unmatched"
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
        case.state, case.current_decision_id, case.updated_at = state, None, now
        s.add(Decision(id=decision_id, referral_id=case.referral_id, outcome=state, service_id=None,
                       reasons_id=reasons_id, reasons_en=reasons_en, candidates=[c.model_dump() for c in cands],
                       trigger=trigger, created_at=now))
        log.info("referral %s %s (%s)", case.referral_id, state, trigger)
        return [Envelope.wrap(cls(
            referral_id=case.referral_id, decision_id=decision_id, pmks_category=e.pmks_category,
            region_code=e.region_code, urgency=e.urgency, risk_flags=e.risk_flags, reasons_id=reasons_id,
            reasons_en=reasons_en, candidates=cands,
        ), source=SOURCE, subject=case.referral_id)]

    async def respond(self, s: AsyncSession, e: ReferralResponse, freed: set[str]) -> list[Envelope]:
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
        if case.state == "cancelled":
            return refused("cancelled")
        if hold.state == "released" and hold.release_reason == "expired":
            return [] if e.response == "declined" else refused("hold_expired")
        if hold.state == "released" and hold.release_reason == e.response == "declined":
            return []  # the same decline twice: it took effect once
        if case.current_decision_id != e.decision_id:
            return refused("not_current")
        if case.state == e.response:
            return []  # the same answer twice: it took effect once
        if case.state not in RESPONSE_FROM[e.response]:
            return refused("invalid_transition")

        svc = await s.get(Service, hold.service_id)
        changed = Envelope.wrap(ReferralStatusChanged(
            referral_id=e.referral_id, decision_id=e.decision_id, service_id=e.service_id,
            service_name=svc.name if svc else "", organization_name=svc.organization.name if svc else "",
            status=e.response, reason_code=e.reason_code, outcome_code=e.outcome_code,
            actor=f"receiver:{e.responder_receiver_id}", at=e.responded_at, urgency=e.urgency, risk_flags=e.risk_flags,
        ), source=SOURCE, subject=e.referral_id)
        case.updated_at = utcnow()
        if e.response == "accepted":
            if not await seats.confirm(s, hold.id):
                return refused("invalid_transition")
            case.state = "accepted"
            return [changed]
        if e.response == "in_progress":
            case.state = "in_progress"
            return [changed]
        if e.response == "completed":
            if await seats.release(s, hold.id, "completed"):
                freed.add(hold.service_id)
            case.state, case.current_decision_id = "completed", None
            return [changed]
        # declined: the seat goes back and the next candidate is proposed at once.
        if not await seats.release(s, hold.id, "declined", only_held=True):
            return refused("invalid_transition")
        freed.add(hold.service_id)
        return [changed, *await self.propose(s, case, trigger="declined")]

    async def cancel(self, s: AsyncSession, e: ReferralCancelled, freed: set[str]) -> list[Envelope]:
        """The agency cancelled: release the seat. Intake has already recorded it and notify
        tells the receiver, both from the same event; matching has nothing to add."""
        case = await seats.lock_case(s, e.referral_id)
        if case is None:
            # Cancelled before its submission reached us (it waits in a longer lane): keep a
            # tombstone so that the submission, when it comes, is not decided.
            s.add(ReferralCase(referral_id=e.referral_id, facts={}, state="cancelled", declined_service_ids=[],
                               lapsed_service_ids=[], urgent=False))
            return []
        if case.state in CLOSED:
            return []
        hold = await seats.live_hold(s, e.referral_id)
        if hold is not None and await seats.release(s, hold.id, "cancelled"):
            freed.add(hold.service_id)
        case.state, case.current_decision_id, case.updated_at = "cancelled", None, utcnow()
        log.info("referral %s cancelled by its agency", e.referral_id)
        return []

    # --- holds that expire ------------------------------------------------------------------

    async def expire_due(self, now: datetime | None = None, limit: int = 100) -> int:
        """Release holds whose deadline (plus grace) has passed and propose the next
        candidate. Safe with several replicas: a case another replica is working on is
        skipped (SKIP LOCKED), and a hold is released by one transaction only."""
        cutoff = (now or utcnow()) - self.hold_grace
        async with self.sessions() as s:
            due = (await s.execute(
                select(SeatHold.id, SeatHold.referral_id).join(
                    ReferralCase, ReferralCase.referral_id == SeatHold.referral_id)
                .where(SeatHold.state == "held", SeatHold.expires_at < cutoff)
                .order_by(ReferralCase.urgent.desc(), SeatHold.expires_at).limit(limit)
            )).all()
        expired = 0
        for hold_id, referral_id in due:
            freed: set[str] = set()
            async with self.sessions() as s, s.begin():
                case = await seats.lock_case(s, referral_id, skip_locked=True)
                hold = await s.get(SeatHold, hold_id, populate_existing=True)
                if case is None or hold is None or hold.state != "held" or hold.expires_at >= cutoff:
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
                if case.current_decision_id == hold.decision_id:
                    case.lapsed_service_ids = [*(case.lapsed_service_ids or []), hold.service_id]
                    out.extend(await self.propose(s, case, trigger="hold_expired"))
                add_events(s, Outbox, out)
            self.relay.kick()
            self.kick_waitlist(freed)
        if expired:
            log.info("released %d expired holds", expired)
        return expired

    # --- the waitlist ------------------------------------------------------------------------

    def kick_waitlist(self, service_ids: Iterable[str] | None = None) -> None:
        """Capacity freed (a seat released here, or an operator raised a service's
        capacity): wake the waitlist worker. Without ids, every category is looked at."""
        self._freed.update(service_ids if service_ids is not None else ["*"])
        self._waitlist_kick.set()

    async def wait_for_waitlist_kick(self, timeout: float) -> set[str] | None:
        """The services kicked since the last call (None: all), after a kick or the timeout."""
        try:
            await asyncio.wait_for(self._waitlist_kick.wait(), timeout)
        except TimeoutError:
            return None
        self._waitlist_kick.clear()
        freed, self._freed = self._freed, set()
        return None if "*" in freed else freed

    async def retry_waitlist(self, service_ids: Iterable[str] | None = None, limit: int = 300) -> int:
        """Match waitlisted referrals again, urgent first then oldest. For freed services:
        the referrals their category and area could take, until their seats are gone. For
        the periodic sweep (no ids): any in a category with a free seat somewhere, `limit`
        at a time, going on where the last sweep stopped, so that every waiting referral is
        looked at in turn. Returns how many moved (proposed, or found unmatchable now)."""
        ids = list(service_ids) if service_ids is not None else None
        moved = examined = 0
        for urgent in (True, False):
            after = self._sweep_after.get(urgent) if ids is None else None
            while examined < limit:
                async with self.sessions() as s:
                    who = await self._who_may_fit(s, ids)
                    if who is None:
                        return moved  # no free seat left where it was freed
                    q = select(ReferralCase.referral_id, ReferralCase.created_at).where(
                        ReferralCase.state == "waitlisted", ReferralCase.urgent.is_(urgent), who)
                    if after is not None:
                        q = q.where(tuple_(ReferralCase.created_at, ReferralCase.referral_id) > after)
                    page = (await s.execute(q.order_by(ReferralCase.created_at, ReferralCase.referral_id)
                                            .limit(min(100, limit - examined)))).all()
                if not page:
                    after = None  # the end: the next sweep starts again from the oldest
                    break
                after = (page[-1].created_at, page[-1].referral_id)
                for referral_id, _ in page:
                    examined += 1
                    moved += await self._retry_one(referral_id)
            if ids is None:
                self._sweep_after[urgent] = after
        if moved:
            log.info("waitlist: %d referrals matched again", moved)
        return moved

    async def _who_may_fit(self, s: AsyncSession, service_ids: list[str] | None) -> Any:
        """A condition on waiting cases: in a category (and, for freed services, an area or
        online) where a service has a free seat now; None when there is no such seat."""
        free = select(Service.id, Service.online).where(Service.active, Service.seats_available > 0)
        if service_ids is not None:
            free = free.where(Service.id.in_(service_ids))
        services = (await s.execute(free)).all()
        if not services:
            return None
        codes = select(ServiceCategory.pmks_code).where(ServiceCategory.service_id.in_([x.id for x in services]))
        if service_ids is None or any(x.online for x in services):
            return ReferralCase.pmks_category.in_(codes)
        areas = (await s.scalars(select(ServiceArea.region_code).distinct()
                                 .where(ServiceArea.service_id.in_([x.id for x in services])))).all()
        if not areas:
            return None
        under = or_(*(or_(ReferralCase.region_code == a, ReferralCase.region_code.startswith(a + "."))
                      for a in areas))
        return and_(ReferralCase.pmks_category.in_(codes), under)

    async def _retry_one(self, referral_id: str) -> int:
        async with self.sessions() as s, s.begin():
            case = await seats.lock_case(s, referral_id, skip_locked=True)
            if case is None or case.state != "waitlisted":
                return 0
            out = await self.propose(s, case, trigger="capacity_freed", quiet=True)
            add_events(s, Outbox, out)
        if out:
            self.relay.kick()
        return 1 if out else 0

    # --- reading ------------------------------------------------------------------------------

    async def decisions_for(self, referral_id: str) -> list[Decision]:
        async with self.sessions() as s:
            return list((await s.scalars(select(Decision).where(Decision.referral_id == referral_id)
                                         .order_by(Decision.created_at, Decision.id))).all())
