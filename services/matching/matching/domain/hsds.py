"""The directory's records and their mapping from Open Referral HSDS 3.0/3.1 and from the
project's own CSV (kept in spreadsheets by Dinas Sosial staff).

Pure: no database, no I/O. Each input record becomes a `Parsed`: a `ServiceRecord` (or none
when the record is rejected) with the issues found, each naming the field and the reason:

- ``reject``: the record (or, for a capacity, that one capacity) is refused;
- ``flag``: the record is kept but the matcher cannot use it (no PMKS term, no contact email
  to send referrals to, no area and not online, no resource kind): stored, never matched;
- ``warning``: a value was ignored (an unknown code, a geographic extent, ...).

Project facts travel as HSDS taxonomy terms whose ``code`` is the value, in the taxonomies
``pmks``, ``support_type``, ``resource_kind`` and ``policy``. A service area carries a
Kemendagri region code in ``extent`` (``extent_type`` ``"text"``); a location of
``location_type`` ``"virtual"`` makes the service online; the seat count is the HSDS 3.1
``service_capacity`` without a unit or with a unit of seats.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from typing import Annotated, Any, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from shared import regions
from shared.pmks import categories
from shared.text import unstorable_strings
from shared.vocab import POLICIES, RESOURCE_KINDS, SupportType

# Bump when the mapping changes what a record becomes, so that re-importing an unchanged
# file after an upgrade still rewrites the rows derived from it.
MAPPING_VERSION = 1

PMKS, SUPPORT_TYPE, RESOURCE_KIND, POLICY = "pmks", "support_type", "resource_kind", "policy"
PROJECT_TAXONOMIES = (PMKS, SUPPORT_TYPE, RESOURCE_KIND, POLICY)
STATUSES = ("active", "inactive", "defunct", "temporarily closed")
SEAT_UNITS = frozenset({"seat", "seats", "kursi", "place", "places", "slot", "slots", "person", "persons",
                        "people", "orang", "peserta", "participant", "participants"})
LANGUAGE_NAMES = {
    "id": "Bahasa Indonesia", "jv": "Basa Jawa", "su": "Basa Sunda", "en": "English",
    "mad": "Basa Madhura", "min": "Baso Minang", "ban": "Basa Bali", "bug": "Basa Ugi",
    "ms": "Bahasa Melayu", "ace": "Bahsa Acèh", "bjn": "Bahasa Banjar", "btk": "Batak",
}
_NS = uuid.UUID("6f0b8a4e-52a1-4c4e-9d0e-2a7f1c9b3e11")
_LANGUAGE = re.compile(r"^[a-z]{2,3}$")
_SLUG = re.compile(r"[^a-z0-9]+")

Severity = Literal["reject", "flag", "warning"]
MAX_COUNT = 1_000_000  # seats or any capacity: more is a typo (and would not fit the column)


def stable_id(*parts: str) -> str:
    """A UUID derived from its parts: the same service gives its parts the same ids on
    every import, so that re-importing changes nothing."""
    return str(uuid.uuid5(_NS, "\x1f".join(parts)))


def term_id(taxonomy: str, code: str) -> str:
    return stable_id("taxonomy_term", taxonomy, code)


# ------------------------------------------------------------------------------------------
# The record
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OrganizationInfo:
    id: str
    name: str
    alternate_name: str | None = None
    description: str | None = None
    email: str | None = None
    website: str | None = None


@dataclass(frozen=True)
class Phone:
    number: str
    extension: str | None = None
    type: str | None = None


@dataclass(frozen=True)
class Contact:
    """A facilitator or social worker who receives referrals for the service."""

    id: str
    email: str | None = None
    name: str | None = None
    title: str | None = None
    department: str | None = None
    webhook_url: str | None = None
    phones: tuple[Phone, ...] = ()


@dataclass(frozen=True)
class Schedule:
    id: str
    freq: str | None = None
    interval: int | None = None
    byday: str | None = None
    opens_at: str | None = None
    closes_at: str | None = None
    valid_from: str | None = None
    valid_to: str | None = None
    dtstart: str | None = None
    until: str | None = None
    wkst: str | None = None
    description: str | None = None
    attending_type: str | None = None
    notes: str | None = None


@dataclass(frozen=True)
class Address:
    address_1: str | None = None
    address_2: str | None = None
    city: str | None = None
    region: str | None = None
    state_province: str | None = None
    postal_code: str | None = None
    country: str | None = None
    address_type: str | None = None


@dataclass(frozen=True)
class Location:
    id: str
    location_type: str = "physical"  # physical, postal or virtual (an online room)
    name: str | None = None
    alternate_name: str | None = None
    description: str | None = None
    url: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    addresses: tuple[Address, ...] = ()


@dataclass(frozen=True)
class ServiceAtLocation:
    id: str
    location: Location
    description: str | None = None


@dataclass(frozen=True)
class Term:
    id: str
    taxonomy: str
    code: str
    name: str | None = None
    description: str | None = None
    parent_id: str | None = None
    term_uri: str | None = None


@dataclass(frozen=True)
class Attribute:
    id: str
    term: Term
    value: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class Unit:
    id: str | None = None
    name: str | None = None
    scheme: str | None = None
    identifier: str | None = None
    uri: str | None = None


@dataclass(frozen=True)
class Capacity:
    """HSDS 3.1 service_capacity. The one without a unit, or in seats, is the seat count."""

    id: str
    available: int
    maximum: int | None = None
    unit: Unit | None = None
    description: str | None = None
    updated: str | None = None

    @property
    def is_seats(self) -> bool:
        if self.unit is None:
            return True
        names = {(self.unit.name or "").strip().lower(), (self.unit.identifier or "").strip().lower()}
        return bool(names & SEAT_UNITS) or names <= {""}


def seat_capacity(capacities: Iterable[Capacity]) -> Capacity | None:
    return next((c for c in capacities if c.is_seats), None)


@dataclass(frozen=True)
class ServiceRecord:
    """A service as the directory keeps it, whatever it was imported from.

    The first fields are what the matcher reads (flat, as the walking skeleton had them);
    the rest is the HSDS detail. `__post_init__` keeps the two consistent: the receiving
    contact comes from `contacts`, the seat count from `capacities`, `active` from `status`
    (and each of them is synthesised from the flat fields when only those are given).
    """

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
    # HSDS detail
    status: str = ""
    alternate_name: str | None = None
    url: str | None = None
    email: str | None = None
    organization: OrganizationInfo | None = None
    contacts: tuple[Contact, ...] = ()
    schedules: tuple[Schedule, ...] = ()
    locations: tuple[ServiceAtLocation, ...] = ()
    other_attributes: tuple[Attribute, ...] = ()  # terms of other taxonomies, kept as given
    capacities: tuple[Capacity, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)  # HSDS fields the directory does not model

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("pmks", "areas", "support_types", "languages", "policies"):
            set_(self, name, tuple(sorted(set(getattr(self, name)))))
        if self.status:
            set_(self, "active", self.status == "active")
        else:
            set_(self, "status", "active" if self.active else "inactive")
        if self.organization is None:
            set_(self, "organization", OrganizationInfo(self.organization_id, self.organization_name))
        else:
            set_(self, "organization_id", self.organization.id)
            set_(self, "organization_name", self.organization.name)
        if self.contacts:
            receiver = receiving_contact(self.contacts)
            set_(self, "contact_id", receiver.id if receiver else "")
            set_(self, "contact_email", (receiver.email or "") if receiver else "")
        elif self.contact_email or self.contact_id:
            set_(self, "contact_id", self.contact_id or stable_id(self.id, "contact", "0"))
            set_(self, "contacts", (Contact(id=self.contact_id, email=self.contact_email or None),))
        virtual = any(sal.location.location_type == "virtual" for sal in self.locations)
        if virtual:
            set_(self, "online", True)
        elif self.online:
            set_(self, "locations", (*self.locations, ServiceAtLocation(
                id=stable_id(self.id, "service_at_location", "online"),
                location=Location(id=stable_id(self.id, "location", "online"), location_type="virtual",
                                  name="Daring (online)"))))
        if self.capacities:
            seats = seat_capacity(self.capacities)
            set_(self, "seats_available", seats.available if seats else 0)
            set_(self, "seats_max", (seats.maximum or 0) if seats else 0)
        elif self.seats_max or self.seats_available:
            set_(self, "capacities", (Capacity(id=stable_id(self.id, "capacity", "seats"),
                                               available=self.seats_available, maximum=self.seats_max),))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ServiceRecord:
        tuples = {"pmks", "areas", "support_types", "languages", "policies"}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in d.items()})  # type: ignore[arg-type]

    @property
    def seats(self) -> Capacity | None:
        return seat_capacity(self.capacities)

    def attributes(self) -> list[Attribute]:
        """Every taxonomy term of the service: the project's facts, then the others."""
        out = []
        facts = [(PMKS, c) for c in self.pmks] + [(SUPPORT_TYPE, c) for c in self.support_types]
        if self.resource_kind:
            facts.append((RESOURCE_KIND, self.resource_kind))
        facts += [(POLICY, c) for c in self.policies]
        for taxonomy, code in facts:
            t = project_term(taxonomy, code)
            out.append(Attribute(id=stable_id(self.id, "attribute", t.id), term=t))
        return out + list(self.other_attributes)

    def content_hash(self) -> str:
        """What the record declares, so that re-importing the same content changes nothing.
        The live seat count is not in it: the matcher moves that one."""
        doc = {"v": MAPPING_VERSION, "record": plain(self)}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def plain(o: Any) -> Any:
    """A dataclass tree as dicts and lists (what `dataclasses.asdict` gives, without its
    deep copies: an import computes this for every record)."""
    if hasattr(o, "__dataclass_fields__"):
        return {k: plain(v) for k, v in vars(o).items()}
    if isinstance(o, tuple | list):
        return [plain(v) for v in o]
    if isinstance(o, dict):
        return {k: plain(v) for k, v in o.items()}
    return o


