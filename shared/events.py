"""Event contracts: a CloudEvents 1.0 style envelope and versioned payload schemas.

Rules kept here for every service:
- No personal data of the person referred: ids and the non-identifying facts matching
  needs (category, region code, age band, gender, needs, urgency, flags, languages,
  modality). Names, phones, addresses and narratives never leave intake's database.
- Consumers ignore fields they do not know (`extra="ignore"`) and refuse what they cannot
  parse; the stream consumer moves refused entries to the dead-letter stream with the reason.
- A type's version is part of its name (`referral.submitted.v1`): a breaking change gets a
  new type, and old consumers dead-letter what they do not know instead of misreading it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import cache
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from ulid import ULID

from shared.vocab import Gender, Modality, RiskFlag, SupportType, Urgency


def new_id() -> str:
    return str(ULID())


def utcnow() -> datetime:
    return datetime.now(UTC)


class EventData(BaseModel):
    """Base of every payload; `TYPE` is the versioned CloudEvents type."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    TYPE: ClassVar[str]


Code = Annotated[str, Field(min_length=1, max_length=64)]


class ReferralSubmitted(EventData):
    TYPE: ClassVar[str] = "referral.submitted.v1"
    referral_id: str
    agency_id: str
    pmks_category: Code
    needs: list[SupportType] = []
    urgency: Urgency
    risk_flags: list[RiskFlag] = []
    region_code: str
    age_band: str = Field(pattern=r"^\d{1,3}-\d{1,3}$")
    gender: Gender
    languages: list[str] = []
    modality: Modality
    consent_share: bool


