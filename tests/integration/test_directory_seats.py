"""A provider declaring a new capacity while matchers take seats: the live count stays what
was declared less the seats held, whatever the interleaving (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import random

from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError

from matching.adapters import directory_repository
from matching.adapters.orm import SeatHold, Service
from matching.bootstrap import MIGRATIONS
from matching.domain.directory_record import ServiceRecord
from matching.service_layer import directory
from shared.db import make_engine, sessions, upgrade
from shared.events import new_id, utcnow

SERVICE = ServiceRecord(id="svc-kds", organization_id="org-dinsos", organization_name="Dinas Sosial",
                        name="Kelompok Dukungan Sebaya", resource_kind="peer_support", pmks=("fakir_miskin",),
                        areas=("12.71",), contact_id="ct", contact_email="kds@dinsos.example",
                        seats_available=10, seats_max=40)


async def test_capacity_declared_during_seat_taking_never_overbooks(database_url: str) -> None:
    await upgrade(database_url, MIGRATIONS)
    engine = make_engine(database_url)
    db = sessions(engine)
    try:
        async with db() as s, s.begin():
            await directory_repository.write_records(s, [SERVICE])
        declared: list[int] = []

        async def take() -> None:
            """What a matcher does: one seat with a conditional UPDATE, and its hold."""
            for attempt in range(20):
                try:
                    async with db() as s, s.begin():
                        res = await s.execute(
                            update(Service).where(Service.id == "svc-kds", Service.seats_available > 0)
                            .values(seats_available=Service.seats_available - 1))
                        if res.rowcount:  # type: ignore[attr-defined]
                            s.add(SeatHold(id=new_id(), referral_id=new_id(), service_id="svc-kds",
                                           decision_id=new_id(), state="held", expires_at=utcnow()))
                    return
                except DBAPIError:  # SQLite busy or a PostgreSQL deadlock: a matcher retries too
                    await asyncio.sleep(0.01 * attempt)

        async def declare(available: int) -> None:
            await asyncio.sleep(random.random() * 0.05)
            async with db() as s, s.begin():
                await directory.set_capacity(s, "svc-kds", available, 40)
                declared.append(available)  # under the row lock: in commit order

        rnd = random.Random(7)
        jobs = [take() for _ in range(30)] + [declare(rnd.randint(5, 25)) for _ in range(6)]
        rnd.shuffle(jobs)
        await asyncio.gather(*jobs)

        async with db() as s:
            live = await s.scalar(select(Service.seats_available).where(Service.id == "svc-kds"))
            held = await s.scalar(select(func.count()).select_from(SeatHold).where(SeatHold.service_id == "svc-kds"))
        assert held is not None
        assert held > 0
        assert live == max(0, declared[-1] - held), (live, declared, held)
    finally:
        await engine.dispose()