def receiving_contact(contacts: Iterable[Contact]) -> Contact | None:
    """The contact who receives referrals: the first one with an email address."""
    return next((c for c in contacts if c.email), None)


@lru_cache(maxsize=1024)
def project_term(taxonomy: str, code: str) -> Term:
    name: str | None = code
    if taxonomy == PMKS and code in categories():
        name = categories()[code].nama
    return Term(id=term_id(taxonomy, code), taxonomy=taxonomy, code=code, name=name)


# ------------------------------------------------------------------------------------------
# Issues and what a record became
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issue:
    field: str
    reason: str
    severity: Severity

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "reason": self.reason, "severity": self.severity}


@dataclass
class Parsed:
    """One input record: where it was (index in the document, CSV line), what it became."""

    index: int
    record: ServiceRecord | None
    issues: list[Issue] = field(default_factory=list)
    service_id: str | None = None
    line: int | None = None
    pointer: str = ""  # JSON pointer of the record in the document ("/3/services/0")
    # Where each contact was given (contact id -> field), to report an issue about it there.
    contact_fields: dict[str, str] = field(default_factory=dict)

    @property
    def rejected(self) -> bool:
        return self.record is None

    @property
    def flags(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "flag"]

    def reject(self, field_: str, reason: str) -> Parsed:
        self.issues.append(Issue(field_, reason, "reject"))
        self.record = None
        return self


