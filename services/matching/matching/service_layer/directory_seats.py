"""How a service's seats are used now, for the operators' pages: seats held for proposals
waiting for an answer, and seats confirmed (accepted referrals)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from matching.adapters.orm import SeatHold
from matching.domain.states import HoldState


@dataclass(frozen=True)
class SeatUse:
    held: int  # proposed, waiting for the receiver's answer
    confirmed: int  # accepted (in use until the referral completes or is cancelled)


async def seat_use(sessions: async_sessionmaker[AsyncSession], service_id: str) -> SeatUse:
    async with sessions() as s:
        rows = (await s.execute(
            select(SeatHold.state, func.count()).where(
                SeatHold.service_id == service_id, SeatHold.state.in_((HoldState.held, HoldState.confirmed)))
            .group_by(SeatHold.state))).all()
    counts = {str(state): int(n) for state, n in rows}
    return SeatUse(held=counts.get(HoldState.held, 0), confirmed=counts.get(HoldState.confirmed, 0))
