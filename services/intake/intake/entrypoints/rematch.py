"""Match again: the agency asks matching to try an unmatched or waitlisted referral once more,
having changed nothing but time (the directory may have changed since)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from intake.entrypoints.http import NO_REFERRAL, NOT_FOUND, AgencyDep, IntakeDep, documented
from intake.service_layer import views
from intake.service_layer.referrals import NotFound, NotRematchable
from intake.service_layer.views import ReferralWithTimeline
from shared.problems import FieldError

router = APIRouter(prefix="/v1")


def not_rematchable(current: str) -> dict[str, str]:
    return {"field": "status", "status": current,
            "reason": f"the referral is {current}: only an unmatched or waitlisted referral is matched again"}


@router.post("/referrals/{referral_id}/rematch", status_code=status.HTTP_202_ACCEPTED,
             response_model=ReferralWithTimeline, responses={
                 **NOT_FOUND,
                 409: documented(409, "The referral is neither unmatched nor waitlisted",
                                 FieldError(**not_rematchable("proposed")))})
async def rematch_referral(referral_id: str, agency: AgencyDep, intake: IntakeDep) -> ReferralWithTimeline:
    """Ask matching to match the referral again; its answer arrives on the timeline."""
    try:
        return await views.rematch(intake, agency.id, referral_id)
    except NotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, NO_REFERRAL) from None
    except NotRematchable as e:
        raise HTTPException(status.HTTP_409_CONFLICT, not_rematchable(str(e))) from None
