"""The receiver's reading of a referral's personal data, with a grant from notify."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status

from intake.entrypoints.http import IntakeDep
from intake.service_layer.referrals import NotFound
from intake.service_layer.sharing import CredentialRevoked, NotYours, read_for_receiver
from shared.grants import Grant, InvalidGrant, verify
from shared.http import BearerToken


async def receiver_grant(token: BearerToken, request: Request) -> Grant:
    try:
        return verify(request.app.state.settings.receiver_grant_secret, token)
    except InvalidGrant as e:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"invalid receiver grant: {e}",
                            headers={"WWW-Authenticate": "Bearer"}) from None


GrantDep = Annotated[Grant, Depends(receiver_grant)]

router = APIRouter(prefix="/v1/receivers", tags=["receivers"])


@router.get("/referrals/{referral_id}")
async def personal_data(referral_id: str, grant: GrantDep, intake: IntakeDep) -> dict[str, Any]:
    try:
        return await read_for_receiver(intake, grant, referral_id)
    except NotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such referral") from None
    except NotYours as e:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(e)) from None
    except CredentialRevoked as e:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"invalid receiver grant: {e}",
                            headers={"WWW-Authenticate": "Bearer"}) from None
