"""The directory: putting services in, and finding the candidates for a referral."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from matching.adapters.orm import Organization, Service, ServiceArea, ServiceCategory
from matching.domain.decision import ServiceView
from shared import regions
from shared.events import utcnow


@dataclass(frozen=True)
class ServiceRecord:
    """A service as the directory keeps it, whatever it was imported from."""

    id: str
    organization_id: str
    organization_name: str
    name: str
    resource_kind: str
    pmks: tuple[str, ...]
    areas: tuple[str, ...]
    contact_id: str
    contact_email: str
    online: bool = False
    support_types: tuple[str, ...] = ()
    languages: tuple[str, ...] = ("id",)
    policies: tuple[str, ...] = ()
    minimum_age: int | None = None
    maximum_age: int | None = None
    seats_available: int = 0
    seats_max: int = 0
    description: str = ""
    active: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ServiceRecord:
        tuples = {"pmks", "areas", "support_types", "languages", "policies"}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in d.items()})  # type: ignore[arg-type]


async def upsert_service(s: AsyncSession, rec: ServiceRecord) -> bool:
    """Create or update; returns True when something changed."""
    org = await s.get(Organization, rec.organization_id)
    if org is None:
        s.add(Organization(id=rec.organization_id, name=rec.organization_name))
    elif org.name != rec.organization_name:
        org.name = rec.organization_name
    svc = await s.get(Service, rec.id)
    if svc is None:
        svc = Service(id=rec.id)
        s.add(svc)
        changed = True
    else:
        changed = view_record(svc) != rec
    if changed:
        svc.organization_id = rec.organization_id
        for attr in ("name", "description", "resource_kind", "active", "online", "minimum_age",
                     "maximum_age", "seats_available", "seats_max", "contact_id", "contact_email"):
            setattr(svc, attr, getattr(rec, attr))
        svc.support_types, svc.languages = list(rec.support_types), list(rec.languages)
        svc.policies = list(rec.policies)
        svc.categories = [ServiceCategory(pmks_code=c) for c in sorted(set(rec.pmks))]
        svc.areas = [ServiceArea(region_code=a) for a in sorted(set(rec.areas))]
        svc.updated_at = utcnow()
    return changed


def view_record(svc: Service) -> ServiceRecord:
    return ServiceRecord(
        id=svc.id, organization_id=svc.organization_id, organization_name=svc.organization.name,
        name=svc.name, resource_kind=svc.resource_kind,
        pmks=tuple(sorted(c.pmks_code for c in svc.categories)),
        areas=tuple(sorted(a.region_code for a in svc.areas)), contact_id=svc.contact_id,
        contact_email=svc.contact_email, online=svc.online, support_types=tuple(svc.support_types),
        languages=tuple(svc.languages), policies=tuple(svc.policies), minimum_age=svc.minimum_age,
        maximum_age=svc.maximum_age, seats_available=svc.seats_available, seats_max=svc.seats_max,
        description=svc.description, active=svc.active,
    )


def to_view(svc: Service) -> ServiceView:
    return ServiceView(
        id=svc.id, name=svc.name, organization_name=svc.organization.name,
        resource_kind=svc.resource_kind, active=svc.active, online=svc.online,
        pmks=frozenset(c.pmks_code for c in svc.categories), support_types=frozenset(svc.support_types),
        areas=tuple(a.region_code for a in svc.areas), languages=frozenset(svc.languages),
        policies=frozenset(svc.policies), minimum_age=svc.minimum_age, maximum_age=svc.maximum_age,
        seats_available=svc.seats_available, seats_max=svc.seats_max,
    )


async def candidates(s: AsyncSession, pmks_code: str, region_code: str) -> list[Service]:
    """Active services of the category whose area covers the region (any level above it),
    or that are online: two index lookups, never a scan of the directory."""
    in_area = select(ServiceArea.service_id).where(ServiceArea.region_code.in_(regions.ancestors(region_code)))
    q = (
        select(Service)
        .join(ServiceCategory, ServiceCategory.service_id == Service.id)
        .where(ServiceCategory.pmks_code == pmks_code, Service.active.is_(True),
               or_(Service.id.in_(in_area), Service.online.is_(True)))
    )
    return list((await s.scalars(q)).unique().all())
