"""What the bench feeds the system: a synthetic national directory and referrals that each
have at least one eligible service in it (so that every referral ends in a delivery, the
end point of the pipeline), all from a seeded random generator so that runs compare.

Shape of the directory (roughly a national one: ~38 provinces x 10 regencies):
60% of services serve one regency, 15% one district, 15% a whole province, 5% are online
only and 5% serve a regency and online. Each serves 1-4 PMKS categories. A referral sees a
few dozen candidates, most of them the online services of its category.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from shared.events import Envelope, ReferralSubmitted, new_id
from shared.pmks import categories
from shared.regions import PROVINCES
from shared.vocab import PROFESSIONAL_KINDS, SUPPORT_GROUP_KINDS, SupportType, age_band

REGENCIES_PER_PROVINCE = 10
DISTRICTS_PER_REGENCY = 12
LANGUAGES = ("jv", "su", "bug", "min", "ban", "en")
SUPPORT_TYPES = tuple(t.value for t in SupportType)
SOURCE = "rujukan/intake"  # the envelopes are exactly what intake would publish
BENCH_AGENCY = "bench"


@dataclass(frozen=True)
class BenchService:
    """One directory entry, with the keys `matching.domain.directory_record.ServiceRecord` has."""

    id: str
    organization_id: str
    organization_name: str
    name: str
    resource_kind: str
    pmks: tuple[str, ...]
    areas: tuple[str, ...]
    contact_id: str
    contact_email: str
    online: bool
    support_types: tuple[str, ...]
    languages: tuple[str, ...]
    policies: tuple[str, ...]
    minimum_age: int | None
    maximum_age: int | None
    seats_available: int
    seats_max: int
    description: str = ""
    active: bool = True


@dataclass
class Directory:
    services: list[BenchService]
    crisis_capable: list[BenchService] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.crisis_capable = [s for s in self.services
                               if s.resource_kind in PROFESSIONAL_KINDS and "crisis_capable" in s.policies]


def make_directory(size: int, seed: int = 5) -> Directory:
    rnd = random.Random(seed)
    codes = sorted(categories())
    provinces = sorted(PROVINCES)
    group_kinds = sorted(SUPPORT_GROUP_KINDS)
    professional_kinds = sorted(PROFESSIONAL_KINDS)
    services = []
    for i in range(size):
        province = rnd.choice(provinces)
        regency = f"{province}.{rnd.randint(1, REGENCIES_PER_PROVINCE):02d}"
        shape = rnd.random()
        online = False
        if shape < 0.60:
            areas: tuple[str, ...] = (regency,)
        elif shape < 0.75:
            areas = (f"{regency}.{rnd.randint(1, DISTRICTS_PER_REGENCY):02d}",)
        elif shape < 0.90:
            areas = (province,)
        elif shape < 0.95:
            areas, online = (), True
        else:
            areas, online = (regency,), True
        is_group = rnd.random() < 0.3
        kind = rnd.choice(group_kinds if is_group else professional_kinds)
        policies = []
        if not is_group and rnd.random() < 0.35:
            policies.append("crisis_capable")
        if not is_group and rnd.random() < 0.15:
            policies.append("open_24h")
        if rnd.random() < 0.10:
            policies.append("women_only")
        minimum_age = 18 if is_group and rnd.random() < 0.4 else None
        maximum_age = 17 if not is_group and minimum_age is None and rnd.random() < 0.05 else None
        seats = rnd.randint(50, 300)
        org = i // 4
        services.append(BenchService(
            id=f"bench-svc-{i:06d}", organization_id=f"bench-org-{org:06d}",
            organization_name=f"Lembaga Uji {org}", name=f"Layanan Uji {i} ({kind})", resource_kind=kind,
            pmks=tuple(sorted(rnd.sample(codes, rnd.randint(1, 4)))), areas=areas,
            contact_id=f"bench-ct-{i:06d}", contact_email=f"layanan{i}@bench.rujukan.example", online=online,
            support_types=tuple(sorted(rnd.sample(SUPPORT_TYPES, rnd.randint(2, 4)))),
            languages=("id", *rnd.sample(LANGUAGES, rnd.randint(0, 2))), policies=tuple(policies),
            minimum_age=minimum_age, maximum_age=maximum_age, seats_available=seats, seats_max=seats,
        ))
    return Directory(services)


def referral_for(rnd: random.Random, directory: Directory, urgent_share: float = 0.1) -> ReferralSubmitted:
    """A referral that `service` (picked at random) can take: at least one match exists."""
    urgent = rnd.random() < urgent_share and bool(directory.crisis_capable)
    service = rnd.choice(directory.crisis_capable if urgent else directory.services)
    if service.areas:
        area = rnd.choice(service.areas)
        depth = len(area.split("."))
        region = area
        if depth == 1:
            region = f"{area}.{rnd.randint(1, REGENCIES_PER_PROVINCE):02d}.{rnd.randint(1, DISTRICTS_PER_REGENCY):02d}"
        elif depth == 2:
            region = f"{area}.{rnd.randint(1, DISTRICTS_PER_REGENCY):02d}"
        modality = "any"
    else:
        province = rnd.choice(sorted(PROVINCES))
        region = f"{province}.{rnd.randint(1, REGENCIES_PER_PROVINCE):02d}"
        modality = rnd.choice(("online", "any"))
    low = service.minimum_age if service.minimum_age is not None else 0
    high = service.maximum_age if service.maximum_age is not None else 80
    age = rnd.randint(max(low, 0), high)
    # The band must fit the service's limits as a whole (the domain compares band edges).
    band_low = (age // 5) * 5
    if band_low < low:
        age = ((low + 4) // 5) * 5
    if band_low + 4 > high:
        age = ((high - 4) // 5) * 5
    gender = "female" if "women_only" in service.policies else rnd.choice(("female", "male", "female", "other"))
    rid = new_id()
    return ReferralSubmitted(
        referral_id=rid, agency_id=BENCH_AGENCY, pmks_category=rnd.choice(service.pmks),
        needs=sorted(rnd.sample(SUPPORT_TYPES, rnd.randint(1, 3))),
        urgency="crisis" if urgent else "routine",
        risk_flags=["ongoing_violence"] if urgent and rnd.random() < 0.5 else [],
        region_code=region, age_band=age_band(age), gender=gender,
        languages=[rnd.choice(service.languages)], modality=modality,
        consent_share=True,
    )


def envelopes(directory: Directory, count: int, seed: int) -> Iterator[Envelope]:
    rnd = random.Random(seed)
    for _ in range(count):
        data = referral_for(rnd, directory)
        yield Envelope.wrap(data, source=SOURCE, subject=data.referral_id)


def service_rows(directory: Directory) -> dict[str, list[dict[str, Any]]]:
    """Rows for matching's tables (organization, service, service_category, service_area)."""
    orgs: dict[str, dict[str, Any]] = {}
    services, cats, areas = [], [], []
    for s in directory.services:
        orgs.setdefault(s.organization_id, {"id": s.organization_id, "name": s.organization_name})
        services.append({
            "id": s.id, "organization_id": s.organization_id, "name": s.name, "description": s.description,
            "resource_kind": s.resource_kind, "active": s.active, "online": s.online,
            "support_types": list(s.support_types), "languages": list(s.languages), "policies": list(s.policies),
            "minimum_age": s.minimum_age, "maximum_age": s.maximum_age, "seats_available": s.seats_available,
            "seats_max": s.seats_max, "seats_declared": s.seats_available, "contact_id": s.contact_id,
            "contact_email": s.contact_email,
        })
        cats += [{"service_id": s.id, "pmks_code": c} for c in s.pmks]
        areas += [{"service_id": s.id, "region_code": a} for a in s.areas]
    return {"organization": list(orgs.values()), "service": services, "service_category": cats,
            "service_area": areas}


async def load_directory(database_url: str, directory: Directory) -> None:
    """Migrate matching's database to head and bulk-insert the directory (Core inserts: the
    same tables the service reads, far faster than one upsert per service)."""
    from sqlalchemy import insert

    from matching.adapters.orm import Organization, Service, ServiceArea, ServiceCategory
    from matching.bootstrap import MIGRATIONS
    from shared.db import make_engine, upgrade

    await upgrade(database_url, MIGRATIONS)
    rows = service_rows(directory)
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            for model in (Organization, Service, ServiceCategory, ServiceArea):
                table: Any = model.__table__
                # Only the columns the table has: the directory's schema grows (HSDS detail).
                batch = [{k: v for k, v in row.items() if k in table.c} for row in rows[table.name]]
                for i in range(0, len(batch), 5000):
                    await conn.execute(insert(table), batch[i:i + 5000])
            # Written around write_records: move the directory version as it would, so that a
            # running matcher's in-memory index is seen to be stale.
            from matching.adapters.directory_repository import version_bump

            await conn.execute(version_bump())
            if engine.dialect.name == "postgresql":
                from sqlalchemy import text

                await conn.execute(text("ANALYZE"))
    finally:
        await engine.dispose()
