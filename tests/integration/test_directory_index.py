"""Matching's in-memory directory index (service_layer.index), SQLite and PostgreSQL:
- it decides as the exact database shortlist does (same chosen service, same ranked list);
- a directory change made through the directory's writes, by this or another process, is
  seen by the very next decision (the index is rebuilt when the directory version moved);
- seats are never taken from it: a service emptied behind its back is not proposed."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

from sqlalchemy import select, update

from matching.adapters import directory_repository
from matching.adapters.orm import DirectoryVersion, Service
from matching.bootstrap import MIGRATIONS
from matching.domain.decision import ReferralFacts, ServiceView, rank
from matching.domain.directory_record import ServiceRecord
from matching.service_layer import directory
from matching.service_layer.index import ENOUGH, DirectoryIndex
from matching.service_layer.shortlist import shortlist
from shared.db import make_engine, sessions, upgrade

ROOT = Path(__file__).resolve().parents[2]
CATEGORY = "fakir_miskin"


def make_directory(n: int, seed: int = 3) -> list[ServiceRecord]:
    """Online services of one category with mixed facts, and a few in-person ones in Medan."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        online = i >= 8
        out.append(ServiceRecord(
            id=f"svc-{i:03d}", organization_id="org-dinsos", organization_name="Dinas Sosial", name=f"Layanan {i}",
            resource_kind=rnd.choice(["peer_support", "social_worker", "counselling"]), pmks=(CATEGORY,),
            areas=("31.74",) if online else rnd.choice([("12.71.05",), ("12.71",), ("12",)]),
            contact_id=f"ct-{i}", contact_email=f"svc{i}@dinsos.example", online=online,
            support_types=tuple(rnd.sample(["counselling", "peer_group", "legal", "shelter"], rnd.randint(0, 2))),
            languages=tuple(rnd.sample(["id", "bbc", "jv"], rnd.randint(1, 2))),
            policies=("women_only",) if rnd.random() < 0.2 else (),
            minimum_age=rnd.choice([None, 18]), maximum_age=rnd.choice([None, 60]),
            seats_available=rnd.randint(0, 5), seats_max=5))
    return out


def facts(i: int, **kw: object) -> ReferralFacts:
    rnd = random.Random(i)
    base: dict[str, object] = dict(
        referral_id=f"ref-{i}", pmks_category=CATEGORY, region_code="12.71.05",
        age_band=rnd.choice(["15-19", "25-29", "60-64"]), gender=rnd.choice(["female", "male"]),
        languages=tuple(rnd.sample(["id", "bbc", "jv"], rnd.randint(1, 2))), modality=rnd.choice(["any", "online"]),
        urgency="routine", needs=tuple(rnd.sample(["counselling", "legal", "shelter"], rnd.randint(0, 2))))
    base.update(kw)
    return ReferralFacts(**base)  # type: ignore[arg-type]


def outcome(f: ReferralFacts, views: list[ServiceView]) -> list[tuple[str, tuple[float, ...]]]:
    """What a decision shows: the eligible candidates best first, as many as it lists."""
    return [(v.service.id, v.score) for v in rank(f, views).chosen[:ENOUGH]]


async def test_index_decides_as_the_database_shortlist(database_url: str) -> None:
    await upgrade(database_url, MIGRATIONS)
    engine = make_engine(database_url)
    db = sessions(engine)
    index = DirectoryIndex()
    try:
        async with db() as s, s.begin():
            await directory_repository.write_records(s, make_directory(160))
        answered = 0
        for i in range(40):
            f = facts(i)
            async with db() as s, s.begin():
                fast = await index.shortlist(s, f, frozenset(), frozenset())
                exact = (await shortlist(s, f)).views
            if fast is None:
                continue  # too few with a seat: the database shortlist answers, as before
            answered += 1
            assert outcome(f, fast) == outcome(f, exact), f
        assert answered >= 10  # the fast path was taken, and agreed each time
    finally:
        await engine.dispose()


CHANGE = textwrap.dedent("""
    import asyncio, sys
    from matching.service_layer import directory
    from shared.db import make_engine, sessions

    async def main(url: str, service_id: str) -> None:
        engine = make_engine(url)
        try:
            async with sessions(engine)() as s, s.begin():
                await directory.set_status(s, service_id, "inactive")
        finally:
            await engine.dispose()

    asyncio.run(main(sys.argv[1], sys.argv[2]))
""")