def matchability_flags(rec: ServiceRecord) -> list[Issue]:
    """Why the matcher cannot use this record (empty: it can). A flagged record is stored
    but never a candidate, until the missing facts are given."""
    out = []
    if not rec.pmks:
        out.append(Issue("attributes", "no taxonomy term of taxonomy 'pmks' (the PMKS categories it serves)",
                         "flag"))
    if not rec.resource_kind:
        out.append(Issue("attributes", "no taxonomy term of taxonomy 'resource_kind' (support group or "
                                       "professional kind), needed to keep danger away from peer groups", "flag"))
    if not rec.contact_email:
        out.append(Issue("contacts", "no contact with an email address to send referrals to", "flag"))
    if not rec.areas and not rec.online:
        out.append(Issue("service_areas", "no service area with a Kemendagri region code, and not online "
                                          "(no virtual location)", "flag"))
    return out


def flag_reasons(rec: ServiceRecord) -> list[str]:
    return [f"{i.field}: {i.reason}" for i in matchability_flags(rec)]


# ------------------------------------------------------------------------------------------
# HSDS input (only what the directory reads; every other field is kept as given in `extra`)
# ------------------------------------------------------------------------------------------

Id = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]
Short = Annotated[str, StringConstraints(max_length=300)]
Url = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]


