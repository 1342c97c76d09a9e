"""The recipients' inbox over HTTP, and the operator's tokens for it. Routes only translate.

A recipient authenticates with its own bearer token (from a proposal mail, or issued by an
operator) and sees only the proposals sent to its contact.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from notify.adapters.orm import Proposal, RecipientToken
from notify.adapters.orm import Response as ResponseRow
from notify.entrypoints.http import admin
from notify.service_layer.inbox import Conflict, Inbox, NotFound
from shared.grants import sign
from shared.http import BearerToken, unauthorized
from shared.vocab import DeclineReason, Outcome


def get_inbox(request: Request) -> Inbox:
    return request.app.state.inbox


InboxDep = Annotated[Inbox, Depends(get_inbox)]


async def recipient(token: BearerToken, inbox: InboxDep) -> RecipientToken:
    found = await inbox.authenticate(token)
    if found is None:
        raise unauthorized()
    return found


RecipientDep = Annotated[RecipientToken, Depends(recipient)]


class ResponseRequest(BaseModel):
    """A response to a proposal: accept; decline with a reason; then in_progress;
    completed with an outcome. Codes only: free text could carry the person's details."""

    model_config = ConfigDict(extra="forbid")
    response: Literal["accepted", "declined", "in_progress", "completed"]
    reason_code: DeclineReason | None = Field(default=None, validate_default=True,
                                              description="why you decline (required with declined)")
    outcome_code: Outcome | None = Field(default=None, validate_default=True,
                                         description="how it ended (required with completed)")

    @field_validator("reason_code")
    @classmethod
    def _reason_with_decline(cls, v: DeclineReason | None, info: ValidationInfo) -> DeclineReason | None:
        response = info.data.get("response")
        if response == "declined" and v is None:
            raise ValueError("a decline needs a reason: " + ", ".join(DeclineReason))
        if response != "declined" and v is not None:
            raise ValueError("only a decline carries a reason_code")
        return v

    @field_validator("outcome_code")
    @classmethod
    def _outcome_with_completed(cls, v: Outcome | None, info: ValidationInfo) -> Outcome | None:
        response = info.data.get("response")
        if response == "completed" and v is None:
            raise ValueError("completing needs an outcome: " + ", ".join(Outcome))
        if response != "completed" and v is not None:
            raise ValueError("only completing carries an outcome_code")
        return v


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    valid_days: int = Field(default=90, ge=1, le=366)


def proposal_view(p: Proposal, responses: list[ResponseRow] | None = None) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": p.decision_id, "referral_id": p.referral_id, "service_id": p.service_id,
        "service_name": p.service_name, "organization_name": p.organization_name,
        "pmks_category": p.pmks_category, "region_code": p.region_code, "urgency": p.urgency,
        "risk_flags": p.risk_flags, "reasons": {"id": p.reasons_id, "en": p.reasons_en},
        "hold_expires_at": p.hold_expires_at.isoformat() if p.hold_expires_at else None,
        "status": p.status, "status_reason": p.status_reason,
        "created_at": p.created_at.isoformat(), "updated_at": p.updated_at.isoformat(),
    }
    if responses is not None:
        view["responses"] = [{"response": r.response, "reason_code": r.reason_code, "outcome_code": r.outcome_code,
                              "by": r.contact_id, "at": r.created_at.isoformat()} for r in responses]
    return view


router = APIRouter(prefix="/v1")


@router.get("/inbox", tags=["inbox"])
async def list_proposals(who: RecipientDep, inbox: InboxDep,
                         status_: Annotated[str | None, Query(alias="status")] = None,
                         limit: Annotated[int, Query(ge=1, le=200)] = 50,
                         offset: Annotated[int, Query(ge=0)] = 0) -> dict[str, Any]:
    items = await inbox.proposals(who.contact_id, status_, limit, offset)
    return {"contact_id": who.contact_id, "items": [proposal_view(p) for p in items],
            "limit": limit, "offset": offset}


@router.get("/inbox/{proposal_id}", tags=["inbox"])
async def get_proposal(proposal_id: str, who: RecipientDep, inbox: InboxDep, request: Request) -> dict[str, Any]:
    try:
        p, responses = await inbox.proposal(who.contact_id, proposal_id)
    except NotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such proposal in your inbox") from None
    view = proposal_view(p, responses)
    settings = request.app.state.settings
    if p.status in ("accepted", "in_progress") and settings.receiver_grant_secret:
        # The person's details are read at intake, never copied here: a short-lived grant
        # for this receiver and this referral, which intake checks and records.
        grant, expires = sign(settings.receiver_grant_secret, referral_id=p.referral_id,
                              decision_id=p.decision_id, contact_id=who.contact_id,
                              ttl=timedelta(minutes=settings.receiver_grant_minutes))
        view["personal_data"] = {
            "url": f"{settings.intake_public_url.rstrip('/')}/v1/receivers/referrals/{p.referral_id}",
            "authorization": f"Bearer {grant}", "expires_at": expires.isoformat(),
        }
    return view


@router.post("/inbox/{proposal_id}/responses", status_code=status.HTTP_202_ACCEPTED, tags=["inbox"])
async def respond(proposal_id: str, body: ResponseRequest, who: RecipientDep, inbox: InboxDep,
                  response: Response) -> dict[str, Any]:
    """Accepted for matching, which confirms or releases the seat (202); the same response
    again changes nothing (200)."""
    try:
        p, changed = await inbox.respond(who, proposal_id, body.response, body.reason_code, body.outcome_code)
    except NotFound:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such proposal in your inbox") from None
    except Conflict as e:
        raise HTTPException(status.HTTP_409_CONFLICT, {"field": "response", "reason": str(e)}) from None
    if not changed:
        response.status_code = status.HTTP_200_OK
    return proposal_view(p)


operator = APIRouter(prefix="/v1", dependencies=[Depends(admin)], tags=["recipients"])


@operator.post("/recipients/{contact_id}/tokens", status_code=status.HTTP_201_CREATED)
async def issue_token(contact_id: str, body: TokenRequest, inbox: InboxDep) -> dict[str, Any]:
    """A token for a provider's own system; shown once, only its hash is kept."""
    token_id, token, expires_at = await inbox.issue_token(contact_id, timedelta(days=body.valid_days))
    return {"id": token_id, "contact_id": contact_id, "token": token, "expires_at": expires_at.isoformat()}


@operator.delete("/recipients/{contact_id}/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_token(contact_id: str, token_id: str, inbox: InboxDep) -> Response:
    if not await inbox.revoke_token(contact_id, token_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such active token for this contact")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