async def test_a_change_by_another_process_is_seen_by_the_next_decision(database_url: str) -> None:
    await upgrade(database_url, MIGRATIONS)
    engine = make_engine(database_url)
    db = sessions(engine)
    index = DirectoryIndex()
    f = facts(1, modality="any", languages=("id", "jv", "bbc"), gender="female", age_band="25-29")
    try:
        records = make_directory(160)
        async with db() as s, s.begin():
            await directory_repository.write_records(s, records)
            # Every service with a seat, so that the fast path answers throughout.
            await s.execute(update(Service).values(seats_available=3))

        async def best() -> str:
            async with db() as s, s.begin():
                views = await index.shortlist(s, f, frozenset(), frozenset())
            assert views is not None
            return rank(f, views).chosen[0].service.id

        first = await best()
        before = index.snapshot
        assert before is not None
        # Another process (its own engine, its own index if it had one) deactivates it.
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CHANGE, database_url, first, cwd=ROOT, env={**os.environ},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        second = await best()
        assert second != first
        after = index.snapshot
        assert after is not None
        assert after is not before
        assert after.version > before.version

        # A change made here, through an import of the edited record: seen at once too.
        rec = next(r for r in records if r.id == second)
        async with db() as s, s.begin():
            written = await directory_repository.write_records(s, [ServiceRecord(**{
                **{k: getattr(rec, k) for k in ("id", "organization_id", "organization_name", "name",
                                                 "resource_kind", "pmks", "contact_id", "contact_email",
                                                 "online", "support_types", "policies", "minimum_age",
                                                 "maximum_age", "seats_available", "seats_max")},
                "areas": ("31.74",), "languages": ("en",)})])
        assert written[0].outcome == "updated"
        third = await best()
        assert third not in (first, second)

        # Re-importing what is there changes nothing, and does not make replicas rebuild.
        latest = index.snapshot
        assert latest is not None
        assert latest.version == after.version + 1
        version = latest.version
        async with db() as s, s.begin():
            again = [r for r in records if r.id not in (first, second)][:5]
            assert {w.outcome for w in await directory_repository.write_records(s, again)} == {"unchanged"}
            assert await s.scalar(select(DirectoryVersion.version)) == version
    finally:
        await engine.dispose()


async def test_seats_are_read_live_not_from_the_index(database_url: str) -> None:
    """The index never holds seat counts: a service emptied since it was built (a seat
    taken by another replica, no directory write) is not among the candidates."""
    await upgrade(database_url, MIGRATIONS)
    engine = make_engine(database_url)
    db = sessions(engine)
    index = DirectoryIndex()
    f = facts(2, modality="any", languages=("id", "jv", "bbc"), gender="female", age_band="25-29")
    try:
        async with db() as s, s.begin():
            await directory_repository.write_records(s, make_directory(160))
            await s.execute(update(Service).values(seats_available=3))
        async with db() as s, s.begin():
            views = await index.shortlist(s, f, frozenset(), frozenset())
        assert views is not None
        top = rank(f, views).chosen[0].service.id
        version = index.snapshot.version if index.snapshot else None
        async with db() as s, s.begin():
            await s.execute(update(Service).where(Service.id == top).values(seats_available=0))
        async with db() as s, s.begin():
            views = await index.shortlist(s, f, frozenset(), frozenset())
        assert views is not None
        assert top not in {v.id for v in views}
        assert index.snapshot is not None
        assert index.snapshot.version == version  # not rebuilt: read live
    finally:
        await engine.dispose()


async def test_a_capacity_change_is_seen_without_rebuilding_the_index(database_url: str) -> None:
    """Declaring capacity moves live seats only (read live by every decision): the index of
    fixed facts is not rebuilt for it, while a change of facts does move the version."""
    await upgrade(database_url, MIGRATIONS)
    engine = make_engine(database_url)
    db = sessions(engine)
    index = DirectoryIndex()
    f = facts(2, modality="any", languages=("id", "jv", "bbc"), gender="female", age_band="25-29")
    try:
        async with db() as s, s.begin():
            await directory_repository.write_records(s, make_directory(160))
            await s.execute(update(Service).values(seats_available=0))
        async with db() as s, s.begin():
            await index.shortlist(s, f, frozenset(), frozenset())
        before = await _version(db)
        built = index.snapshot
        async with db() as s, s.begin():
            target = (await s.scalars(select(Service.id).order_by(Service.id))).first()
            assert target is not None
            await directory.set_capacity(s, target, 4, 10)
        assert await _version(db) == before  # capacity alone: the version stays
        async with db() as s, s.begin():
            await index.shortlist(s, f, frozenset(), frozenset())
        assert index.snapshot is built  # not rebuilt
        async with db() as s:
            assert await s.scalar(select(Service.seats_available).where(Service.id == target)) == 4
        # A change of fixed facts does move it.
        async with db() as s, s.begin():
            rec = next(r for r in make_directory(160) if r.id == target)
            await directory_repository.write_records(s, [replace_name(rec)])
        assert await _version(db) == before + 1
    finally:
        await engine.dispose()


async def _version(db: object) -> int:
    async with db() as s:  # type: ignore[operator]
        return int(await s.scalar(select(DirectoryVersion.version)))


def replace_name(rec: ServiceRecord) -> ServiceRecord:
    from dataclasses import replace

    return replace(rec, name=rec.name + " (baru)")
