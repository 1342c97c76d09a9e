"""What one input record became: the record (or none when it is refused) and the issues
found, each naming the field and the reason:

- ``reject``: the record (or, for a capacity, that one capacity) is refused;
- ``flag``: the record is kept but the matcher cannot use it (no PMKS term, no contact email
  to send referrals to, no area and not online, no resource kind): stored, never matched;
- ``warning``: a value was ignored (an unknown code, a geographic extent, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from matching.domain.directory_record import ServiceRecord

Severity = Literal["reject", "flag", "warning"]


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

    def accept(self, rec: ServiceRecord) -> Parsed:
        """Keeps the record, with a warning when it has no seat count and the flags that
        keep it from the matcher."""
        if rec.capacities and rec.seats is None:
            self.issues.append(Issue("capacities", "no capacity in seats (no unit, or a unit such as 'seats'): "
                                                   "0 seats until one is given", "warning"))
        elif not rec.capacities:
            self.issues.append(Issue("capacities", "no seat capacity: 0 seats until one is given "
                                                   "(referrals wait)", "warning"))
        self.issues.extend(matchability_flags(rec))
        self.record = rec
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