class Candidate(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    service_id: str
    score: float | None = None
    outcome: str  # "chosen" or why it lost
    reasons_id: list[str] = []
    reasons_en: list[str] = []


class Recipient(BaseModel):
    """Who receives a proposal: the service's professional contact, never the client.

    `receiver_id` is the identity matching issued for this (organisation, service, contact):
    the inbox, sign-ins, tokens, grants and the timeline all key on it. The HSDS contact id
    is informational only: a directory record can reuse another's, never its receiver id."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    receiver_id: str = Field(min_length=1, max_length=32)
    contact_id: str = ""
    email: str
    language: str = "id"
    # Other channels, as the directory gives them for this contact: a professional phone for
    # SMS/WhatsApp, the contact's webhook, and the channels it prefers, first is first.
    phone: str = Field(default="", max_length=40)
    webhook_url: str = Field(default="", max_length=2000)
    channels: list[Literal["email", "sms", "whatsapp", "webhook"]] = []


class HandoverContact(BaseModel):
    """Whom the agency calls once a referral is accepted: the receiving service's
    professional contact from the directory (never the person referred)."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    name: str = Field(default="", max_length=200)
    phone: str = Field(default="", max_length=40)
    email: str = Field(default="", max_length=320)


class ReferralMatched(EventData):
    TYPE: ClassVar[str] = "referral.matched.v2"
    referral_id: str
    decision_id: str
    service_id: str
    service_name: str
    organization_name: str
    resource_kind: str
    pmks_category: str
    region_code: str
    urgency: Urgency
    hold_expires_at: datetime | None = None
    reasons_id: list[str]
    reasons_en: list[str]
    recipients: list[Recipient]
    candidates: list[Candidate] = []
    # Carried so that every hop keeps a flagged case in the urgent lane (see streams.stream_for).
    risk_flags: list[RiskFlag] = []
    # When the referral was submitted (its referral.submitted event's time), for notify's
    # submission-to-notification metric; None from a matching that did not send it yet.
    submitted_at: datetime | None = None


class NoMatchFields(EventData):
    """The fields of a decision that proposed no service; not an event type itself."""

    referral_id: str
    decision_id: str
    pmks_category: str
    region_code: str
    urgency: Urgency
    reasons_id: list[str]
    reasons_en: list[str]
    candidates: list[Candidate] = []
    risk_flags: list[RiskFlag] = []


class ReferralUnmatched(NoMatchFields):
    """No suitable service: the referral closes."""

    TYPE: ClassVar[str] = "referral.unmatched.v1"


class ReferralWaitlisted(NoMatchFields):
    """Every suitable service is full: the referral waits for a free seat."""

    TYPE: ClassVar[str] = "referral.waitlisted.v1"


ResponseKind = Literal["accepted", "declined", "in_progress", "completed"]


class ReferralResponse(EventData):
    """A receiver's response to a proposal, as given in notify's inbox (notify -> matching).

    Matching decides whether it takes effect (the seat is its to confirm or release) and
    publishes the result as `referral.status_changed` or `referral.response_refused`.
    Reasons and outcomes travel as codes (shared.vocab); a receiver's free-text note stays
    in notify's database, since free text may name the person.
    """

    TYPE: ClassVar[str] = "referral.response.v2"
    referral_id: str
    decision_id: str
    service_id: str
    response: ResponseKind
    reason_code: Code | None = None  # a DeclineReason, for "declined"
    outcome_code: Code | None = None  # an Outcome, for "completed"
    responder_receiver_id: str
    responded_at: datetime
    urgency: Urgency
    risk_flags: list[RiskFlag] = []


class ReferralCancelled(EventData):
    """The referring agency cancelled an open referral (intake -> matching, notify)."""

    TYPE: ClassVar[str] = "referral.cancelled.v1"
    referral_id: str
    agency_id: str
    reason_code: Code  # a CancelReason
    urgency: Urgency
    risk_flags: list[RiskFlag] = []


class ReferralStatusChanged(EventData):
    """A step of the closed loop that matching applied (matching -> intake, notify): the
    receiver accepted, declined, started or completed, or the seat's hold expired. A
    decline or an expiry is followed, in the same transaction, by the next decision."""

    TYPE: ClassVar[str] = "referral.status_changed.v1"
    referral_id: str
    decision_id: str
    service_id: str
    service_name: str = ""
    organization_name: str = ""
    status: Literal["accepted", "declined", "in_progress", "completed", "hold_expired"]
    reason_code: Code | None = None
    outcome_code: Code | None = None
    actor: str  # "receiver:<receiver id>" or "matching"
    at: datetime
    urgency: Urgency
    risk_flags: list[RiskFlag] = []
    # With "accepted" only: the receiving service's contact, for the agency's handover.
    handover: HandoverContact | None = None


class ReferralRematchRequested(EventData):
    """The agency asks matching to try an unmatched or waitlisted referral again (intake ->
    matching), having changed nothing but time."""

    TYPE: ClassVar[str] = "referral.rematch_requested.v1"
    referral_id: str
    agency_id: str
    requested_at: datetime
    urgency: Urgency
    risk_flags: list[RiskFlag] = []


class ReferralEscalated(EventData):
    """A crisis (or risk-flagged) proposal was not accepted in time: matching proposed the
    next crisis-capable professional as well (matching -> intake, notify). The new proposal
    is its own `referral.matched` (decision_id); the earlier one stays open until one of
    them is accepted."""

    TYPE: ClassVar[str] = "referral.escalated.v1"
    referral_id: str
    decision_id: str  # the new proposal's decision
    previous_decision_id: str  # the proposal nobody answered
    service_id: str  # the newly proposed service ("" when no other crisis-capable one is left)
    level: int = Field(ge=1)  # 1 for the first escalation, 2 for the second...
    reason_code: Code  # e.g. "crisis_unanswered"
    minutes_waited: float = Field(ge=0)
    at: datetime
    urgency: Urgency
    risk_flags: list[RiskFlag] = []


class ReferralProposalWithdrawn(EventData):
    """A proposal that is no longer wanted, because another one of the same referral was
    accepted first (matching -> intake, notify): its receiver is told, its seat released."""

    TYPE: ClassVar[str] = "referral.proposal_withdrawn.v1"
    referral_id: str
    decision_id: str
    service_id: str
    receiver_ids: list[str] = []
    reason_code: Code  # e.g. "accepted_elsewhere"
    at: datetime
    urgency: Urgency
    risk_flags: list[RiskFlag] = []


class ReferralResponseRefused(EventData):
    """A response matching could not apply (it came after the hold expired, after the
    agency cancelled, or for a proposal no longer current): the receiver is told."""

    TYPE: ClassVar[str] = "referral.response_refused.v2"
    referral_id: str
    decision_id: str
    service_id: str
    response: ResponseKind
    responder_receiver_id: str
    reason_code: Literal["hold_expired", "cancelled", "not_current", "invalid_transition"]
    urgency: Urgency
    risk_flags: list[RiskFlag] = []


class NotificationFields(EventData):
    """The fields of a delivery's outcome; not an event type itself."""

    referral_id: str
    delivery_id: str
    decision_id: str
    channel: Literal["email", "webhook"] = "email"
    receiver_id: str
    # What was sent: the proposal, or a notice that it was closed (expired, cancelled, ...).
    kind: str = "proposal"


class NotificationSent(NotificationFields):
    TYPE: ClassVar[str] = "notification.sent.v2"


class NotificationFailed(NotificationFields):
    TYPE: ClassVar[str] = "notification.failed.v2"
    reason: str


class ReceiverRegistered(EventData):
    """Matching issued a receiver identity for a directory record's receiving contact
    (matching -> notify): notify may then issue that receiver's credentials. Issued once
    per (organisation, service, contact); a record that reuses another's contact id gets
    its own."""

    TYPE: ClassVar[str] = "receiver.registered.v1"
    receiver_id: str = Field(min_length=1, max_length=32)
    organization_id: str
    service_id: str
    contact_id: str = ""  # the HSDS id, informational
    # The contact's professional address: where notify mails what only the receiver may
    # hold (a system token). Empty in events published before it was carried.
    contact_email: str = Field(default="", max_length=320)


class ReceiverCredentialRevoked(EventData):
    """A receiver's session or token was revoked, or signed out (notify -> intake): the
    grants it obtained are refused from then on. The credential's id only."""

    TYPE: ClassVar[str] = "receiver.credential_revoked.v1"
    credential_id: str = Field(min_length=1, max_length=32)


EVENT_TYPES: dict[str, type[EventData]] = {
    cls.TYPE: cls
    for cls in (
        ReferralSubmitted, ReferralMatched, ReferralUnmatched, ReferralWaitlisted,
        ReferralResponse, ReferralCancelled, ReferralStatusChanged, ReferralResponseRefused,
        ReferralRematchRequested, ReferralEscalated, ReferralProposalWithdrawn,
        NotificationSent, NotificationFailed, ReceiverRegistered, ReceiverCredentialRevoked,
    )
}


class Envelope(BaseModel):
    """CloudEvents 1.0 attributes plus W3C trace context."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=new_id)
    type: str
    source: str
    subject: str
    time: datetime = Field(default_factory=utcnow)
    datacontenttype: Literal["application/json"] = "application/json"
    traceparent: str | None = None
    data: dict[str, Any]

    @classmethod
    def wrap(cls, data: EventData, *, source: str, subject: str, traceparent: str | None = None) -> Envelope:
        if traceparent is None:  # made in a request or a handler: carry its trace on
            from shared.tracing import current_traceparent
            traceparent = current_traceparent()
        return cls(type=data.TYPE, source=source, subject=subject, traceparent=traceparent,
                   data=data.model_dump(mode="json"))

    def payload(self) -> EventData:
        """The typed payload; raises UnknownEventType or pydantic ValidationError."""
        cls = EVENT_TYPES.get(self.type)
        if cls is None:
            raise UnknownEventType(f"unknown event type '{self.type}'")
        return cls.model_validate(self.data)

    def to_fields(self) -> dict[str, str]:
        """The stream entry: one JSON field, plus the type for operators' eyes (XRANGE)."""
        return {"type": self.type, "event": self.model_dump_json()}


@cache
def envelope_model(data_type: type[EventData]) -> type[Envelope]:
    """The envelope of one event type, typed all the way down: what the AsyncAPI documents
    say an entry carries (the wire format is Envelope, parsed by `parse_entry`)."""
    literal: Any = Literal[data_type.TYPE]  # a type made at run time, one per event type
    return create_model(
        f"{data_type.__name__}Event", __base__=Envelope, __doc__=f"An envelope carrying `{data_type.TYPE}`.",
        type=(literal, ...), data=(data_type, ...),
    )


class UnknownEventType(ValueError):
    pass


class BadEvent(ValueError):
    """An entry that can never be processed: it goes to the dead-letter stream at once."""


def parse_entry(fields: dict[bytes, bytes] | dict[str, str]) -> tuple[Envelope, EventData]:
    """Parse a stream entry into its envelope and typed payload, or raise BadEvent with why."""
    raw = fields.get(b"event") if b"event" in fields else fields.get("event")  # type: ignore[call-overload]
    if raw is None:
        raise BadEvent("entry has no 'event' field")
    try:
        env = Envelope.model_validate(json.loads(raw))
        return env, env.payload()
    except json.JSONDecodeError as e:
        raise BadEvent(f"malformed JSON: {e.msg} at position {e.pos}") from None
    except UnknownEventType as e:
        raise BadEvent(str(e)) from None
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in e.errors()[:5]
        )
        raise BadEvent(f"schema-invalid: {problems}") from None