class _In(BaseModel):
    model_config = ConfigDict(extra="ignore")


class HsdsPhone(_In):
    number: Short
    extension: str | int | None = None
    type: Short | None = None


class HsdsContact(_In):
    id: Id | None = None
    name: Short | None = None
    title: Short | None = None
    department: Short | None = None
    email: Short | None = None
    # Rujukan extension (HSDS has no field for it): where to POST proposals besides email.
    webhook_url: Url | None = None
    phones: list[HsdsPhone] = []


class HsdsOrganization(_In):
    id: Id
    name: Name
    alternate_name: Short | None = None
    description: str | None = None
    email: Short | None = None
    website: Url | None = None


class HsdsSchedule(_In):
    id: Id | None = None
    freq: Short | None = None
    interval: Annotated[int, Field(ge=0, le=10_000)] | None = None
    byday: Short | None = None
    opens_at: Short | None = None
    closes_at: Short | None = None
    valid_from: Short | None = None
    valid_to: Short | None = None
    dtstart: Short | None = None
    until: Short | None = None
    wkst: Short | None = None
    description: str | None = None
    attending_type: str | None = None
    notes: str | None = None


class HsdsAddress(_In):
    address_1: Short | None = None
    address_2: Short | None = None
    city: Short | None = None
    region: Short | None = None
    state_province: Short | None = None
    postal_code: Short | None = None
    country: Short | None = None
    address_type: Short | None = None


class HsdsServiceArea(_In):
    id: Id | None = None
    name: str | None = None
    description: str | None = None
    extent: str | None = None
    extent_type: Short | None = None


class HsdsLocation(_In):
    id: Id | None = None
    location_type: Literal["physical", "postal", "virtual"] = "physical"
    name: Short | None = None
    alternate_name: Short | None = None
    description: str | None = None
    url: Url | None = None
    latitude: float | None = None
    longitude: float | None = None
    addresses: list[HsdsAddress] = []
    contacts: list[HsdsContact] = []


class HsdsServiceAtLocation(_In):
    id: Id | None = None
    description: str | None = None
    location: HsdsLocation | None = None
    service_areas: list[HsdsServiceArea] = []
    contacts: list[HsdsContact] = []


class HsdsLanguage(_In):
    code: Short | None = None
    name: Short | None = None


class HsdsTaxonomyDetail(_In):
    name: Short | None = None


class HsdsTaxonomyTerm(_In):
    id: Id | None = None
    code: Short | None = None
    name: Short | None = None
    description: str | None = None
    parent_id: Id | None = None
    taxonomy: Short | None = None
    taxonomy_detail: HsdsTaxonomyDetail | None = None
    term_uri: Url | None = None


class HsdsAttribute(_In):
    id: Id | None = None
    value: str | int | float | bool | None = None
    label: Short | None = None
    taxonomy_term: HsdsTaxonomyTerm | None = None


