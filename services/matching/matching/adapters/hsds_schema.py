"""An HSDS 3.0/3.1 service_full as the directory reads it: only the fields it models (every
other field of a service is kept as given), and validation errors as issues."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from matching.domain.record_issues import Issue

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


MODELLED = frozenset({
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


def validation_issues(e: ValidationError) -> list[Issue]:
    out = []
    for err in e.errors(include_url=False, include_input=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        # Unions report one error per alternative; the field and the first reason say enough.
        loc = tuple(p for p in loc if p not in ("str", "int", "float", "bool", "constrained-str"))
        issue = Issue(_loc(loc), str(err["msg"]).removeprefix("Value error, "), "reject")
        if issue not in out:
            out.append(issue)
    return out
