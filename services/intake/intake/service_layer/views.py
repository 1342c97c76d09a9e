"""What intake's API answers, as typed read models: a referral as its agency sees it, its
timeline, and a referring agency as an operator sees it. The use cases here call the
service layer and turn its rows into these models, so that routes never see the ORM.

Referral timestamps keep the form clients have always read (`datetime.isoformat()`,
`+00:00`); agencies' keep pydantic's (`Z`), as they always had."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    model_serializer,
)

from intake.adapters.orm import Agency, Referral, TimelineEntry
from intake.domain.model import ReferralRequest
from intake.service_layer.agencies import Agencies, IssuedKey
from intake.service_layer.referrals import Intake
from shared.vocab import ReferralStatus, RiskFlag, SupportType, Urgency

IsoTime = Annotated[
    datetime,
    PlainSerializer(datetime.isoformat, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


# --- referrals ---------------------------------------------------------------------------


class ProposedService(BaseModel):
    """The service a referral was last proposed to, as matching decided it: the keys stored
    with the referral, answered as stored (a key it was stored without stays absent)."""

    model_config = ConfigDict(extra="allow")
    decision_id: str | None = Field(default=None, description="matching's decision (the receiver's proposal) id")
    service_id: str | None = None
    service_name: str | None = None
    organization_name: str | None = None
    resource_kind: str | None = None
    hold_expires_at: str | None = Field(default=None, json_schema_extra={"format": "date-time"},
                                        description="until when the seat is held for the receiver's answer")
    recipient_receiver_ids: list[str] | None = Field(
        default=None, description="the receivers who may read the person's details once accepted")

    @model_serializer(mode="wrap")
    def _as_stored(self, handler: SerializerFunctionWrapHandler):  # no return type: the schema stays the fields'
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if k in self.model_fields_set or k in (self.model_extra or {})}


class Reason(BaseModel):
    id: str = Field(description="in Bahasa Indonesia")
    en: str = Field(description="in English")


class TimelineItem(BaseModel):
    """One step of a referral: what happened, who did it, why, and the status it moved to."""

    at: IsoTime
    kind: str = Field(description="submitted, proposed, waitlisted, unmatched, accepted, declined, in_progress, "
                                  "completed, cancelled, hold_expired, escalated, withdrawn, rematch_requested, "
                                  "notified, notification_failed, response_refused, personal_data_viewed")
    status: ReferralStatus | None = Field(description="the status the referral moved to; null when it did not move")
    actor: str = Field(description="agency:<id>, matching, notify or receiver:<id>")
    reason: Reason


class ReferralView(BaseModel):
    """A referral as the agency that submitted it reads it (no personal data)."""

    id: str
    external_ref: str = Field(description="the agency's own case number")
    status: ReferralStatus
    pmks_category: str
    urgency: Urgency
    needs: list[SupportType]
    risk_flags: list[RiskFlag]
    region_code: str
    created_at: IsoTime
    updated_at: IsoTime
    match: ProposedService | None = Field(description="the service proposed, once matching proposed one")


class Handover(BaseModel):
    """Whom the agency calls at the service that accepted: its professional contact, as the
    directory gives it (never the person referred)."""

    name: str = ""
    phone: str = ""
    email: str = ""


class ReferralWithTimeline(ReferralView):
    timeline: list[TimelineItem] = Field(description="every step, oldest first")
    handover: Handover | None = Field(
        default=None, description="the accepting service's contact: once accepted, null before")


class ReferralPage(BaseModel):
    items: list[ReferralView] = Field(description="newest first; with updated_since or cursor: in the order they "
                                                  "changed, oldest change first")
    limit: int
    offset: int
    next_cursor: str | None = Field(default=None, description=(
        "with updated_since or cursor: pass it as `cursor` for the changes after this page (also when the page "
        "is empty: polling with it again misses nothing); null otherwise"))
    has_more: bool | None = Field(default=None, description="with updated_since or cursor: another page is ready")

    @model_serializer(mode="wrap")
    def _polling_fields_when_polling(self, handler: SerializerFunctionWrapHandler):  # no return type: as above
        data: dict[str, Any] = handler(self)
        if self.next_cursor is None and self.has_more is None:  # the list as it always was
            data.pop("next_cursor", None)
            data.pop("has_more", None)
        return data


def _fields(r: Referral) -> dict[str, Any]:
    return {"id": r.id, "external_ref": r.external_ref, "status": r.status, "pmks_category": r.pmks_category,
            "urgency": r.urgency, "needs": r.needs, "risk_flags": r.risk_flags, "region_code": r.region_code,
            "created_at": r.created_at, "updated_at": r.updated_at,
            "match": None if r.matched_service is None else ProposedService.model_validate(r.matched_service)}


def _step(t: TimelineEntry) -> TimelineItem:
    return TimelineItem(at=t.at, kind=t.kind, status=t.status, actor=t.actor,
                        reason=Reason(id=t.reason_id, en=t.reason_en))


def referral_view(r: Referral) -> ReferralView:
    return ReferralView(**_fields(r))


def with_timeline(r: Referral, timeline: list[TimelineEntry]) -> ReferralWithTimeline:
    return ReferralWithTimeline(**_fields(r), timeline=[_step(t) for t in timeline],
                                handover=None if r.handover is None else Handover.model_validate(r.handover))


async def submit(intake: Intake, agency_id: str, req: ReferralRequest) -> tuple[ReferralView, bool]:
    """The referral recorded (or the earlier one, for a repeat) and whether it is new."""
    referral, created = await intake.submit(agency_id, req)
    return referral_view(referral), created


async def referral(intake: Intake, agency_id: str, referral_id: str) -> ReferralWithTimeline:
    return with_timeline(*await intake.get(agency_id, referral_id))


async def referrals(intake: Intake, agency_id: str, status: ReferralStatus | None, limit: int,
                    offset: int) -> ReferralPage:
    items = await intake.list_for_agency(agency_id, status, limit, offset)
    return ReferralPage(items=[referral_view(r) for r in items], limit=limit, offset=offset)


async def rematch(intake: Intake, agency_id: str, referral_id: str) -> ReferralWithTimeline:
    """Ask matching to try again, then read the referral back with the step it added."""
    await intake.rematch(agency_id, referral_id)
    return await referral(intake, agency_id, referral_id)


async def cancel(intake: Intake, agency_id: str, referral_id: str, reason_code: str) -> ReferralWithTimeline:
    """Cancel the referral, then read it back with the timeline step the cancel added."""
    await intake.cancel(agency_id, referral_id, reason_code)
    return await referral(intake, agency_id, referral_id)


# --- agencies ----------------------------------------------------------------------------


class AgencyView(BaseModel):
    id: str
    name: str
    active: bool
    created_at: datetime
    key_issued_at: datetime | None
    key_hint: str | None = Field(description="the key's first characters, to tell keys apart")
    revoked_at: datetime | None


class AgencyWithKey(AgencyView):
    api_key: str = Field(description="the agency's API key: shown this once, kept only as a keyed hash")


class AgencyList(BaseModel):
    items: list[AgencyView]


def agency_view(agency: Agency) -> AgencyView:
    return AgencyView.model_validate(agency, from_attributes=True)


def _with_key(issued: IssuedKey) -> AgencyWithKey:
    return AgencyWithKey(**agency_view(issued.agency).model_dump(), api_key=issued.api_key)


async def agency_for_key(intake: Intake, api_key: str) -> AgencyView | None:
    """The active agency this key belongs to, or None."""
    agency = await intake.agency_for_key(api_key)
    return None if agency is None else agency_view(agency)


async def create_agency(agencies: Agencies, name: str, agency_id: str | None) -> AgencyWithKey:
    return _with_key(await agencies.create(name, agency_id))


async def all_agencies(agencies: Agencies) -> AgencyList:
    return AgencyList(items=[agency_view(a) for a in await agencies.all()])


async def rotate_key(agencies: Agencies, agency_id: str) -> AgencyWithKey:
    return _with_key(await agencies.rotate(agency_id))


async def revoke_agency(agencies: Agencies, agency_id: str) -> AgencyView:
    return agency_view(await agencies.revoke(agency_id))
