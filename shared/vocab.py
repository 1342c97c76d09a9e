"""The project's controlled vocabularies (the brief's domain), shared by all services."""

from __future__ import annotations

from enum import StrEnum


class SupportType(StrEnum):
    emotional = "emotional"
    esteem = "esteem"
    instrumental = "instrumental"
    informational = "informational"
    network = "network"


class Urgency(StrEnum):
    routine = "routine"
    priority = "priority"
    crisis = "crisis"


class RiskFlag(StrEnum):
    ongoing_violence = "ongoing_violence"
    suicidal_ideation = "suicidal_ideation"
    child_at_risk = "child_at_risk"
    medical_emergency = "medical_emergency"


class Gender(StrEnum):
    female = "female"
    male = "male"
    other = "other"
    undisclosed = "undisclosed"


class Modality(StrEnum):
    online = "online"
    in_person = "in_person"
    any = "any"


SUPPORT_GROUP_KINDS = frozenset(
    {"peer_support", "self_help", "recreation_group", "psychoeducation", "economic_empowerment"}
)
PROFESSIONAL_KINDS = frozenset(
    {
        "psychologist", "psychiatrist", "social_worker", "uptd_ppa", "police_ppa", "legal_aid",
        "health_facility", "shelter", "rehabilitation_centre",
    }
)
RESOURCE_KINDS = SUPPORT_GROUP_KINDS | PROFESSIONAL_KINDS
POLICIES = frozenset({"women_only", "crisis_capable", "open_24h"})


class ReferralStatus(StrEnum):
    """FHIR SDOH Task-aligned lifecycle (see the brief)."""

    submitted = "submitted"
    proposed = "proposed"
    accepted = "accepted"
    in_progress = "in_progress"
    completed = "completed"
    declined = "declined"
    waitlisted = "waitlisted"
    unmatched = "unmatched"
    cancelled = "cancelled"


OPEN_STATUSES = frozenset(
    {ReferralStatus.submitted, ReferralStatus.proposed, ReferralStatus.accepted,
     ReferralStatus.in_progress, ReferralStatus.waitlisted, ReferralStatus.declined}
)


def is_urgent(urgency: str, risk_flags: list[str] | list[RiskFlag]) -> bool:
    """Crisis or any risk flag: a crisis-capable professional, at once, ahead of routine work."""
    return urgency == Urgency.crisis or bool(risk_flags)


def age_band(age: int) -> str:
    """Five-year band ("25-29") so that no exact age travels on a stream."""
    low = (age // 5) * 5
    return f"{low}-{low + 4}"


def parse_age_band(band: str) -> tuple[int, int]:
    low, high = band.split("-")
    return int(low), int(high)
