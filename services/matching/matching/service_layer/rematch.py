"""Nobody left unmatched for good: an unmatched or waitlisted referral is matched again when
the directory changes in a way that could serve it, and when its agency asks.

Every directory write that leaves a matchable service changed moves the directory
generation and records a DirectoryChange, in the write's own transaction
(adapters.directory_repository.write_records). Right after the commit the writing process
runs the pass for it (Matching.kick_rematch); any replica's rematch worker takes a change
left undone (a crash between commit and pass, or an import from the command line). The pass
looks at the waiting referrals the changed services could take (their category, and their
area or online), each with its row locked, and tries each once per generation: the case
records the generation it was tried at, and writers queue on the version row, so a later
generation's pass has seen every earlier change. The decision goes out as the usual
matched / waitlisted / unmatched event, and only when it changes the case (quiet).

A seat freed (a decline, an expiry, a completion) wakes the waitlist instead (waitlist.py).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from matching.adapters.orm import DirectoryChange, Outbox, ReferralCase, Service, ServiceArea, ServiceCategory
from matching.domain.states import CaseState
from matching.service_layer import seats
from matching.service_layer.deciding import Propose
from shared.events import Envelope, ReferralRematchRequested
from shared.outbox import OutboxRelay, add_events

log = logging.getLogger("rujukan.matching")

WAITING = (CaseState.unmatched, CaseState.waitlisted)
PAGE = 100


async def requested(s: AsyncSession, e: ReferralRematchRequested, propose: Propose) -> list[Envelope]:
    """The agency asks again, having changed nothing but time: an unmatched or waitlisted
    referral is decided anew and the agency told the outcome, even when it is the same.
    Services that let an earlier proposal lapse get another chance (time has passed);
    those that declined do not. Anything else (proposed, accepted, closed, unknown) is
    left as it is."""
    case = await seats.lock_case(s, e.referral_id)
    if case is None or case.state not in WAITING or not case.facts:
        log.info("referral %s: rematch request ignored (%s)", e.referral_id, case.state if case else "unknown")
        return []
    case.lapsed_service_ids = []
    return await propose(s, case, trigger="rematch_requested")


async def pending(sessions: async_sessionmaker[AsyncSession], limit: int = 200) -> list[DirectoryChange]:
    async with sessions() as s:
        return list((await s.scalars(select(DirectoryChange).where(DirectoryChange.done.is_(False))
                                     .order_by(DirectoryChange.generation).limit(limit))).all())


async def run_pass(sessions: async_sessionmaker[AsyncSession], relay: OutboxRelay, propose: Propose,
                   changes: list[DirectoryChange]) -> int:
    """Try the waiting referrals these changes could serve, once, at the latest of their
    generations (its decision sees every earlier change: they committed before it), then
    mark them done; how many moved. An import in many batches is one pass, not one per batch."""
    if not changes:
        return 0
    generation = max(c.generation for c in changes)
    service_ids = sorted({sid for c in changes for sid in c.service_ids})
    moved = 0
    after = ""
    while True:
        async with sessions() as s:
            who = await _who_could_be_served(s, service_ids)
            if who is None:
                break
            page = (await s.scalars(
                select(ReferralCase.referral_id)
                .where(ReferralCase.state.in_(WAITING), ReferralCase.rematch_generation < generation,
                       ReferralCase.referral_id > after, who)
                .order_by(ReferralCase.referral_id).limit(PAGE))).all()
        if not page:
            break
        after = page[-1]
        for referral_id in page:
            moved += await _try_one(sessions, relay, propose, referral_id, generation)
    async with sessions() as s, s.begin():
        await s.execute(update(DirectoryChange)
                        .where(DirectoryChange.generation.in_([c.generation for c in changes]))
                        .values(done=True).execution_options(synchronize_session=False))
    if moved:
        log.info("directory generation %d: %d waiting referrals matched again", generation, moved)
    return moved


async def _try_one(sessions: async_sessionmaker[AsyncSession], relay: OutboxRelay, propose: Propose,
                   referral_id: str, generation: int) -> int:
    async with sessions() as s, s.begin():
        case = await seats.lock_case(s, referral_id, skip_locked=True)
        if case is None or case.state not in WAITING or (case.rematch_generation or 0) >= generation:
            return 0  # moved meanwhile, or this change (or a later one) already tried it
        case.rematch_generation = generation
        out = await propose(s, case, trigger="directory_changed", quiet=True)
        add_events(s, Outbox, out)
    if out:
        relay.kick()
    return 1 if out else 0


async def _who_could_be_served(s: AsyncSession, service_ids: list[str]) -> Any:
    """A condition on waiting cases: in the category of a changed, matchable service, and in
    its area (or any area, for an online one); None when none of them is matchable now."""
    services = (await s.execute(select(Service.id, Service.online)
                                .where(Service.id.in_(service_ids), Service.active))).all()
    if not services:
        return None
    ids = [x.id for x in services]
    codes = select(ServiceCategory.pmks_code).where(ServiceCategory.service_id.in_(ids))
    online = [x.id for x in services if x.online]
    areas = (await s.scalars(select(ServiceArea.region_code).distinct()
                             .where(ServiceArea.service_id.in_(ids)))).all()
    # (a superset when several services change at once: the decision itself is exact)
    under = [ReferralCase.region_code == a for a in areas] + [
        ReferralCase.region_code.startswith(a + ".") for a in areas]
    could: list[Any] = [and_(ReferralCase.pmks_category.in_(codes), or_(*under))] if under else []
    if online:
        could.append(ReferralCase.pmks_category.in_(
            select(ServiceCategory.pmks_code).where(ServiceCategory.service_id.in_(online))))
    return or_(*could) if could else None
