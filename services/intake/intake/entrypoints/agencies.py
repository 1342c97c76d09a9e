"""Onboarding of referring agencies, for operators with the onboarding role: create an
agency with its API key, list them, rotate a key, revoke an agency. Routes only translate.

A key is in the answer that issues it and nowhere else, ever again."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, status
from pydantic import BaseModel, ConfigDict, Field

from intake.entrypoints.http import documented
from intake.service_layer import views
from intake.service_layer.agencies import AGENCY_ID, Agencies, AgencyExists, NoSuchAgency
from intake.service_layer.views import AgencyList, AgencyView, AgencyWithKey
from shared.operators import Role, operator_with
from shared.problems import FieldError
from shared.text import OneLine


async def get_agencies(request: Request) -> Agencies:
    return request.app.state.intake.agencies


AgenciesDep = Annotated[Agencies, Depends(get_agencies)]
AgencyIdPath = Annotated[str, Path(pattern=AGENCY_ID.pattern, description="the agency's id")]

router = APIRouter(prefix="/v1/agencies", tags=["agencies"], dependencies=[Depends(operator_with(Role.onboarding))])


class NewAgency(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(default=None, pattern=AGENCY_ID.pattern,
                           description="lower-case letters, digits, . _ -; made up when not given")
    name: OneLine = Field(min_length=1, max_length=200)


def no_such_agency(agency_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no agency '{agency_id}'")


NO_AGENCY: dict[int | str, dict[str, Any]] = {
    404: documented(404, "No agency with this id", "no agency 'uptd-ppa-medan'")}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=AgencyWithKey, responses={
    409: documented(409, "An agency with this id exists",
                    FieldError(field="id", reason="an agency with this id exists"))})
async def create_agency(body: NewAgency, agencies: AgenciesDep) -> AgencyWithKey:
    try:
        return await views.create_agency(agencies, body.name, body.id)
    except AgencyExists:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            {"field": "id", "reason": "an agency with this id exists"}) from None


@router.get("", response_model=AgencyList)
async def list_agencies(agencies: AgenciesDep) -> AgencyList:
    return await views.all_agencies(agencies)


@router.post("/{agency_id}/keys/rotate", response_model=AgencyWithKey, responses=NO_AGENCY)
async def rotate_key(agency_id: AgencyIdPath, agencies: AgenciesDep) -> AgencyWithKey:
    """A new key (shown once); the old one stops working now. A revoked agency is active again."""
    try:
        return await views.rotate_key(agencies, agency_id)
    except NoSuchAgency:
        raise no_such_agency(agency_id) from None


@router.post("/{agency_id}/revoke", response_model=AgencyView, responses=NO_AGENCY)
async def revoke_agency(agency_id: AgencyIdPath, agencies: AgenciesDep) -> AgencyView:
    """The agency's key stops working now; its referrals and their timelines stay."""
    try:
        return await views.revoke_agency(agencies, agency_id)
    except NoSuchAgency:
        raise no_such_agency(agency_id) from None
