"""An agency's referrals as its staff look for them: by status, PMKS category and the day
they were submitted (in the agency's zone), newest first, a page at a time."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import and_, or_, select

from intake.adapters.orm import Referral
from intake.service_layer.referrals import Intake
from intake.service_layer.views import ReferralPage, ReferralView, referral_view
from shared.events import utcnow
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


# --- polling: what changed since -------------------------------------------------------------


class BadCursor(ValueError):
    pass


def encode_cursor(updated_at: datetime, referral_id: str) -> str:
    raw = f"{updated_at.astimezone(UTC).isoformat()}|{referral_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, bar, rid = raw.partition("|")
        when = datetime.fromisoformat(at)
    except (ValueError, UnicodeDecodeError):
        raise BadCursor(cursor) from None
    if when.tzinfo is None or not bar or len(rid) > 32:
        raise BadCursor(cursor)
    return when, rid


async def changed_since(intake: Intake, agency_id: str, *, since: datetime | None, cursor: str | None,
                        status: ReferralStatus | None, external_ref: str | None, limit: int,
                        settle_s: float) -> ReferralPage:
    """The agency's referrals in the order they last changed, (updated_at, id), after the
    cursor (or from `since`, inclusive). Only changes older than `settle_s` are answered: a
    transaction that stamped its change a moment before another's but committed after it
    is then in neither page's past, so a client that follows `next_cursor` misses nothing."""
    q = select(Referral).where(Referral.agency_id == agency_id,
                               Referral.updated_at <= utcnow() - timedelta(seconds=settle_s))
    position: tuple[datetime, str] | None = None
    if cursor is not None:
        position = decode_cursor(cursor)
        at, rid = position
        q = q.where(or_(Referral.updated_at > at, and_(Referral.updated_at == at, Referral.id > rid)))
    elif since is not None:
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
        q = q.where(Referral.updated_at >= since)
    if status:
        q = q.where(Referral.status == status)
    if external_ref:
        q = q.where(Referral.external_ref == external_ref)
    async with intake.sessions() as s:
        rows = list((await s.scalars(q.order_by(Referral.updated_at, Referral.id).limit(limit + 1))).all())
    page = rows[:limit]
    if page:
        next_cursor: str | None = encode_cursor(page[-1].updated_at, page[-1].id)
    elif cursor is not None:
        next_cursor = cursor
    else:  # nothing yet: the next poll starts where this one did (at `since`, before any id)
        next_cursor = encode_cursor(since or datetime(1970, 1, 1, tzinfo=UTC), "")
    return ReferralPage(items=[referral_view(r) for r in page], limit=limit, offset=0, next_cursor=next_cursor,
                        has_more=len(rows) > limit)


async def by_external_ref(intake: Intake, agency_id: str, external_ref: str, status: ReferralStatus | None,
                          limit: int, offset: int) -> ReferralPage:
    """The list as before (newest first), narrowed to one external_ref."""
    q = select(Referral).where(Referral.agency_id == agency_id, Referral.external_ref == external_ref)
    if status:
        q = q.where(Referral.status == status)
    async with intake.sessions() as s:
        rows = list((await s.scalars(q.order_by(Referral.id.desc()).limit(limit).offset(offset))).all())
    return ReferralPage(items=[referral_view(r) for r in rows], limit=limit, offset=offset)
