"""An agency's referrals as its staff look for them: by status, PMKS category and the day
they were submitted (in the agency's zone), newest first, a page at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import select

from intake.adapters.orm import Referral
from intake.service_layer.referrals import Intake
from intake.service_layer.views import ReferralView, referral_view
from shared.vocab import ReferralStatus
from shared.web.zones import WIB, ZONES, zone_of


@dataclass(frozen=True)
class ReferralFilter:
    status: ReferralStatus | None = None
    category: str | None = None
    since: date | None = None  # submitted on or after this day
    until: date | None = None  # submitted on or before this day


@dataclass(frozen=True)
class Found:
    items: list[ReferralView]
    more: bool  # another page follows
    zone: str  # WIB, WITA or WIT: the days of the filter are days there


def _start_of(day: date, zone: str) -> datetime:
    return datetime.combine(day, time(0), tzinfo=ZONES[zone]).astimezone(UTC)


async def agency_zone(intake: Intake, agency_id: str) -> str:
    """The agency's zone: the one of the region of its latest referral (WIB without any)."""
    async with intake.sessions() as s:
        region = await s.scalar(select(Referral.region_code).where(Referral.agency_id == agency_id)
                                .order_by(Referral.id.desc()).limit(1))
    return zone_of(region) if region else WIB


async def search(intake: Intake, agency_id: str, f: ReferralFilter, limit: int, offset: int) -> Found:
    zone = await agency_zone(intake, agency_id)
    q = select(Referral).where(Referral.agency_id == agency_id)
    if f.status:
        q = q.where(Referral.status == f.status)
    if f.category:
        q = q.where(Referral.pmks_category == f.category)
    if f.since:
        q = q.where(Referral.created_at >= _start_of(f.since, zone))
    if f.until:
        q = q.where(Referral.created_at < _start_of(f.until + timedelta(days=1), zone))
    async with intake.sessions() as s:
        rows = list((await s.scalars(q.order_by(Referral.id.desc()).limit(limit + 1).offset(offset))).all())
    return Found([referral_view(r) for r in rows[:limit]], len(rows) > limit, zone)
