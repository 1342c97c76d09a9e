"""The project's controlled vocabularies (the brief's domain), shared by all services."""

from __future__ import annotations

from enum import StrEnum


class SupportType(StrEnum):
    emotional = "emotional"
    esteem = "esteem"
    instrumental = "instrumental"
    informational = "informational"
    network = "network"


# How a social worker reads each support type in Bahasa Indonesia.
SUPPORT_TYPE_ID: dict[str, str] = {
    "emotional": "emosional", "esteem": "penghargaan diri", "instrumental": "bantuan praktis",
    "informational": "informasi", "network": "jejaring sosial",
}


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


class DeclineReason(StrEnum):
    """Why a receiver declines a proposal (a code travels on streams; free text never does)."""

    no_capacity = "no_capacity"
    outside_mandate = "outside_mandate"
    not_suitable = "not_suitable"
    conflict_of_interest = "conflict_of_interest"
    safety_concern = "safety_concern"
    other = "other"


class Outcome(StrEnum):
    """How a referral ended at the receiver (FHIR SDOH Task output, in a few plain codes)."""

    goals_met = "goals_met"
    partially_met = "partially_met"
    referred_onward = "referred_onward"
    client_withdrew = "client_withdrew"
    unable_to_contact = "unable_to_contact"
    other = "other"


class CancelReason(StrEnum):
    """Why the referring agency cancels an open referral."""

    client_withdrew = "client_withdrew"
    needs_met_elsewhere = "needs_met_elsewhere"
    client_unreachable = "client_unreachable"
    duplicate = "duplicate"
    entered_in_error = "entered_in_error"
    other = "other"


# What a social worker reads for each code: (Bahasa Indonesia, English).
REASON_LABELS: dict[str, tuple[str, str]] = {
    "no_capacity": ("kapasitas layanan penuh", "no capacity"),
    "outside_mandate": ("di luar kewenangan layanan", "outside the service's mandate"),
    "not_suitable": ("layanan tidak sesuai kebutuhan klien", "the service does not fit the person's needs"),
    "conflict_of_interest": ("konflik kepentingan", "conflict of interest"),
    "safety_concern": ("masalah keamanan", "safety concern"),
    "goals_met": ("tujuan layanan tercapai", "goals met"),
    "partially_met": ("tujuan tercapai sebagian", "goals partially met"),
    "referred_onward": ("dirujuk lanjut ke layanan lain", "referred onward"),
    "client_withdrew": ("klien mengundurkan diri", "the person withdrew"),
    "unable_to_contact": ("klien tidak dapat dihubungi", "the person could not be contacted"),
    "needs_met_elsewhere": ("kebutuhan sudah terpenuhi di tempat lain", "needs met elsewhere"),
    "client_unreachable": ("klien tidak dapat dihubungi", "the person could not be reached"),
    "duplicate": ("rujukan ganda", "duplicate referral"),
    "entered_in_error": ("salah input", "entered in error"),
    "other": ("alasan lain", "other reason"),
    # Why matching could not apply a receiver's response (referral.response_refused).
    "hold_expired": ("batas waktu sudah habis", "the hold had already expired"),
    "cancelled": ("rujukan sudah dibatalkan", "the referral was already cancelled"),
    "not_current": ("usulan tidak berlaku lagi", "the proposal is no longer current"),
    "invalid_transition": ("tidak sesuai tahap rujukan", "out of turn for the referral's stage"),
    # Why a crisis proposal escalated (referral.escalated) or a proposal was withdrawn.
    "crisis_unanswered": ("usulan krisis belum diterima", "the crisis proposal was not accepted"),
    "accepted_elsewhere": ("rujukan sudah diterima layanan lain", "another service accepted the referral first"),
}


def reason_label(code: str | None) -> tuple[str, str]:
    """(Bahasa Indonesia, English) of a reason or outcome code; an unknown code as itself."""
    if not code:
        return "", ""
    return REASON_LABELS.get(code, (code, code))


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