class HsdsUnit(_In):
    id: Id | None = None
    name: Short | None = None
    scheme: Short | None = None
    identifier: Short | None = None
    uri: Url | None = None


class HsdsCapacity(_In):
    id: Id | None = None
    available: int
    maximum: int | None = None
    unit: HsdsUnit | None = None
    description: str | None = None
    updated: Short | None = None


_MODELLED = frozenset({
    "id", "name", "alternate_name", "description", "url", "email", "status", "minimum_age", "maximum_age",
    "organization", "organization_id", "contacts", "schedules", "service_areas", "service_at_locations",
    "languages", "attributes", "capacities",
})


class HsdsService(_In):
    model_config = ConfigDict(extra="allow")

    id: Id
    name: Name
    alternate_name: Short | None = None
    description: str | None = None
    url: Url | None = None
    email: Short | None = None
    status: Literal["active", "inactive", "defunct", "temporarily closed"] = "active"
    minimum_age: int | None = None
    maximum_age: int | None = None
    organization_id: Id | None = None
    organization: HsdsOrganization | None = None
    contacts: list[HsdsContact] = []
    schedules: list[HsdsSchedule] = []
    service_areas: list[HsdsServiceArea] = []
    service_at_locations: list[HsdsServiceAtLocation] = []
    languages: list[HsdsLanguage] = []
    attributes: list[HsdsAttribute] = []
    capacities: list[HsdsCapacity] = []


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(record)"


def _validation_issues(e: ValidationError) -> list[Issue]:
    out = []
    for err in e.errors(include_url=False, include_input=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        # Unions report one error per alternative; the field and the first reason say enough.
        loc = tuple(p for p in loc if p not in ("str", "int", "float", "bool", "constrained-str"))
        issue = Issue(_loc(loc), str(err["msg"]).removeprefix("Value error, "), "reject")
        if issue not in out:
            out.append(issue)
    return out


# ------------------------------------------------------------------------------------------
# From HSDS
# ------------------------------------------------------------------------------------------


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
        org, org_issues = None, [replace(x, field=f"organization.{x.field}") for x in _validation_issues(e)]
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
        p.issues.extend(_validation_issues(e))
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
    extra = {k: v for k, v in (svc.model_extra or {}).items() if k not in _MODELLED}

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
    return _finish(p, rec)


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


def _finish(p: Parsed, rec: ServiceRecord) -> Parsed:
    if rec.capacities and rec.seats is None:
        p.issues.append(Issue("capacities", "no capacity in seats (no unit, or a unit such as 'seats'): "
                                            "0 seats until one is given", "warning"))
    elif not rec.capacities:
        p.issues.append(Issue("capacities", "no seat capacity: 0 seats until one is given (referrals wait)",
                              "warning"))
    p.issues.extend(matchability_flags(rec))
    p.record = rec
    return p


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
            reason = _unknown_code(taxonomy, code)
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


def _unknown_code(taxonomy: str, code: str) -> str | None:
    known: Iterable[str] = {
        PMKS: categories().keys(), SUPPORT_TYPE: [s.value for s in SupportType],
        RESOURCE_KIND: RESOURCE_KINDS, POLICY: POLICIES,
    }[taxonomy]
    if code in known:
        return None
    if not code:
        return f"missing: a '{taxonomy}' term needs its code"
    return f"'{code}' is not a code of taxonomy '{taxonomy}'"


def _region(value: str | None, where: str, issues: list[Issue]) -> str | None:
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
        code = _region(a.extent, f"{where}.extent", issues)
        if code and code not in found:
            found.append(code)
    return found


def _contact(c: HsdsContact, where: str, fallback_id: str, issues: list[Issue]) -> Contact:
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
        contact = _contact(c, where, stable_id(svc.id, "contact", str(n)), issues)
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
        if not _LANGUAGE.match(code):
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


# ------------------------------------------------------------------------------------------
# From the project's CSV (docs/directory-csv.md)
# ------------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "id", "name", "organization_id", "organization_name", "description", "status", "resource_kind", "pmks",
    "support_types", "policies", "areas", "online", "languages", "minimum_age", "maximum_age",
    "seats_available", "seats_max", "contact_name", "contact_email", "contact_webhook_url",
    "schedule", "location_name", "address", "city",
)
CSV_REQUIRED = ("id", "name", "organization_name")
_TRUE = {"1", "true", "yes", "y", "ya"}
_FALSE = {"", "0", "false", "no", "n", "tidak", "t"}


