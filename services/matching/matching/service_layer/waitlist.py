"""The waitlist: referrals that wait for a free seat are matched again when capacity frees
(a seat released here, or an operator raised a service's capacity), and by a periodic
sweep that looks at every waiting referral in turn."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from matching.adapters.orm import Outbox, ReferralCase, Service, ServiceArea, ServiceCategory
from matching.domain.states import CaseState
from matching.service_layer import seats
from matching.service_layer.deciding import Propose
from shared.outbox import OutboxRelay, add_events

log = logging.getLogger("rujukan.matching")


@dataclass
class WaitlistRetry:
    sessions: async_sessionmaker[AsyncSession]
    relay: OutboxRelay
    propose: Propose
    _kicked: asyncio.Event = field(default_factory=asyncio.Event)
    _freed: set[str] = field(default_factory=set)
    # Where the periodic sweep goes on (per urgency): a safety net's bookmark only.
    _sweep_after: dict[bool, tuple[datetime, str] | None] = field(default_factory=dict)

    def kick(self, service_ids: Iterable[str] | None = None) -> None:
        """Capacity freed: wake the waitlist worker. Without ids, every category is looked at."""
        self._freed.update(service_ids if service_ids is not None else ["*"])
        self._kicked.set()

    async def wait_for_kick(self, timeout: float) -> set[str] | None:
        """The services kicked since the last call (None: all), after a kick or the timeout."""
        try:
            await asyncio.wait_for(self._kicked.wait(), timeout)
        except TimeoutError:
            return None
        self._kicked.clear()
        freed, self._freed = self._freed, set()
        return None if "*" in freed else freed

    async def retry(self, service_ids: Iterable[str] | None = None, limit: int = 300) -> int:
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
                    who = await _who_may_fit(s, ids)
                    if who is None:
                        return moved  # no free seat left where it was freed
                    q = select(ReferralCase.referral_id, ReferralCase.created_at).where(
                        ReferralCase.state == CaseState.waitlisted, ReferralCase.urgent.is_(urgent), who)
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

    async def _retry_one(self, referral_id: str) -> int:
        async with self.sessions() as s, s.begin():
            case = await seats.lock_case(s, referral_id, skip_locked=True)
            if case is None or case.state != CaseState.waitlisted:
                return 0
            out = await self.propose(s, case, trigger="capacity_freed", quiet=True)
            add_events(s, Outbox, out)
        if out:
            self.relay.kick()
        return 1 if out else 0


async def _who_may_fit(s: AsyncSession, service_ids: list[str] | None) -> Any:
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
