"""The services a decision looks at, read straight into the decision's view: index lookups
by category and by the region's ancestors, plus the online services of the category that
could take the person now — never a scan of the directory, and no ORM objects (a national
directory has a thousand online services for a common category; building full objects for
each was most of a decision's time).

What SQL can refuse cheaply it refuses here (inactive; online services when the person wants
in person, or without a free seat); every hard constraint is still checked by the pure
`domain.decision` on what is left, so that the audit trail says why each one lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from matching.adapters.orm import Contact, Organization, Service, ServiceArea, ServiceCategory
from matching.domain.contact_channels import Reach, reach
from matching.domain.decision import ReferralFacts, ServiceView
from shared import regions
from shared.vocab import Modality


@dataclass(frozen=True)
class Shortlist:
    views: list[ServiceView]  # without names: `describe` the one chosen


EMAIL_ONLY = Reach("", "", ("email",))


@dataclass(frozen=True)
class Described:
    name: str
    organization_name: str
    contact_id: str
    contact_email: str
    # The receiving contact's name and how else it is reached (the directory's HSDS contact).
    contact_name: str = ""
    reach: Reach = EMAIL_ONLY


# Only what the decision weighs: names and contacts are read for the chosen service alone.
COLUMNS = (Service.id, Service.resource_kind, Service.active, Service.online, Service.support_types,
           Service.languages, Service.policies, Service.minimum_age, Service.maximum_age,
           Service.seats_available, Service.seats_max)


def _details() -> Any:  # a Select of COLUMNS
    return select(*COLUMNS)


async def describe(s: AsyncSession, service_id: str) -> Described:
    row = (await s.execute(
        select(Service.name, Organization.name, Service.contact_id, Service.contact_email,
               Service.contact_webhook_url, Contact.name, Contact.phones)
        .join(Organization, Organization.id == Service.organization_id)
        .outerjoin(Contact, (Contact.service_id == Service.id) & (Contact.id == Service.contact_id))
        .where(Service.id == service_id)
    )).one()
    name, org, contact_id, email, hook, contact_name, phones = row
    return Described(name, org, contact_id, email, contact_name or "", reach(email, hook, phones or ()))


async def shortlist(s: AsyncSession, f: ReferralFacts, *, full_online: bool = False) -> Shortlist:
    """The category's active services whose area covers the person's region, and (unless the
    person wants in person) its online services with a free seat — or, with `full_online`,
    those without one (asked only when nobody could take the referral: are they waiting?)."""
    covering: dict[str, list[str]] = {}
    rows = (await s.execute(
        select(ServiceArea.service_id, ServiceArea.region_code)
        .join(ServiceCategory, ServiceCategory.service_id == ServiceArea.service_id)
        .where(ServiceCategory.pmks_code == f.pmks_category,
               ServiceArea.region_code.in_(regions.ancestors(f.region_code)))
    )).all()
    for service_id, area in rows:
        covering.setdefault(service_id, []).append(area)

    found: list[Any] = []
    if covering and not full_online:
        q = _details().where(Service.id.in_(list(covering)), Service.active)
        found += (await s.execute(q)).all()
    if f.modality != Modality.in_person:
        in_category = select(ServiceCategory.service_id).where(ServiceCategory.pmks_code == f.pmks_category)
        seats = Service.seats_available <= 0 if full_online else Service.seats_available > 0
        # Plain `online AND active`, the partial index's own predicate, so the planner uses it.
        q = _details().where(Service.online, Service.active, seats, Service.id.in_(in_category))
        if covering:
            q = q.where(Service.id.not_in(list(covering)))
        found += (await s.execute(q)).all()

    views = []
    for r in found:
        views.append(ServiceView(
            id=r.id, name="", organization_name="", resource_kind=r.resource_kind,
            active=r.active, online=r.online, pmks=frozenset({f.pmks_category}),
            support_types=frozenset(r.support_types or ()), areas=tuple(sorted(covering.get(r.id, ()))),
            languages=frozenset(r.languages or ()), policies=frozenset(r.policies or ()),
            minimum_age=r.minimum_age, maximum_age=r.maximum_age, seats_available=r.seats_available,
            seats_max=r.seats_max,
        ))
    return Shortlist(views)

