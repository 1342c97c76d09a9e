"""A directory record as an HSDS 3.1 service_full (what the admin API answers)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from matching.domain.directory_record import (
    Capacity,
    Contact,
    OrganizationInfo,
    ServiceAtLocation,
    ServiceRecord,
    stable_id,
)
from shared import regions

LANGUAGE_NAMES = {
    "id": "Bahasa Indonesia", "jv": "Basa Jawa", "su": "Basa Sunda", "en": "English",
    "mad": "Basa Madhura", "min": "Baso Minang", "ban": "Basa Bali", "bug": "Basa Ugi",
    "ms": "Bahasa Melayu", "ace": "Bahsa Acèh", "bjn": "Bahasa Banjar", "btk": "Batak",
}


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