class CsvHeaderError(ValueError):
    """The file cannot be read as the project's CSV at all (no record can be)."""


def _split(cell: str) -> list[str]:
    return [x.strip() for x in re.split(r"[;,|]", cell) if x.strip()]


def _slug(text: str) -> str:
    return _SLUG.sub("-", text.lower()).strip("-")[:56] or "org"


def parse_csv(text: str) -> Iterator[Parsed]:
    """The project's CSV: one service per row, lists in a cell separated by ';' (or ',' or
    '|'). Comma or semicolon delimited (a spreadsheet in an Indonesian locale saves ';')."""
    text = text.removeprefix("\ufeff")
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        raise CsvHeaderError(f"missing column(s) {', '.join(missing)} in the header line; the columns are: "
                             + ", ".join(CSV_COLUMNS))
    reader.fieldnames = header
    unknown = [h for h in header if h not in CSV_COLUMNS]
    for n, row in enumerate(reader):
        cells = {k: (v or "").strip() for k, v in row.items() if isinstance(k, str)}
        p = _csv_row(n, reader.line_num, cells)
        if n == 0 and unknown and p.record is not None:
            p.issues.insert(0, Issue(", ".join(unknown), "unknown column(s), ignored", "warning"))
        if None in row:
            p.issues.insert(0, Issue("(row)", "more cells than columns; the extra cells are ignored", "warning"))
        yield p


def count_csv_rows(text: str) -> int:
    return max(0, sum(1 for _ in csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))) - 1)


def _int(cells: dict[str, str], name: str, issues: list[Issue]) -> int | None:
    v = cells.get(name, "")
    if v == "":
        return None
    try:
        return int(v)
    except ValueError:
        issues.append(Issue(name, f"must be a whole number, not '{v[:20]}'", "reject"))
        return None


def _csv_row(n: int, line: int, cells: dict[str, str]) -> Parsed:
    p = Parsed(index=n, record=None, line=line, service_id=cells.get("id") or None)
    unstorable = [Issue(name, why, "reject") for name, why in unstorable_strings(cells)]
    if unstorable:
        p.issues.extend(unstorable)
        return p
    try:
        return _csv_record(p, cells)
    except ValidationError as e:
        for issue in _validation_issues(e):
            p.issues.append(replace(issue, field=f"contact_{issue.field}" if issue.field in (
                "name", "email", "webhook_url") else issue.field))
        p.record = None
        return p


