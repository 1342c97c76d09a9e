"""From Open Referral HSDS 3.0/3.1 JSON to directory records. Pure: no database, no I/O.

A service area carries a Kemendagri region code in ``extent`` (``extent_type`` ``"text"``); a
location of ``location_type`` ``"virtual"`` makes the service online; the seat count is the
HSDS 3.1 ``service_capacity`` without a unit or with a unit of seats.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import replace
from typing import Any

from email_validator import EmailNotValidError, validate_email
from pydantic import ValidationError

from matching.adapters.hsds_schema import (
    MODELLED,
    HsdsCapacity,
    HsdsContact,
    HsdsLanguage,
    HsdsOrganization,
    HsdsService,
    validation_issues,
)
from matching.domain.directory_record import (
    MAX_COUNT,
    PMKS,
    POLICY,
    PROJECT_TAXONOMIES,
    RESOURCE_KIND,
    SUPPORT_TYPE,
    Address,
    Attribute,
    Capacity,
    Contact,
    Location,
    OrganizationInfo,
    Phone,
    Schedule,
    ServiceAtLocation,
    ServiceRecord,
    Term,
    Unit,
    stable_id,
    term_id,
)
from matching.domain.record_issues import Issue, Parsed
from shared import regions
from shared.pmks import categories
from shared.text import unstorable_strings
from shared.vocab import POLICIES, RESOURCE_KINDS, SupportType

LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}$")


def parse_document(doc: Any) -> Iterator[Parsed]:
    """An HSDS document: one service_full, one organization_full (its services), or a list
    of either. Yields one `Parsed` per service, in order."""
    items = doc if isinstance(doc, list) else [doc]
    for i, item in enumerate(items):
        pointer = f"/{i}" if isinstance(doc, list) else ""
        if isinstance(item, dict) and isinstance(item.get("services"), list) and "organization" not in item:
            yield from _organization_full(i, pointer, item)
        else:
            yield parse_service(item, index=i, pointer=pointer)


def count_records(doc: Any) -> int:
    items = doc if isinstance(doc, list) else [doc]
    n = 0
    for item in items:
        services = item.get("services") if isinstance(item, dict) and "organization" not in item else None
        n += len(services) if isinstance(services, list) else 1
    return n


def _organization_full(i: int, pointer: str, item: dict[str, Any]) -> Iterator[Parsed]:
    try:
        org: HsdsOrganization | None = HsdsOrganization.model_validate(item)
        org_issues: list[Issue] = []
    except ValidationError as e:
        org, org_issues = None, [replace(x, field=f"organization.{x.field}") for x in validation_issues(e)]
    unstorable = [Issue(f"organization.{where}", why, "reject")
                  for where, why in unstorable_strings({k: v for k, v in item.items() if k != "services"})]
    if unstorable:
        org, org_issues = None, org_issues + unstorable
    for j, svc in enumerate(item["services"]):
        p = Parsed(index=i, record=None, pointer=f"{pointer}/services/{j}")
        if org is None:
            p.service_id = svc.get("id") if isinstance(svc, dict) else None
            p.issues.extend(org_issues)
            yield p
        else:
            yield parse_service(svc, index=i, pointer=p.pointer, organization=org)


def parse_service(raw: Any, *, index: int = 0, pointer: str = "",
                  organization: HsdsOrganization | None = None) -> Parsed:
    p = Parsed(index=index, record=None, pointer=pointer)
    if not isinstance(raw, dict):
        return p.reject("(record)", f"must be a JSON object (a service_full), not {type(raw).__name__}")
    if isinstance(raw.get("id"), str):
        p.service_id = raw["id"].strip()
    unstorable = [Issue(where, why, "reject") for where, why in unstorable_strings(raw)]
    if unstorable:  # anywhere, fields kept as given too: no database column can hold it
        p.issues.extend(unstorable)
        return p
    try:
        svc = HsdsService.model_validate(raw)
    except ValidationError as e:
        p.issues.extend(validation_issues(e))
        return p
    p.service_id = svc.id
    org = svc.organization or organization
    if org is None:
        return p.reject("organization", "missing: a service_full needs its organization object "
                                        "(or import the organization_full that lists it)")
    for name in ("minimum_age", "maximum_age"):
        age = getattr(svc, name)
        if age is not None and not 0 <= age <= 150:
            p.issues.append(Issue(name, "must be between 0 and 150", "reject"))
    if svc.minimum_age is not None and svc.maximum_age is not None and svc.minimum_age > svc.maximum_age:
        p.issues.append(Issue("maximum_age", f"less than minimum_age ({svc.maximum_age} < {svc.minimum_age})",
                              "reject"))
    if any(i.severity == "reject" for i in p.issues):
        return p

    facts, other = _facts(svc, p.issues)
    areas = _areas(svc, p.issues)
    links = _unique(_locations(svc), "service_at_locations", p.issues)
    contacts = _contacts(svc, p.issues, p.contact_fields)
    capacities = _unique(_capacities(svc.id, svc.capacities, p.issues), "capacities", p.issues)
    languages = _languages(svc.languages, p.issues)
    extra = {k: v for k, v in (svc.model_extra or {}).items() if k not in MODELLED}

    rec = ServiceRecord(
        id=svc.id, organization_id=org.id, organization_name=org.name, name=svc.name,
        resource_kind=facts[RESOURCE_KIND][0] if facts[RESOURCE_KIND] else "",
        pmks=tuple(facts[PMKS]), areas=tuple(areas), contact_id="", contact_email="",
        online=any(sal.location.location_type == "virtual" for sal in links),
        support_types=tuple(facts[SUPPORT_TYPE]), languages=tuple(languages), policies=tuple(facts[POLICY]),
        minimum_age=svc.minimum_age, maximum_age=svc.maximum_age, description=svc.description or "",
        status=svc.status, alternate_name=svc.alternate_name, url=svc.url, email=svc.email,
        organization=OrganizationInfo(org.id, org.name, org.alternate_name, org.description, org.email,
                                      org.website),
        contacts=tuple(contacts), schedules=tuple(_unique(_schedules(svc), "schedules", p.issues)),
        locations=tuple(links), other_attributes=tuple(_unique(other, "attributes", p.issues)),
        capacities=tuple(capacities), extra=extra,
    )
    return p.accept(rec)


def _unique(items: list[Any], where: str, issues: list[Issue]) -> list[Any]:
    """The parts of one service are keyed by their id: a repeated id keeps the first."""
    seen: set[str] = set()
    out = []
    for x in items:
        if x.id in seen:
            issues.append(Issue(where, f"id '{x.id}' given twice; the second is ignored", "warning"))
        else:
            seen.add(x.id)
            out.append(x)
    return out


def _facts(svc: HsdsService, issues: list[Issue]) -> tuple[dict[str, list[str]], list[Attribute]]:
    facts: dict[str, list[str]] = {t: [] for t in PROJECT_TAXONOMIES}
    other: list[Attribute] = []
    for i, a in enumerate(svc.attributes):
        where = f"attributes[{i}].taxonomy_term"
        t = a.taxonomy_term
        if t is None:
            issues.append(Issue(where, "missing: an attribute without its taxonomy term is ignored", "warning"))
            continue
        taxonomy = (t.taxonomy or (t.taxonomy_detail.name if t.taxonomy_detail else None) or "").strip()
        code = (t.code or "").strip()
        if taxonomy.lower() in PROJECT_TAXONOMIES:
            taxonomy = taxonomy.lower()
            reason = unknown_code(taxonomy, code)
            if reason:
                issues.append(Issue(f"{where}.code", reason + "; ignored", "warning"))
            elif code in facts[taxonomy]:
                pass
            elif taxonomy == RESOURCE_KIND and facts[RESOURCE_KIND]:
                issues.append(Issue(f"{where}.code", f"a second resource_kind ('{code}'); the first "
                                                     f"('{facts[RESOURCE_KIND][0]}') is kept", "warning"))
            else:
                facts[taxonomy].append(code)
            continue
        if not code:
            issues.append(Issue(f"{where}.code", "missing: a term without a code is ignored", "warning"))
            continue
        tid = t.id or term_id(taxonomy, code)
        value = None if a.value is None else str(a.value)
        other.append(Attribute(
            id=a.id or stable_id(svc.id, "attribute", str(i)),
            term=Term(id=tid, taxonomy=taxonomy, code=code, name=t.name, description=t.description,
                      parent_id=t.parent_id, term_uri=t.term_uri),
            value=value, label=a.label,
        ))
    return facts, other


def unknown_code(taxonomy: str, code: str) -> str | None:
    known: Iterable[str] = {
        PMKS: categories().keys(), SUPPORT_TYPE: [s.value for s in SupportType],
        RESOURCE_KIND: RESOURCE_KINDS, POLICY: POLICIES,
    }[taxonomy]
    if code in known:
        return None
    if not code:
        return f"missing: a '{taxonomy}' term needs its code"
    return f"'{code}' is not a code of taxonomy '{taxonomy}'"


def region_code(value: str | None, where: str, issues: list[Issue]) -> str | None:
    code = (value or "").strip()
    try:
        return regions.validate(code)
    except ValueError as e:
        issues.append(Issue(where, f"'{code[:40]}' {e}; this area is not used", "warning"))
        return None


def _areas(svc: HsdsService, issues: list[Issue]) -> list[str]:
    found: list[str] = []
    entries = [(f"service_areas[{i}]", a) for i, a in enumerate(svc.service_areas)]
    entries += [(f"service_at_locations[{i}].service_areas[{j}]", a)
                for i, sal in enumerate(svc.service_at_locations) for j, a in enumerate(sal.service_areas)]
    for where, a in entries:
        kind = (a.extent_type or "").strip().lower()
        if kind and kind != "text":
            issues.append(Issue(f"{where}.extent_type", f"'{kind}' extents are not used: give the Kemendagri "
                                "region code as extent with extent_type 'text'", "warning"))
            continue
        code = region_code(a.extent, f"{where}.extent", issues)
        if code and code not in found:
            found.append(code)
    return found


def read_contact(c: HsdsContact, where: str, fallback_id: str, issues: list[Issue]) -> Contact:
    email = None
    if c.email:
        try:
            email = validate_email(c.email.strip(), check_deliverability=False).normalized
        except EmailNotValidError as e:
            issues.append(Issue(f"{where}.email", f"not a valid email address ({e}); not used", "warning"))
    hook = c.webhook_url
    if hook and not hook.startswith(("https://", "http://")):
        issues.append(Issue(f"{where}.webhook_url", "must be an http(s) URL; not used", "warning"))
        hook = None
    phones = tuple(Phone(ph.number, None if ph.extension is None else str(ph.extension), ph.type)
                   for ph in c.phones)
    return Contact(id=c.id or fallback_id, email=email, name=c.name, title=c.title, department=c.department,
                   webhook_url=hook or None, phones=phones)


def _contacts(svc: HsdsService, issues: list[Issue], fields: dict[str, str]) -> list[Contact]:
    given = [(f"contacts[{i}]", c) for i, c in enumerate(svc.contacts)]
    for i, sal in enumerate(svc.service_at_locations):
        given += [(f"service_at_locations[{i}].contacts[{j}]", c) for j, c in enumerate(sal.contacts)]
        if sal.location:
            given += [(f"service_at_locations[{i}].location.contacts[{j}]", c)
                      for j, c in enumerate(sal.location.contacts)]
    out: dict[str, Contact] = {}
    for n, (where, c) in enumerate(given):
        contact = read_contact(c, where, stable_id(svc.id, "contact", str(n)), issues)
        out.setdefault(contact.id, contact)  # the same contact repeated at a location
        fields.setdefault(contact.id, f"{where}.id")
    return list(out.values())


def _locations(svc: HsdsService) -> list[ServiceAtLocation]:
    out = []
    for i, sal in enumerate(svc.service_at_locations):
        if sal.location is None:
            continue
        loc = sal.location
        out.append(ServiceAtLocation(
            id=sal.id or stable_id(svc.id, "service_at_location", str(i)), description=sal.description,
            location=Location(
                id=loc.id or stable_id(svc.id, "location", str(i)), location_type=loc.location_type,
                name=loc.name, alternate_name=loc.alternate_name, description=loc.description, url=loc.url,
                latitude=loc.latitude, longitude=loc.longitude,
                addresses=tuple(Address(**a.model_dump()) for a in loc.addresses),
            ),
        ))
    return out


def _schedules(svc: HsdsService) -> list[Schedule]:
    return [Schedule(**{**s.model_dump(), "id": s.id or stable_id(svc.id, "schedule", str(i))})
            for i, s in enumerate(svc.schedules)]


def _languages(given: list[HsdsLanguage], issues: list[Issue]) -> list[str]:
    out: list[str] = []
    for i, lang in enumerate(given):
        code = (lang.code or "").strip().lower()
        if not LANGUAGE_CODE.match(code):
            issues.append(Issue(f"languages[{i}].code", f"'{code[:20]}' is not an ISO 639 code such as 'id' "
                                "or 'jv'; ignored", "warning"))
        elif code not in out:
            out.append(code)
    if not out:
        issues.append(Issue("languages", "none given: Bahasa Indonesia ('id') assumed", "warning"))
        out = ["id"]
    return out


def _capacities(service_id: str, given: list[HsdsCapacity], issues: list[Issue]) -> list[Capacity]:
    """An impossible capacity is refused (and the record kept, without it)."""
    out = []
    for i, c in enumerate(given):
        where = f"capacities[{i}]"
        problem = None
        if c.available < 0:
            problem = (f"{where}.available", f"negative ({c.available})")
        elif c.maximum is not None and c.maximum < 0:
            problem = (f"{where}.maximum", f"negative ({c.maximum})")
        elif max(c.available, c.maximum or 0) > MAX_COUNT:
            problem = (f"{where}.available" if c.available > MAX_COUNT else f"{where}.maximum",
                       f"more than {MAX_COUNT:,}: capacity refused")
        elif c.maximum is not None and c.available > c.maximum:
            problem = (f"{where}.available", f"greater than maximum ({c.available} > {c.maximum}): "
                                             "capacity refused")
        if problem:
            issues.append(Issue(*problem, "reject"))
            continue
        unit = Unit(**c.unit.model_dump()) if c.unit else None
        cap = Capacity(id=c.id or stable_id(service_id, "capacity", str(i)), available=c.available,
                       maximum=c.maximum, unit=unit, description=c.description, updated=c.updated)
        if cap.is_seats and cap.maximum is None:
            issues.append(Issue(f"{where}.maximum", "missing: a seat capacity needs its maximum; "
                                                    "capacity refused", "reject"))
            continue
        if not cap.is_seats:
            issues.append(Issue(f"{where}.unit", f"'{(unit.name if unit else '') or ''}' is not seats: kept, "
                                                 "not used as the seat count", "warning"))
        out.append(cap)
    return out
