"""A service as the directory keeps it, whatever it was imported from, and the ids its parts
get (stable across imports).

Project facts travel as HSDS taxonomy terms whose ``code`` is the value, in the taxonomies
``pmks``, ``support_type``, ``resource_kind`` and ``policy``. A service area carries a
Kemendagri region code; an online service has a virtual location; the seat count is the
capacity without a unit or with a unit of seats.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from shared.pmks import categories

# Bump when the mapping changes what a record becomes, so that re-importing an unchanged
# file after an upgrade still rewrites the rows derived from it.
MAPPING_VERSION = 1

PMKS, SUPPORT_TYPE, RESOURCE_KIND, POLICY = "pmks", "support_type", "resource_kind", "policy"
PROJECT_TAXONOMIES = (PMKS, SUPPORT_TYPE, RESOURCE_KIND, POLICY)
STATUSES = ("active", "inactive", "defunct", "temporarily closed")
SEAT_UNITS = frozenset({"seat", "seats", "kursi", "place", "places", "slot", "slots", "person", "persons",
                        "people", "orang", "peserta", "participant", "participants"})
_NS = uuid.UUID("6f0b8a4e-52a1-4c4e-9d0e-2a7f1c9b3e11")
MAX_COUNT = 1_000_000  # seats or any capacity: more is a typo (and would not fit the column)


def stable_id(*parts: str) -> str:
    """A UUID derived from its parts: the same service gives its parts the same ids on
    every import, so that re-importing changes nothing."""
    return str(uuid.uuid5(_NS, "\x1f".join(parts)))


def term_id(taxonomy: str, code: str) -> str:
    return stable_id("taxonomy_term", taxonomy, code)


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