def _csv_record(p: Parsed, cells: dict[str, str]) -> Parsed:
    for name, limit in (("id", 64), ("organization_id", 64), ("name", 300), ("organization_name", 300)):
        if len(cells.get(name, "")) > limit:
            p.issues.append(Issue(name, f"longer than {limit} characters", "reject"))
    for name in CSV_REQUIRED:
        if not cells.get(name):
            p.issues.append(Issue(name, "missing: required", "reject"))
    status = cells.get("status", "").lower() or "active"
    if status not in STATUSES:
        p.issues.append(Issue("status", f"must be one of {', '.join(STATUSES)}", "reject"))
    online_cell = cells.get("online", "").lower()
    if online_cell not in _TRUE | _FALSE:
        p.issues.append(Issue("online", f"must be yes or no (ya/tidak), not '{online_cell[:20]}'", "reject"))
    ages = {k: _int(cells, k, p.issues) for k in ("minimum_age", "maximum_age")}
    seats = {k: _int(cells, k, p.issues) for k in ("seats_available", "seats_max")}
    for k, age in ages.items():
        if age is not None and not 0 <= age <= 150:
            p.issues.append(Issue(k, "must be between 0 and 150", "reject"))
    if None not in ages.values() and ages["minimum_age"] > ages["maximum_age"]:  # type: ignore[operator]
        p.issues.append(Issue("maximum_age", "less than minimum_age", "reject"))
    if any(i.severity == "reject" for i in p.issues):
        p.record = None
        return p

    sid = cells["id"]
    facts: dict[str, list[str]] = {}
    for taxonomy, column in ((PMKS, "pmks"), (SUPPORT_TYPE, "support_types"), (RESOURCE_KIND, "resource_kind"),
                             (POLICY, "policies")):
        facts[taxonomy] = []
        for code in _split(cells.get(column, "")):
            reason = _unknown_code(taxonomy, code)
            if reason:
                p.issues.append(Issue(column, reason + "; ignored", "warning"))
            elif code not in facts[taxonomy]:
                facts[taxonomy].append(code)
    if len(facts[RESOURCE_KIND]) > 1:
        p.issues.append(Issue("resource_kind", f"one kind only; '{facts[RESOURCE_KIND][0]}' is kept", "warning"))
    areas = [a for a in (_region(c, "areas", p.issues) for c in _split(cells.get("areas", ""))) if a]
    languages = []
    for code in _split(cells.get("languages", "").lower()):
        if _LANGUAGE.match(code):
            languages.append(code)
        else:
            p.issues.append(Issue("languages", f"'{code[:20]}' is not an ISO 639 code such as 'id'; ignored",
                                  "warning"))
    if not languages:
        languages = ["id"]

    capacities: list[Capacity] = []
    avail, most = seats["seats_available"], seats["seats_max"]
    if avail is not None or most is not None:
        if avail is None or most is None:
            p.issues.append(Issue("seats_available" if avail is None else "seats_max",
                                  "missing: seats_available and seats_max go together; capacity refused", "reject"))
        elif avail < 0 or most < 0:
            p.issues.append(Issue("seats_available" if avail < 0 else "seats_max", "negative; capacity refused",
                                  "reject"))
        elif most > MAX_COUNT:
            p.issues.append(Issue("seats_max", f"more than {MAX_COUNT:,}; capacity refused", "reject"))
        elif avail > most:
            p.issues.append(Issue("seats_available", f"greater than seats_max ({avail} > {most}): capacity refused",
                                  "reject"))
        else:
            capacities.append(Capacity(id=stable_id(sid, "capacity", "seats"), available=avail, maximum=most))

    contacts = []
    if cells.get("contact_email") or cells.get("contact_name"):
        contacts.append(_contact(
            HsdsContact(name=cells.get("contact_name") or None, email=cells.get("contact_email") or None,
                        webhook_url=cells.get("contact_webhook_url") or None),
            "contact", stable_id(sid, "contact", "0"), p.issues))
        # Its id comes from the row's id: the same row under another organisation reuses it.
        p.contact_fields[contacts[0].id] = "contact_email"
    links = []
    if cells.get("location_name") or cells.get("address"):
        addr = (Address(address_1=cells.get("address") or None, city=cells.get("city") or None, country="ID"),)
        links.append(ServiceAtLocation(id=stable_id(sid, "service_at_location", "0"), location=Location(
            id=stable_id(sid, "location", "0"), name=cells.get("location_name") or None,
            addresses=addr if cells.get("address") else ())))
    online = online_cell in _TRUE  # a virtual location is added for it (ServiceRecord.__post_init__)
    schedules = ([Schedule(id=stable_id(sid, "schedule", "0"), description=cells["schedule"])]
                 if cells.get("schedule") else [])
    org_name = cells["organization_name"]
    org_id = cells.get("organization_id") or f"org-{_slug(org_name)}"
    rec = ServiceRecord(
        id=sid, organization_id=org_id, organization_name=org_name, name=cells["name"],
        resource_kind=facts[RESOURCE_KIND][0] if facts[RESOURCE_KIND] else "", pmks=tuple(facts[PMKS]),
        areas=tuple(areas), contact_id="", contact_email="", online=online,
        support_types=tuple(facts[SUPPORT_TYPE]), languages=tuple(languages), policies=tuple(facts[POLICY]),
        minimum_age=ages["minimum_age"], maximum_age=ages["maximum_age"], description=cells.get("description", ""),
        status=status, organization=OrganizationInfo(org_id, org_name), contacts=tuple(contacts),
        schedules=tuple(schedules), locations=tuple(links), capacities=tuple(capacities),
    )
    return _finish(p, rec)


