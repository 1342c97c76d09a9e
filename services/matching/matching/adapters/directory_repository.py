"""The directory's rows: services written in batches (one query per table and batch, not
per service, so that a directory of ten thousand services imports in seconds), read back as
records, searched, and the candidates a referral's category and region could take.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import case, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload
from sqlalchemy.sql.base import ExecutableOption

from matching.adapters import receiver_repository
from matching.adapters.orm import (
    Attribute,
    Contact,
    DirectoryChange,
    DirectoryVersion,
    Location,
    Organization,
    Schedule,
    SeatHold,
    Service,
    ServiceArea,
    ServiceAtLocation,
    ServiceCapacity,
    ServiceCategory,
    TaxonomyTerm,
)
from matching.domain import directory_record
from matching.domain.directory_record import PROJECT_TAXONOMIES, Capacity, OrganizationInfo, ServiceRecord
from matching.domain.record_issues import flag_reasons
from matching.domain.states import LIVE_HOLDS
from shared import regions
from shared.events import utcnow

BATCH = 500
Outcome = Literal["created", "updated", "unchanged"]
_CHILDREN = (ServiceCategory, ServiceArea, Contact, Schedule, ServiceCapacity, Attribute, ServiceAtLocation)


@dataclass
class Written:
    id: str
    outcome: Outcome
    flags: list[str]
    # More seats than before, or matchable now and not before: waitlisted referrals may fit.
    woke: bool = False
    # The directory generation of the write that changed it (None: unchanged); a matchable
    # service changed is a DirectoryChange of that generation, for the rematch pass.
    generation: int | None = None




def _org_row(o: OrganizationInfo) -> dict[str, Any]:
    return dict(vars(o))


def _location_row(loc: directory_record.Location) -> dict[str, Any]:
    d = dict(vars(loc))
    d["addresses"] = [{k: v for k, v in vars(a).items() if v is not None} for a in loc.addresses]
    return d


def _term_row(t: directory_record.Term) -> dict[str, Any]:
    return dict(vars(t))


def _service_row(r: ServiceRecord, content_hash: str, receiver_id: str | None) -> dict[str, Any]:
    flags = flag_reasons(r)
    receiver = directory_record.receiving_contact(r.contacts)
    return {
        "id": r.id, "organization_id": r.organization_id, "name": r.name, "description": r.description,
        "resource_kind": r.resource_kind, "status": r.status, "active": r.active and not flags,
        "online": r.online, "support_types": list(r.support_types), "languages": list(r.languages),
        "policies": list(r.policies), "minimum_age": r.minimum_age, "maximum_age": r.maximum_age,
        "seats_max": r.seats_max, "seats_declared": r.seats_available, "contact_id": r.contact_id,
        "contact_email": r.contact_email, "contact_webhook_url": receiver.webhook_url if receiver else None,
        "receiver_id": receiver_id, "flags": flags, "content_hash": content_hash,
        "alternate_name": r.alternate_name, "url": r.url, "email": r.email, "extra": r.extra or None,
        "updated_at": utcnow(),
    }


def _child_rows(r: ServiceRecord,
                attributes: list[directory_record.Attribute]) -> dict[type[Any], list[dict[str, Any]]]:
    sid = r.id
    return {
        ServiceCategory: [{"service_id": sid, "pmks_code": c} for c in r.pmks],
        ServiceArea: [{"service_id": sid, "region_code": a} for a in r.areas],
        Contact: [{"service_id": sid, "position": i, **{k: v for k, v in vars(c).items() if k != "phones"},
                   "phones": [{k: v for k, v in vars(p).items() if v is not None} for p in c.phones]}
                  for i, c in enumerate(r.contacts)],
        Schedule: [{"service_id": sid, "position": i, **vars(x)} for i, x in enumerate(r.schedules)],
        ServiceCapacity: [{"service_id": sid, "position": i, "id": c.id, "available": c.available,
                           "maximum": c.maximum, "unit": dict(vars(c.unit)) if c.unit else None,
                           "description": c.description, "updated": c.updated}
                          for i, c in enumerate(r.capacities)],
        Attribute: [{"service_id": sid, "position": i, "id": a.id, "taxonomy_term_id": a.term.id, "value": a.value,
                     "label": a.label} for i, a in enumerate(attributes)],
        ServiceAtLocation: [{"service_id": sid, "position": i, "id": x.id, "location_id": x.location.id,
                             "description": x.description} for i, x in enumerate(r.locations)],
    }


async def _take_write_lock(s: AsyncSession) -> None:
    """SQLite has one writer: write first, so that what this transaction reads next stays
    current until it commits (a read-then-write transaction would fail if another writer
    committed in between). PostgreSQL locks the rows instead (FOR UPDATE below)."""
    if s.get_bind().dialect.name == "sqlite":
        await s.execute(update(Service).where(Service.id == "").values(seats_max=Service.seats_max)
                        .execution_options(synchronize_session=False))


async def _upsert(s: AsyncSession, model: type[Any], rows: dict[str, dict[str, Any]]) -> None:
    """Insert the rows not there yet, update those that differ: two or three statements."""
    if not rows:
        return
    cols = list(next(iter(rows.values())))
    existing = {}
    ids = list(rows)
    for i in range(0, len(ids), BATCH):
        for row in (await s.execute(select(*[getattr(model, c) for c in cols])
                                    .where(model.id.in_(ids[i:i + BATCH])))).mappings():
            existing[row["id"]] = dict(row)
    fresh = [r for k, r in rows.items() if k not in existing]
    stale = [r for k, r in rows.items() if k in existing and existing[k] != r]
    if fresh:
        await s.execute(insert(model), fresh)
    if stale:
        await s.execute(update(model), stale)


async def write_records(s: AsyncSession, records: Sequence[ServiceRecord], *,
                        facts_changed: bool = True) -> list[Written]:
    """Create or update services (ids unique in `records`), inside the caller's transaction.

    A record whose declared content is unchanged is not touched (its live seat count, which
    the matcher moves, is left alone). When the declared capacity changes, the live count
    becomes what is declared free less the seats held now, computed under the row lock so
    that a concurrent matcher can never make it overbook.
    """
    if not records:
        return []
    await _take_write_lock(s)
    hashes = {r.id: r.content_hash() for r in records}
    before = {row.id: row for row in (await s.execute(
        select(Service.id, Service.content_hash, Service.active, Service.seats_available, Service.seats_declared,
               Service.seats_max)
        .where(Service.id.in_(list(hashes))).order_by(Service.id).with_for_update()
    )).all()}
    new = [r for r in records if r.id not in before]
    changed = [r for r in records if r.id in before and before[r.id].content_hash != hashes[r.id]]
    todo = new + changed
    # Matching processes rebuild their in-memory index when the version moves. A change
    # of capacity alone leaves it (the index holds no seat counts: read live), but moves the
    # generation: waiting referrals may fit now.
    generation = await bump_version(s, facts_changed=facts_changed) if todo else None

    await _upsert(s, Organization, {r.organization_id: _org_row(r.organization or OrganizationInfo(
        r.organization_id, r.organization_name)) for r in todo})
    await _upsert(s, Location, {x.location.id: _location_row(x.location) for r in todo for x in r.locations})
    attributes = {r.id: r.attributes() for r in todo}
    terms = {a.term.id: a.term for attrs in attributes.values() for a in attrs}
    await _upsert(s, TaxonomyTerm, {k: _term_row(t) for k, t in terms.items()})
    # The receiving contact's identity, issued for a new (organisation, service, contact).
    issued = await receiver_repository.issue(s, [(r.organization_id, r.id, r.contact_id) for r in todo],
                                             {(r.organization_id, r.id, r.contact_id): r.contact_email
                                              for r in todo})

    def row(r: ServiceRecord) -> dict[str, Any]:
        return _service_row(r, hashes[r.id], issued.get((r.organization_id, r.id, r.contact_id)))

    changed_ids = [r.id for r in changed]
    if changed_ids:
        for model in _CHILDREN:
            await s.execute(delete(model).where(model.service_id.in_(changed_ids))
                            .execution_options(synchronize_session=False))
        await s.execute(update(Service), [row(r) for r in changed])
    if new:
        await s.execute(insert(Service), [{**row(r), "seats_available": r.seats_available} for r in new])
    children: dict[type[Any], list[dict[str, Any]]] = {m: [] for m in _CHILDREN}
    for r in todo:
        for model, rows in _child_rows(r, attributes[r.id]).items():
            children[model].extend(rows)
    for model, rows in children.items():
        if rows:
            await s.execute(insert(model), rows)

    recount = [r.id for r in changed
               if (before[r.id].seats_declared, before[r.id].seats_max) != (r.seats_available, r.seats_max)]
    if recount:
        held = (select(func.count()).select_from(SeatHold)
                .where(SeatHold.service_id == Service.id, SeatHold.state.in_(LIVE_HOLDS))
                .scalar_subquery())
        live = Service.seats_declared - held
        await s.execute(update(Service).where(Service.id.in_(recount))
                        .values(seats_available=case((live < 0, 0), else_=live))
                        .execution_options(synchronize_session=False))
    after = {row.id: row for row in (await s.execute(
        select(Service.id, Service.active, Service.seats_available, Service.flags)
        .where(Service.id.in_([r.id for r in todo])))).all()} if todo else {}

    matchable = sorted(sid for sid, row in after.items() if row.active)
    if generation is not None and matchable:
        s.add(DirectoryChange(generation=generation, service_ids=matchable, created_at=utcnow()))

    out = []
    for r in records:
        if r.id not in after:
            out.append(Written(r.id, "unchanged", flag_reasons(r)))
            continue
        now, was = after[r.id], before.get(r.id)
        woke = bool(now.active and now.seats_available > 0 and (
            was is None or not was.active or now.seats_available > was.seats_available))
        out.append(Written(r.id, "updated" if was else "created", list(now.flags), woke, generation))
    return out


async def bump_version(s: AsyncSession, *, facts_changed: bool = True) -> int | None:
    """Tell every matching replica that its in-memory index is stale (`facts_changed`), and
    move the generation: in the writing transaction, so the new version is seen exactly when
    the change is (and, on PostgreSQL, concurrent directory writers queue on this one row, so
    generations commit in order). The new generation; None without the version row."""
    q = update(DirectoryVersion).where(DirectoryVersion.id == 1).values(generation=DirectoryVersion.generation + 1)
    if facts_changed:
        q = q.values(version=DirectoryVersion.version + 1)
    return await s.scalar(q.returning(DirectoryVersion.generation).execution_options(synchronize_session=False))


def version_bump() -> Any:  # an Update
    return update(DirectoryVersion).where(DirectoryVersion.id == 1).values(version=DirectoryVersion.version + 1)


async def upsert_service(s: AsyncSession, rec: ServiceRecord) -> bool:
    """Create or update one service; True when something changed."""
    return (await write_records(s, [rec]))[0].outcome != "unchanged"



def detail_options() -> list[ExecutableOption]:
    """Everything `record_of` reads, in a few SELECT ... IN queries for a whole page."""
    return [
        selectinload(Service.contacts), selectinload(Service.schedules), selectinload(Service.capacities),
        selectinload(Service.attributes).joinedload(Attribute.term),
        selectinload(Service.service_at_locations).joinedload(ServiceAtLocation.location),
    ]


def record_of(svc: Service) -> ServiceRecord:
    """The declared record back from its rows (loaded with `detail_options`)."""
    org = svc.organization
    return ServiceRecord(
        id=svc.id, organization_id=org.id, organization_name=org.name, name=svc.name,
        resource_kind=svc.resource_kind, pmks=tuple(c.pmks_code for c in svc.categories),
        areas=tuple(a.region_code for a in svc.areas), contact_id="", contact_email="", online=svc.online,
        support_types=tuple(svc.support_types), languages=tuple(svc.languages), policies=tuple(svc.policies),
        minimum_age=svc.minimum_age, maximum_age=svc.maximum_age, description=svc.description,
        status=svc.status, alternate_name=svc.alternate_name, url=svc.url, email=svc.email,
        organization=OrganizationInfo(org.id, org.name, org.alternate_name, org.description, org.email,
                                      org.website),
        contacts=tuple(
            directory_record.Contact(
                id=c.id, email=c.email, name=c.name, title=c.title, department=c.department,
                webhook_url=c.webhook_url, phones=tuple(directory_record.Phone(**p) for p in c.phones))
            for c in svc.contacts),
        schedules=tuple(
            directory_record.Schedule(**{k: getattr(x, k) for k in directory_record.Schedule.__dataclass_fields__})
            for x in svc.schedules),
        locations=tuple(
            directory_record.ServiceAtLocation(id=x.id, description=x.description, location=directory_record.Location(
                **{k: getattr(x.location, k) for k in directory_record.Location.__dataclass_fields__
                   if k != "addresses"},
                addresses=tuple(directory_record.Address(**a) for a in x.location.addresses)))
            for x in svc.service_at_locations),
        other_attributes=tuple(
            directory_record.Attribute(id=a.id, value=a.value, label=a.label, term=directory_record.Term(
                **{k: getattr(a.term, k) for k in directory_record.Term.__dataclass_fields__}))
            for a in svc.attributes if a.term.taxonomy not in PROJECT_TAXONOMIES),
        capacities=tuple(Capacity(id=c.id, available=c.available, maximum=c.maximum,
                                  unit=directory_record.Unit(**c.unit) if c.unit else None,
                                  description=c.description, updated=c.updated) for c in svc.capacities),
        extra=dict(svc.extra or {}),
    )


async def load(s: AsyncSession, service_id: str) -> Service | None:
    return await s.scalar(select(Service).where(Service.id == service_id).options(*detail_options())
                          .execution_options(populate_existing=True))


@dataclass
class Page:
    total: int
    items: list[Service]


async def search(
    s: AsyncSession, *, taxonomy_term: str | None = None, taxonomy_term_id: str | None = None,
    region: str | None = None, organization_id: str | None = None, text: str | None = None,
    matchable: bool | None = None, page: int = 1, per_page: int = 50,
) -> Page:
    q = select(Service.id)
    if taxonomy_term:
        taxonomy, _, code = taxonomy_term.rpartition(":")
        terms = select(TaxonomyTerm.id).where(TaxonomyTerm.code == code)
        if taxonomy:
            terms = terms.where(func.lower(TaxonomyTerm.taxonomy) == taxonomy.lower())
        q = q.where(Service.id.in_(select(Attribute.service_id).where(Attribute.taxonomy_term_id.in_(terms))))
    if taxonomy_term_id:
        q = q.where(Service.id.in_(select(Attribute.service_id).where(Attribute.taxonomy_term_id == taxonomy_term_id)))
    if region:
        # Services serving the region (an area at it or above it) and those within it.
        within = ServiceArea.region_code.like(region.replace("%", "").replace("_", "") + ".%")
        q = q.where(Service.id.in_(select(ServiceArea.service_id).where(
            or_(ServiceArea.region_code.in_(regions.ancestors(region)), within))))
    if organization_id:
        q = q.where(Service.organization_id == organization_id)
    if text:
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        q = q.where(Service.name.ilike(f"%{escaped}%", escape="\\"))
    if matchable is not None:
        q = q.where(Service.active.is_(matchable))
    total = await s.scalar(select(func.count()).select_from(q.subquery())) or 0
    ids = (await s.scalars(q.order_by(Service.id).limit(per_page).offset((page - 1) * per_page))).all()
    rows = {x.id: x for x in (await s.scalars(select(Service).where(Service.id.in_(ids))
                                              .options(*detail_options()))).unique().all()}
    return Page(total, [rows[i] for i in ids if i in rows])


async def candidates(s: AsyncSession, pmks_code: str, region_code: str) -> list[Service]:
    """Active (matchable) services of the category whose area covers the region (any level
    above it), or that are online: index lookups, never a scan of the directory."""
    in_area = select(ServiceArea.service_id).where(ServiceArea.region_code.in_(regions.ancestors(region_code)))
    q = (
        select(Service)
        .join(ServiceCategory, ServiceCategory.service_id == Service.id)
        .where(ServiceCategory.pmks_code == pmks_code, Service.active.is_(True),
               or_(Service.id.in_(in_area), Service.online.is_(True)))
    )
    return list((await s.scalars(q)).unique().all())
