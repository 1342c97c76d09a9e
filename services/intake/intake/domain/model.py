"""Intake's domain: what a referral submission must say, and how its status may move."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, EmailStr, Field, JsonValue, StrictBool, field_validator, model_validator

from shared import regions
from shared.pmks import categories
from shared.text import MultiLine, OneLine
from shared.vocab import CancelReason, Gender, Modality, ReferralStatus, RiskFlag, SupportType, Urgency

LanguageCode = Annotated[str, Field(pattern=r"^[a-z]{2,3}$", description="ISO 639 code: id, jv, su, en, ...")]


class Contact(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: OneLine = Field(min_length=1, max_length=200)
    phone: str | None = Field(default=None, pattern=r"^\+?[0-9][0-9 \-]{5,19}$")
    email: EmailStr | None = None


class Caseworker(Contact):
    """The referring agency's caseworker for this referral: whom the receiving service calls
    once it accepted. Personal data of staff: sealed at rest like the person's contact, shown
    only to the receiver who accepted, never on a stream, in a log or in an address."""


class Consent(BaseModel):
    """The person's consent, recorded with the referral. Sharing with a provider is what a
    referral is, so it must be given; being contacted directly by the provider is a choice.
    JSON true or false only: "yes", "on", 1 or "true" are refused, not taken for consent."""

    model_config = ConfigDict(extra="forbid")
    share_with_provider: StrictBool
    contact_by_provider: StrictBool

    @field_validator("share_with_provider")
    @classmethod
    def _must_share(cls, v: bool) -> bool:
        if not v:
            raise ValueError("a referral needs the person's consent to share it with the provider")
        return v


class Client(BaseModel):
    model_config = ConfigDict(extra="forbid")
    initials: OneLine = Field(min_length=1, max_length=10)
    age: int = Field(ge=0, le=120)
    gender: Gender
    region_code: str = Field(description="Kemendagri code: province 12, regency 12.71, district 12.71.05",
                             json_schema_extra={"pattern": regions.schema_pattern(), "examples": ["12.71.05"]})
    languages: list[LanguageCode] = Field(default_factory=lambda: ["id"], min_length=1, max_length=10)
    modality: Modality = Modality.any
    contact: Contact
    consent: Consent

    @field_validator("region_code")
    @classmethod
    def _region(cls, v: str) -> str:
        return regions.validate(v)


class ReferralRequest(BaseModel):
    """The body of POST /v1/referrals."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "external_ref": "PPA-MDN-2026-0142", "pmks_category": "korban_tindak_kekerasan",
        "needs": ["emotional", "instrumental"], "urgency": "priority", "risk_flags": [],
        "client": {"initials": "SN", "age": 34, "gender": "female", "region_code": "12.71.05",
                   "languages": ["id"], "modality": "in_person",
                   "contact": {"name": "Siti", "phone": "+62 812 3456 7890", "email": "siti@example.org"},
                   "consent": {"share_with_provider": True, "contact_by_provider": True}},
        "narrative": "Butuh pendampingan psikologis setelah kejadian.",
        "caseworker": {"name": "Rina Hutapea", "phone": "+62 61 455 0123", "email": "rina@ppa-medan.go.id"},
    }]})
    external_ref: OneLine = Field(min_length=1, max_length=100, description="the agency's own case number")
    pmks_category: str = Field(description="one of the 26 PMKS codes, e.g. korban_tindak_kekerasan",
                               json_schema_extra={"enum": list[JsonValue](sorted(categories()))})
    needs: list[SupportType] = Field(default_factory=list, max_length=5)
    urgency: Urgency = Urgency.routine
    risk_flags: list[RiskFlag] = Field(default_factory=list, max_length=4)
    client: Client
    narrative: MultiLine = Field(default="", max_length=10_000)
    caseworker: Caseworker | None = Field(
        default=None, description="the agency's caseworker (optional): shown to the receiver once it accepted")

    @field_validator("pmks_category")
    @classmethod
    def _category(cls, v: str) -> str:
        if v not in categories():
            raise ValueError("unknown PMKS category; use one of the 26 codes of Permensos 08/2012")
        return v

    @model_validator(mode="after")
    def _dedupe(self) -> ReferralRequest:
        self.needs = sorted(set(self.needs))
        self.risk_flags = sorted(set(self.risk_flags))
        self.client.languages = list(dict.fromkeys(self.client.languages))
        return self


# Which status an event may move a referral to, from which statuses. Anything else is
# recorded on the timeline but leaves the status as it is (late or out-of-order events).
# A decline or an expired hold is followed at once by matching's next decision (proposed
# again, waitlisted or unmatched); an expired hold itself changes no status.
TRANSITIONS: dict[ReferralStatus, frozenset[ReferralStatus]] = {
    # From unmatched too: the agency asked to match again, or the directory changed.
    ReferralStatus.proposed: frozenset({ReferralStatus.submitted, ReferralStatus.waitlisted,
                                        ReferralStatus.declined, ReferralStatus.proposed,
                                        ReferralStatus.unmatched}),
    ReferralStatus.unmatched: frozenset({ReferralStatus.submitted, ReferralStatus.declined,
                                         ReferralStatus.proposed, ReferralStatus.waitlisted}),
    ReferralStatus.waitlisted: frozenset({ReferralStatus.submitted, ReferralStatus.declined,
                                          ReferralStatus.proposed, ReferralStatus.unmatched}),
    # From declined too: an escalated crisis has several proposals open; one declined leaves
    # the others, and matching only reports an acceptance it applied.
    ReferralStatus.accepted: frozenset({ReferralStatus.proposed, ReferralStatus.declined}),
    ReferralStatus.declined: frozenset({ReferralStatus.proposed}),
    ReferralStatus.in_progress: frozenset({ReferralStatus.accepted}),
    ReferralStatus.completed: frozenset({ReferralStatus.in_progress, ReferralStatus.accepted}),
    # Unmatched too: it is matched again when the directory could serve it, unless cancelled.
    ReferralStatus.cancelled: frozenset({ReferralStatus.submitted, ReferralStatus.proposed,
                                         ReferralStatus.accepted, ReferralStatus.in_progress,
                                         ReferralStatus.waitlisted, ReferralStatus.declined,
                                         ReferralStatus.unmatched}),
}


class CancelRequest(BaseModel):
    """The body of POST /v1/referrals/{id}/cancel. A code, not free text: the reason goes
    to matching and to the receiver, and free text could carry the person's details."""

    model_config = ConfigDict(extra="forbid")
    reason_code: CancelReason = Field(description="client_withdrew, needs_met_elsewhere, client_unreachable, "
                                                  "duplicate, entered_in_error or other")


# What the agency may ask to match again: a referral no service took, or one waiting for a seat.
REMATCHABLE = frozenset({ReferralStatus.unmatched, ReferralStatus.waitlisted})


def may_move(current: str, new: ReferralStatus) -> bool:
    return ReferralStatus(current) in TRANSITIONS.get(new, frozenset())


def may_cancel(current: str) -> bool:
    """Open, or unmatched (which a change in the directory may still match): the agency may cancel."""
    return may_move(current, ReferralStatus.cancelled)