# ------------------------------------------------------------------------------------------
# To HSDS (what the admin API answers)
# ------------------------------------------------------------------------------------------


def _clean(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None and v != [] and v != ()}


def to_hsds(rec: ServiceRecord, *, seats_available: int | None = None) -> dict[str, Any]:
    """The record as an HSDS 3.1 service_full. `seats_available` is the live count (the
    matcher holds seats), shown as the seat capacity's `available`."""
    org = rec.organization or OrganizationInfo(rec.organization_id, rec.organization_name)
    seats = rec.seats

    def capacity(c: Capacity) -> dict[str, Any]:
        d = _clean({"id": c.id, "service_id": rec.id, "available": c.available, "maximum": c.maximum,
                    "description": c.description, "updated": c.updated,
                    "unit": _clean(asdict(c.unit)) if c.unit else None})
        if c is seats and seats_available is not None:
            d["available"] = seats_available
        return d

    def contact(c: Contact) -> dict[str, Any]:
        d = _clean({k: v for k, v in asdict(c).items() if k != "phones"})
        d["service_id"] = rec.id
        if c.phones:
            d["phones"] = [_clean(asdict(ph)) for ph in c.phones]
        return d

    def location(sal: ServiceAtLocation) -> dict[str, Any]:
        loc = _clean({k: v for k, v in asdict(sal.location).items() if k != "addresses"})
        if sal.location.addresses:
            loc["addresses"] = [_clean(asdict(a)) for a in sal.location.addresses]
        return _clean({"id": sal.id, "service_id": rec.id, "location_id": sal.location.id,
                       "description": sal.description, "location": loc})

    out: dict[str, Any] = dict(rec.extra)
    out.update(_clean({
        "id": rec.id, "organization_id": org.id, "name": rec.name, "alternate_name": rec.alternate_name,
        "description": rec.description, "url": rec.url, "email": rec.email, "status": rec.status,
        "minimum_age": rec.minimum_age, "maximum_age": rec.maximum_age,
    }))
    out["organization"] = _clean(asdict(org))
    out["service_areas"] = [
        {"id": stable_id(rec.id, "service_area", code), "service_id": rec.id, "name": regions.name(code),
         "extent": code, "extent_type": "text"} for code in rec.areas]
    out["service_at_locations"] = [location(sal) for sal in rec.locations]
    out["languages"] = [{"id": stable_id(rec.id, "language", code), "service_id": rec.id, "code": code,
                         "name": LANGUAGE_NAMES.get(code, code)} for code in rec.languages]
    out["contacts"] = [contact(c) for c in rec.contacts]
    out["schedules"] = [_clean({**asdict(s), "service_id": rec.id}) for s in rec.schedules]
    out["capacities"] = [capacity(c) for c in rec.capacities]
    out["attributes"] = [_clean({
        "id": a.id, "link_id": rec.id, "link_type": "service", "link_entity": "service",
        "taxonomy_term_id": a.term.id, "value": a.value, "label": a.label,
        "taxonomy_term": _clean(asdict(a.term)),
    }) for a in rec.attributes()]
    return out
