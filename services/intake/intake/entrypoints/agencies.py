"""Onboarding of referring agencies, for operators with the onboarding role: create an
agency with its API key, list them, rotate a key, revoke an agency. Routes only translate.

A key is in the answer that issues it and nowhere else, ever again."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, status
from pydantic import BaseModel, ConfigDict, Field

from intake.adapters.orm import Agency
from intake.service_layer.agencies import AGENCY_ID, Agencies, AgencyExists, IssuedKey, NoSuchAgency
from shared.operators import Role, operator_with
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


def view(agency: Agency) -> AgencyView:
    return AgencyView.model_validate(agency, from_attributes=True)


def with_key(issued: IssuedKey) -> AgencyWithKey:
    return AgencyWithKey(**view(issued.agency).model_dump(), api_key=issued.api_key)


def no_such_agency(agency_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no agency '{agency_id}'")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=AgencyWithKey,
             responses={409: {"description": "an agency with this id exists"}})
async def create_agency(body: NewAgency, agencies: AgenciesDep) -> AgencyWithKey:
    try:
        return with_key(await agencies.create(body.name, body.id))
    except AgencyExists:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            {"field": "id", "reason": "an agency with this id exists"}) from None


@router.get("", response_model=AgencyList)
async def list_agencies(agencies: AgenciesDep) -> AgencyList:
    return AgencyList(items=[view(a) for a in await agencies.all()])


@router.post("/{agency_id}/keys/rotate", response_model=AgencyWithKey, responses={404: {"description": "no agency"}})
async def rotate_key(agency_id: AgencyIdPath, agencies: AgenciesDep) -> AgencyWithKey:
    """A new key (shown once); the old one stops working now. A revoked agency is active again."""
    try:
        return with_key(await agencies.rotate(agency_id))
    except NoSuchAgency:
        raise no_such_agency(agency_id) from None


@router.post("/{agency_id}/revoke", response_model=AgencyView, responses={404: {"description": "no agency"}})
async def revoke_agency(agency_id: AgencyIdPath, agencies: AgenciesDep) -> AgencyView:
    """The agency's key stops working now; its referrals and their timelines stay."""
    try:
        return view(await agencies.revoke(agency_id))
    except NoSuchAgency:
        raise no_such_agency(agency_id) from None
