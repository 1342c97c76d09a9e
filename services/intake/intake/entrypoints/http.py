"""Intake's agency API. Routes only translate HTTP to the service layer and back."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status

from intake.adapters.orm import Agency, Referral, TimelineEntry
from intake.domain.model import CancelRequest, ReferralRequest
from intake.service_layer.referrals import Intake, NotFound, NotOpen, ReferralConflict
from shared.http import BearerToken, unauthorized
from shared.vocab import ReferralStatus


async def get_intake(request: Request) -> Intake:  # async: no thread-pool hop per request
    return request.app.state.intake


IntakeDep = Annotated[Intake, Depends(get_intake)]


async def current_agency(token: BearerToken, intake: IntakeDep) -> Agency:
    agency = await intake.agency_for_key(token)
    if agency is None:
        raise unauthorized()
    return agency


AgencyDep = Annotated[Agency, Depends(current_agency)]

router = APIRouter(prefix="/v1")


def referral_view(r: Referral, timeline: list[TimelineEntry] | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": r.id, "external_ref": r.external_ref, "status": r.status,
        "pmks_category": r.pmks_category, "urgency": r.urgency, "needs": r.needs, "risk_flags": r.risk_flags,
        "region_code": r.region_code, "created_at": r.created_at.isoformat(),
        "updated_at": r.updated_at.isoformat(), "match": r.matched_service,
    }
    if timeline is not None:
        view["timeline"] = [
            {"at": t.at.isoformat(), "kind": t.kind, "status": t.status, "actor": t.actor,
             "reason": {"id": t.reason_id, "en": t.reason_en}}
            for t in timeline
        ]
    return view


@router.post("/referrals", status_code=status.HTTP_202_ACCEPTED, responses={
    200: {"description": "A repeat: this external_ref was submitted before with the same content; its referral"}})
async def submit_referral(body: ReferralRequest, agency: AgencyDep, intake: IntakeDep,
                          response: Response) -> dict[str, Any]:
    try:
        referral, created = await intake.submit(agency.id, body)
    except ReferralConflict as e:
        raise HTTPException(status.HTTP_409_CONFLICT, {
            "field": "external_ref", "referral_id": str(e),
            "reason": "this external_ref was already used for a referral with different content",
        }) from None
    response.headers["Location"] = f"/v1/referrals/{referral.id}"
    if not created:
        response.status_code = status.HTTP_200_OK
    return referral_view(referral)


@router.get("/referrals/{referral_id}")
async def get_referral(referral_id: str, agency: AgencyDep, intake: IntakeDep) -> dict[str, Any]:
    try:
        referral, timeline = await intake.get(agency.id, referral_id)
    except NotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such referral for this agency") from None
    return referral_view(referral, timeline)


@router.get("/referrals")
async def list_referrals(agency: AgencyDep, intake: IntakeDep,
                         status_: Annotated[ReferralStatus | None, Query(alias="status")] = None,
                         limit: Annotated[int, Query(ge=1, le=200)] = 50,
                         offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0) -> dict[str, Any]:
    items = await intake.list_for_agency(agency.id, status_, limit, offset)
    return {"items": [referral_view(r) for r in items], "limit": limit, "offset": offset}


@router.post("/referrals/{referral_id}/cancel")
async def cancel_referral(referral_id: str, body: CancelRequest, agency: AgencyDep,
                          intake: IntakeDep) -> dict[str, Any]:
    """Cancel an open referral: its seat is released and the receiver is told."""
    try:
        await intake.cancel(agency.id, referral_id, body.reason_code)
        referral, timeline = await intake.get(agency.id, referral_id)
    except NotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such referral for this agency") from None
    except NotOpen as e:
        raise HTTPException(status.HTTP_409_CONFLICT, {
            "field": "status", "status": str(e),
            "reason": f"the referral is {e}: only an open referral can be cancelled",
        }) from None
    return referral_view(referral, timeline)
