"""Intake's agency API. Routes only translate HTTP to the service layer and back."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status

from intake.domain.model import CancelRequest, ReferralRequest
from intake.service_layer import referral_queries, views
from intake.service_layer.referrals import Intake, NotFound, NotOpen, ReferralConflict
from intake.service_layer.views import AgencyView, ReferralPage, ReferralView, ReferralWithTimeline
from shared.http import BearerToken, unauthorized
from shared.problems import PROBLEM_MEDIA_TYPE, FieldError, Problem, summary, title_of
from shared.vocab import ReferralStatus


async def get_intake(request: Request) -> Intake:  # async: no thread-pool hop per request
    return request.app.state.intake


IntakeDep = Annotated[Intake, Depends(get_intake)]


async def current_agency(token: BearerToken, intake: IntakeDep) -> AgencyView:
    agency = await views.agency_for_key(intake, token)
    if agency is None:
        raise unauthorized()
    return agency


AgencyDep = Annotated[AgencyView, Depends(current_agency)]

router = APIRouter(prefix="/v1")


def documented(code: int, description: str, detail: str | FieldError) -> dict[str, Any]:
    """An error response for a route's `responses`: the problem shape with an example of
    exactly what the route answers."""
    errors = [detail] if isinstance(detail, FieldError) else []
    example = Problem(title=title_of(code), status=code, detail=summary(errors) if errors else str(detail),
                      errors=errors)
    return {"description": description, "content": {PROBLEM_MEDIA_TYPE: {
        "schema": {"$ref": "#/components/schemas/Problem"}, "example": example.model_dump(mode="json")}}}


NO_REFERRAL = "no such referral for this agency"
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: documented(
    404, "No referral with this id for this agency (another agency's is not told apart)", NO_REFERRAL)}


@router.post("/referrals", status_code=status.HTTP_202_ACCEPTED, response_model=ReferralView, responses={
    200: {"description": "A repeat: this external_ref was submitted before with the same content; its referral"},
    409: documented(409, "This external_ref was already used for a referral with different content", FieldError(
        field="external_ref", referral_id="01JDZ8Q2V7Y3K4M5N6P7R8S9T0",
        reason="this external_ref was already used for a referral with different content"))})
async def submit_referral(body: ReferralRequest, agency: AgencyDep, intake: IntakeDep,
                          response: Response) -> ReferralView:
    try:
        referral, created = await views.submit(intake, agency.id, body)
    except ReferralConflict as e:
        raise HTTPException(status.HTTP_409_CONFLICT, {
            "field": "external_ref", "referral_id": str(e),
            "reason": "this external_ref was already used for a referral with different content",
        }) from None
    response.headers["Location"] = f"/v1/referrals/{referral.id}"
    if not created:
        response.status_code = status.HTTP_200_OK
    return referral


@router.get("/referrals/{referral_id}", response_model=ReferralWithTimeline, responses=NOT_FOUND)
async def get_referral(referral_id: str, agency: AgencyDep, intake: IntakeDep) -> ReferralWithTimeline:
    try:
        return await views.referral(intake, agency.id, referral_id)
    except NotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_REFERRAL) from None


@router.get("/referrals", response_model=ReferralPage)
async def list_referrals(
    agency: AgencyDep, intake: IntakeDep, request: Request,
    status_: Annotated[ReferralStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    updated_since: Annotated[datetime | None, Query(description=(
        "polling: the referrals changed at or after this time, in the order they changed (UTC when no zone)"))] = None,
    cursor: Annotated[str | None, Query(max_length=200, description=(
        "polling: the `next_cursor` of the previous page; the changes after it"))] = None,
    external_ref: Annotated[str | None, Query(max_length=100, description="the agency's own case number")] = None,
) -> ReferralPage:
    """The agency's referrals, newest first, a page at a time. For polling, pass
    `updated_since` once, then each answer's `next_cursor` as `cursor`: every change is
    answered once a change is a few seconds old (POLL_SETTLE_S), and none is skipped. A
    cursor this API did not give is 422, naming the field `cursor`."""
    if updated_since is not None or cursor is not None:
        try:
            return await referral_queries.changed_since(
                intake, agency.id, since=updated_since, cursor=cursor, status=status_, external_ref=external_ref,
                limit=limit, settle_s=getattr(request.app.state, "poll_settle_s", 0.0))
        except referral_queries.BadCursor:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, {
                "field": "cursor", "reason": "not a cursor this API gave"}) from None
    if external_ref is not None:
        return await referral_queries.by_external_ref(intake, agency.id, external_ref, status_, limit, offset)
    return await views.referrals(intake, agency.id, status_, limit, offset)


@router.post("/referrals/{referral_id}/cancel", response_model=ReferralWithTimeline, responses={
    **NOT_FOUND,
    409: documented(409, "The referral is closed (completed or cancelled): nothing left to cancel",
                    FieldError(field="status", status="completed",
                               reason="the referral is completed: only an open referral can be cancelled"))})
async def cancel_referral(referral_id: str, body: CancelRequest, agency: AgencyDep,
                          intake: IntakeDep) -> ReferralWithTimeline:
    """Cancel an open referral: its seat is released and the receiver is told."""
    try:
        return await views.cancel(intake, agency.id, referral_id, body.reason_code)
    except NotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_REFERRAL) from None
    except NotOpen as e:
        raise HTTPException(status.HTTP_409_CONFLICT, {
            "field": "status", "status": str(e),
            "reason": f"the referral is {e}: only an open referral can be cancelled",
        }) from None
