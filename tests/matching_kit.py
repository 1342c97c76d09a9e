"""Matching's service layer against a real database, without Redis: a small directory,
events wrapped as stream messages, and the invariants every test checks."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

import matching
from matching.adapters.directory_repository import upsert_service
from matching.adapters.orm import Decision, Outbox, ReferralCase, SeatHold, Service
from matching.domain.directory_record import ServiceRecord
from matching.service_layer.handlers import Matching
from shared.db import make_engine, sessions, upgrade
from shared.events import Envelope, EventData, ReferralResponse, ReferralSubmitted, new_id, utcnow
from shared.streams.consumer import Message
from shared.vocab import SUPPORT_GROUP_KINDS

MIGRATIONS = Path(matching.__file__).parent / "migrations"

# The brief's users: a police PPA unit in Medan that takes crises, a UPTD PPA beside it,
# an online peer group for women, the PRSE economic group in Kupang.
DIRECTORY = [
    ServiceRecord(id="svc-ppa-medan", organization_id="org-polrestabes", organization_name="Polrestabes Medan",
                  name="Unit PPA Polrestabes Medan", resource_kind="police_ppa",
                  pmks=("korban_tindak_kekerasan",), areas=("12.71",), contact_id="ct-ppa-medan",
                  contact_email="ppa@medan.example", support_types=("instrumental", "informational"),
                  policies=("crisis_capable", "open_24h"), seats_available=2, seats_max=2),
    ServiceRecord(id="svc-uptd-medan", organization_id="org-uptd-medan", organization_name="UPTD PPA Kota Medan",
                  name="Pendampingan UPTD PPA Medan", resource_kind="uptd_ppa",
                  pmks=("korban_tindak_kekerasan",), areas=("12",), contact_id="ct-uptd-medan",
                  contact_email="uptd@medan.example", support_types=("emotional", "instrumental"),
                  policies=("crisis_capable",), seats_available=2, seats_max=3),
    ServiceRecord(id="svc-sebaya-daring", organization_id="org-sahabat", organization_name="Yayasan Sahabat Perempuan",
                  name="Kelompok Sebaya Daring", resource_kind="peer_support",
                  pmks=("korban_tindak_kekerasan", "perempuan_rawan_sosial_ekonomi"), areas=(), online=True,
                  contact_id="ct-sebaya", contact_email="sebaya@sahabat.example",
                  support_types=("emotional", "esteem", "network"), policies=("women_only",),
                  seats_available=2, seats_max=12, minimum_age=18),
    ServiceRecord(id="svc-prse-kupang", organization_id="org-dinsos-kupang",
                  organization_name="Dinas Sosial Kota Kupang",
                  name="Kelompok Usaha Ekonomi Produktif Perempuan Kupang", resource_kind="economic_empowerment",
                  pmks=("perempuan_rawan_sosial_ekonomi",), areas=("53.71",), contact_id="ct-prse-kupang",
                  contact_email="ueb@kupang.example", support_types=("instrumental", "network"),
                  policies=("women_only",), seats_available=1, seats_max=15, minimum_age=18),
]


def submitted(rid: str | None = None, **kw: Any) -> ReferralSubmitted:
    base: dict[str, Any] = dict(
        referral_id=rid or new_id(), agency_id="demo", pmks_category="korban_tindak_kekerasan", needs=["emotional"],
        urgency="routine", risk_flags=[], region_code="12.71.05", age_band="30-34", gender="female", languages=["id"],
        modality="any", consent_share=True,
    )
    base.update(kw)
    return ReferralSubmitted(**base)


def message(data: EventData, stream: str = "test") -> Message:
    env = Envelope.wrap(data, source="test", subject=getattr(data, "referral_id", "x"))
    return Message(stream, "0-1", env, data)


def response(case_or_event: Any, response: str, **kw: Any) -> ReferralResponse:
    """A response to the referral's current proposal (a ReferralMatched payload), from the
    receiver it was proposed to."""
    e = case_or_event
    base: dict[str, Any] = dict(
        referral_id=e.referral_id, decision_id=e.decision_id, service_id=e.service_id, response=response,
        responder_receiver_id=e.recipients[0].receiver_id, responded_at=utcnow(), urgency=e.urgency,
        risk_flags=list(getattr(e, "risk_flags", [])),
    )
    if response == "declined":
        base["reason_code"] = "no_capacity"
    if response == "completed":
        base["outcome_code"] = "goals_met"
    base.update(kw)
    return ReferralResponse(**base)


class Unrelayed:
    """Where the outbox relay would be kicked: these tests read the outbox table itself."""

    kicks = 0

    def kick(self) -> None:
        self.kicks += 1


class World:
    """Matching's service layer on a migrated database with the directory above."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: AsyncEngine = make_engine(url)
        self.sessions: async_sessionmaker[AsyncSession] = sessions(self.engine)
        self.matching = Matching(self.sessions, Unrelayed(),  # type: ignore[arg-type]
                                 hold_routine=timedelta(hours=72), hold_urgent=timedelta(hours=4),
                                 hold_grace=timedelta(minutes=2))

    async def start(self, directory: list[ServiceRecord] | None = None) -> World:
        await upgrade(self.url, MIGRATIONS)
        await self.reset(directory)
        return self

    async def reset(self, directory: list[ServiceRecord] | None = None) -> None:
        async with self.sessions() as s, s.begin():
            for table in ("seat_hold", "decision", "referral_case", "outbox", "processed_event", "service_area",
                          "service_category", "contact", "service", "organization", "receiver"):
                await s.execute(text(f"DELETE FROM {table}"))
        for rec in directory if directory is not None else DIRECTORY:
            async with self.sessions() as s, s.begin():
                await upsert_service(s, rec)

    async def close(self) -> None:
        await self.engine.dispose()

    async def send(self, *events: EventData) -> list[Envelope]:
        """Handle the events as one batch; returns what matching published."""
        async with self.sessions() as s:
            before = await s.scalar(select(func.coalesce(func.max(Outbox.id), 0)))
        await self.matching.handle([message(e) for e in events])
        return await self.published_since(before or 0)

    async def published_since(self, outbox_id: int) -> list[Envelope]:
        async with self.sessions() as s:
            rows = (await s.scalars(select(Outbox.envelope).where(Outbox.id > outbox_id).order_by(Outbox.id))).all()
        return [Envelope.model_validate_json(r) for r in rows]

    async def outbox_mark(self) -> int:
        async with self.sessions() as s:
            return int(await s.scalar(select(func.coalesce(func.max(Outbox.id), 0))) or 0)

    async def case(self, rid: str) -> ReferralCase | None:
        async with self.sessions() as s:
            return await s.get(ReferralCase, rid)

    async def seats(self) -> dict[str, tuple[int, int]]:
        async with self.sessions() as s:
            return {r.id: (r.seats_available, r.seats_max) for r in (await s.scalars(select(Service))).all()}

    async def holds(self) -> list[SeatHold]:
        async with self.sessions() as s:
            return list((await s.scalars(select(SeatHold).order_by(SeatHold.created_at, SeatHold.id))).all())

    async def decisions(self, rid: str) -> list[Decision]:
        return await self.matching.decisions_for(rid)

    async def check_invariants(self, initial: dict[str, int] | None = None) -> None:
        """What must hold after anything: seats never overbooked nor given back twice, one
        live seat per referral, a decline never followed by a proposal to the same service,
        danger never held at a support group."""
        initial = initial or {r.id: r.seats_available for r in DIRECTORY}
        seats = await self.seats()
        holds = await self.holds()
        async with self.sessions() as s:
            cases = {c.referral_id: c for c in (await s.scalars(select(ReferralCase))).all()}
            kinds = {r.id: r.resource_kind for r in (await s.scalars(select(Service))).all()}
        for sid, (available, maximum) in seats.items():
            live = sum(1 for h in holds if h.service_id == sid and h.state in ("held", "confirmed"))
            assert 0 <= available <= maximum, (sid, available, maximum)
            assert live + available == initial[sid], (sid, live, available, initial[sid])
            assert live <= maximum
        per_referral: dict[str, int] = {}
        for h in holds:
            if h.state in ("held", "confirmed"):
                per_referral[h.referral_id] = per_referral.get(h.referral_id, 0) + 1
            case = cases[h.referral_id]
            if case.urgent:
                assert kinds[h.service_id] not in SUPPORT_GROUP_KINDS, h.service_id
        assert all(n == 1 for n in per_referral.values()), per_referral
        for rid, case in cases.items():
            referral_holds = [h for h in holds if h.referral_id == rid]
            for i, h in enumerate(referral_holds):
                if h.release_reason == "declined":
                    later = referral_holds[i + 1:]
                    assert all(x.service_id != h.service_id for x in later), (rid, h.service_id)
            live = [h for h in referral_holds if h.state in ("held", "confirmed")]
            if case.state in ("proposed", "accepted", "in_progress"):
                assert len(live) == 1, (rid, case.state, live)
            else:
                assert not live, (rid, case.state, live)


def with_seats(records: list[ServiceRecord], **seats: int) -> list[ServiceRecord]:
    """The records with other seat counts (the HSDS capacity is derived anew from them)."""
    return [replace(r, seats_available=seats.get(r.id.replace("-", "_"), r.seats_available), capacities=())
            for r in records]
