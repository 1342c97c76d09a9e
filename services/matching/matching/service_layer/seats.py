"""Seats and the per-referral lock: the two places where matching's replicas meet.

A seat is taken with one conditional UPDATE (`seats_available > 0`) and given back only by
the transaction that moved a hold out of a live state with another conditional UPDATE, so
however many matching processes run, a service never has more live holds than seats and a
seat is never given back twice.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from matching.adapters.orm import ReferralCase, SeatHold, Service
from matching.domain.states import LIVE_HOLDS, HoldState
from shared.events import utcnow


async def take(s: AsyncSession, service_id: str) -> bool:
    """Take one seat if one is free. Atomic in the database: in PostgreSQL a concurrent
    taker waits for the row and re-checks `seats_available > 0` after the other commits."""
    res = await s.execute(
        update(Service).where(Service.id == service_id, Service.seats_available > 0)
        .values(seats_available=Service.seats_available - 1)
        .execution_options(synchronize_session=False)
    )
    return bool(res.rowcount)  # type: ignore[attr-defined]


async def release(s: AsyncSession, hold_id: str, reason: str, *, only_held: bool = False) -> bool:
    """Move a live hold to `released` and give its seat back; False when another
    transaction released it first (then the seat is not given back a second time)."""
    states = (HoldState.held,) if only_held else LIVE_HOLDS
    res = await s.execute(
        update(SeatHold).where(SeatHold.id == hold_id, SeatHold.state.in_(states))
        .values(state=HoldState.released, release_reason=reason, released_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if not res.rowcount:  # type: ignore[attr-defined]
        return False
    service_id = await s.scalar(select(SeatHold.service_id).where(SeatHold.id == hold_id))
    # Never above the maximum: an operator may have lowered capacity while the seat was held.
    await s.execute(
        update(Service).where(Service.id == service_id, Service.seats_available < Service.seats_max)
        .values(seats_available=Service.seats_available + 1)
        .execution_options(synchronize_session=False)
    )
    return True


async def confirm(s: AsyncSession, hold_id: str) -> bool:
    res = await s.execute(
        update(SeatHold).where(SeatHold.id == hold_id, SeatHold.state == HoldState.held)
        .values(state=HoldState.confirmed).execution_options(synchronize_session=False)
    )
    return bool(res.rowcount)  # type: ignore[attr-defined]


async def live_holds(s: AsyncSession, referral_id: str) -> list[SeatHold]:
    """The referral's seats in use: one, or one per open proposal while a crisis escalates."""
    return list((await s.scalars(
        select(SeatHold).where(SeatHold.referral_id == referral_id, SeatHold.state.in_(LIVE_HOLDS))
        .order_by(SeatHold.created_at, SeatHold.id).execution_options(populate_existing=True))).all())


async def open_holds(s: AsyncSession, referral_id: str) -> list[SeatHold]:
    """The referral's proposals waiting for an answer (held seats), oldest first."""
    return [h for h in await live_holds(s, referral_id) if h.state == HoldState.held]


async def lock_case(s: AsyncSession, referral_id: str, *, skip_locked: bool = False) -> ReferralCase | None:
    """The case, read fresh with its row locked until the transaction ends.

    PostgreSQL: SELECT ... FOR UPDATE (SKIP LOCKED for sweepers, which leave a case another
    replica is working on). SQLite has one writer: a first write takes the database's write
    lock, so that what is read next is current and stays so until commit.
    """
    if s.get_bind().dialect.name == "sqlite":
        await s.execute(update(ReferralCase).where(ReferralCase.referral_id == referral_id)
                        .values(updated_at=ReferralCase.updated_at)
                        .execution_options(synchronize_session=False))
        q = select(ReferralCase).where(ReferralCase.referral_id == referral_id)
    else:
        q = (select(ReferralCase).where(ReferralCase.referral_id == referral_id)
             .with_for_update(skip_locked=skip_locked))
    return await s.scalar(q.execution_options(populate_existing=True))
