"""Agency staff who sign in to the agency pages as themselves, for operators with the
onboarding role: register a member's professional address, list them, remove one (their
links and sessions stop working at once). Routes only translate."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, Response, status
from pydantic import BaseModel, ConfigDict, EmailStr

from intake.entrypoints.http import documented
from intake.service_layer.agencies import AGENCY_ID, NoSuchAgency
from intake.service_layer.staff import NoSuchStaff, Staff, StaffExists, StaffList, StaffMember
from shared.operators import Role, operator_with
from shared.problems import FieldError


async def get_staff(request: Request) -> Staff:
    return request.app.state.staff


StaffDep = Annotated[Staff, Depends(get_staff)]
AgencyIdPath = Annotated[str, Path(pattern=AGENCY_ID.pattern, description="the agency's id")]

router = APIRouter(prefix="/v1/agencies/{agency_id}/staff", tags=["agencies"],
                   dependencies=[Depends(operator_with(Role.onboarding))])


class NewStaff(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: EmailStr


NO_AGENCY: dict[int | str, dict[str, Any]] = {
    404: documented(404, "No agency with this id", "no agency 'uptd-ppa-medan'")}


@router.post("", status_code=status.HTTP_201_CREATED, response_model=StaffMember, responses={
    **NO_AGENCY,
    409: documented(409, "This address is registered already (for this or another agency)",
                    FieldError(field="email", reason="this address is registered already"))})
async def add_staff(agency_id: AgencyIdPath, body: NewStaff, staff: StaffDep) -> StaffMember:
    """Register a member: they can ask for a sign-in link on /agency/signin from now on."""
    try:
        return await staff.add(agency_id, body.email)
    except NoSuchAgency:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agency '{agency_id}'") from None
    except StaffExists:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            {"field": "email", "reason": "this address is registered already"}) from None


@router.get("", response_model=StaffList, responses=NO_AGENCY)
async def list_staff(agency_id: AgencyIdPath, staff: StaffDep) -> StaffList:
    try:
        return await staff.all(agency_id)
    except NoSuchAgency:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no agency '{agency_id}'") from None


@router.delete("/{staff_id}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response, responses={
    404: documented(404, "No such member of this agency's staff", "no such member of this agency's staff")})
async def remove_staff(agency_id: AgencyIdPath, staff_id: str, staff: StaffDep) -> Response:
    """The member's sign-in links and sessions stop working now."""
    try:
        await staff.remove(agency_id, staff_id)
    except NoSuchStaff:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such member of this agency's staff") from None
    return Response(status_code=status.HTTP_204_NO_CONTENT)
