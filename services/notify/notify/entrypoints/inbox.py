"""The receivers' inbox over HTTP, how receivers sign in, and the operators' view of their
credentials. Routes only translate.

A receiver is signed in by the link of a proposal mail (a session cookie that opens that
proposal only, see service_layer.credentials), or a provider's system sends the bearer
token an operator issued for it (the receiver's whole inbox), which was mailed to the
receiver's own address: the operator never sees it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from fastapi.responses import RedirectResponse
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from notify.service_layer.credentials import Credential, Credentials, LinkUnusable, NoAddress, UnknownReceiver
from notify.service_layer.inbox import Conflict, Inbox, NotFound, NotOpened, ProposalItem
from shared.grants import sign
from shared.operators import OnboardingOperator
from shared.problems import PROBLEM_MEDIA_TYPE
from shared.vocab import DeclineReason, Outcome

SESSION_COOKIE = "rujukan_session"


def get_inbox(request: Request) -> Inbox:
    return request.app.state.inbox


def get_credentials(request: Request) -> Credentials:
    return request.app.state.credentials


InboxDep = Annotated[Inbox, Depends(get_inbox)]
CredentialsDep = Annotated[Credentials, Depends(get_credentials)]
_bearer = HTTPBearer(auto_error=False, description="a token an operator issued for a provider's system")
_session = APIKeyCookie(name=SESSION_COOKIE, auto_error=False,
                        description="the session a proposal mail's sign-in link started")


def _unauthorized(detail: str = "invalid credential") -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


async def receiver(credentials: CredentialsDep,
                   bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                   session: Annotated[str | None, Depends(_session)]) -> Credential:
    """The receiver asking: by its system's bearer token, else by its session cookie."""
    if bearer is not None and bearer.credentials:
        found = await credentials.by_token(bearer.credentials)
    elif session:
        found = await credentials.by_session(session)
    else:
        raise _unauthorized("sign in from the link in your proposal mail, or send your system's bearer token")
    if found is None:
        raise _unauthorized()
    return found


ReceiverDep = Annotated[Credential, Depends(receiver)]
ProposalId = Annotated[str, Path(max_length=32)]


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


class Reasons(BaseModel):
    id: list[str]
    en: list[str]


class GivenResponse(BaseModel):
    response: str
    reason_code: str | None
    outcome_code: str | None
    by: str = Field(description="the receiver id")
    at: datetime


class PersonalDataOffer(BaseModel):
    """Where and with what the receiver reads the person's details at intake: a grant for
    this receiver and referral, bound to the credential that obtained it."""

    url: str
    authorization: str
    expires_at: datetime


class ProposalView(BaseModel):
    id: str = Field(description="the proposal (matching's decision) id")
    referral_id: str
    service_id: str
    service_name: str
    organization_name: str
    pmks_category: str
    region_code: str
    urgency: str
    risk_flags: list[str]
    reasons: Reasons
    hold_expires_at: datetime | None
    status: str
    status_reason: str | None
    created_at: datetime
    updated_at: datetime
    responses: list[GivenResponse] | None = None
    personal_data: PersonalDataOffer | None = None


class InboxPage(BaseModel):
    receiver_id: str
    items: list[ProposalView]
    limit: int
    offset: int


def proposal_view(p: ProposalItem) -> ProposalView:
    return ProposalView(
        id=p.decision_id, referral_id=p.referral_id, service_id=p.service_id, service_name=p.service_name,
        organization_name=p.organization_name, pmks_category=p.pmks_category, region_code=p.region_code,
        urgency=p.urgency, risk_flags=p.risk_flags, reasons=Reasons(id=p.reasons_id, en=p.reasons_en),
        hold_expires_at=p.hold_expires_at, status=p.status, status_reason=p.status_reason,
        created_at=p.created_at, updated_at=p.updated_at,
        responses=None if p.responses is None else [
            GivenResponse(response=r.response, reason_code=r.reason_code, outcome_code=r.outcome_code,
                          by=r.receiver_id, at=r.at) for r in p.responses],
    )


def _not_yours() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, "no such proposal in your inbox")


def _not_opened() -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN,
                         "this sign-in opens only the proposal(s) it was mailed for: follow that proposal's link")


router = APIRouter(prefix="/v1", tags=["inbox"])


@router.get("/inbox", response_model=InboxPage)
async def list_proposals(who: ReceiverDep, inbox: InboxDep,
                         status_: Annotated[str | None, Query(alias="status", max_length=20)] = None,
                         limit: Annotated[int, Query(ge=1, le=200)] = 50,
                         offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> InboxPage:
    """The proposals this credential opens: a system token, the whole inbox; a session
    from a mail's link, the proposal(s) it was signed in for."""
    items = await inbox.proposals(who, status_, limit, offset)
    return InboxPage(receiver_id=who.receiver_id, items=[proposal_view(p) for p in items], limit=limit,
                     offset=offset)


@router.get("/inbox/{proposal_id}", response_model=ProposalView)
async def get_proposal(proposal_id: ProposalId, who: ReceiverDep, inbox: InboxDep, request: Request) -> ProposalView:
    try:
        p = await inbox.proposal(who, proposal_id)
    except NotFound:
        raise _not_yours() from None
    except NotOpened:
        raise _not_opened() from None
    view = proposal_view(p)
    settings = request.app.state.settings
    if p.shares_personal_data and settings.receiver_grant_secret:
        # The person's details are read at intake, never copied here: a short-lived grant
        # for this receiver and referral, which dies with the credential that obtained it.
        grant, expires = sign(settings.receiver_grant_secret, referral_id=p.referral_id,
                              decision_id=p.decision_id, receiver_id=who.receiver_id, credential_id=who.id,
                              ttl=timedelta(minutes=settings.receiver_grant_minutes), not_after=who.expires_at)
        view.personal_data = PersonalDataOffer(
            url=f"{settings.intake_public_url.rstrip('/')}/v1/receivers/referrals/{p.referral_id}",
            authorization=f"Bearer {grant}", expires_at=expires)
    return view


@router.post("/inbox/{proposal_id}/responses", status_code=status.HTTP_202_ACCEPTED, response_model=ProposalView,
             responses={200: {"description": "the same response again: nothing changed"}})
async def respond(proposal_id: ProposalId, body: ResponseRequest, who: ReceiverDep, inbox: InboxDep,
                  response: Response) -> ProposalView:
    """Accepted for matching, which confirms or releases the seat (202); the same response
    again changes nothing (200)."""
    try:
        p, changed = await inbox.respond(who, proposal_id, body.response, body.reason_code, body.outcome_code)
    except NotFound:
        raise _not_yours() from None
    except NotOpened:
        raise _not_opened() from None
    except Conflict as e:
        raise HTTPException(status.HTTP_409_CONFLICT, {"field": "response", "reason": str(e)}) from None
    if not changed:
        response.status_code = status.HTTP_200_OK
    return proposal_view(p)


# --- signing in and out ---------------------------------------------------------------------

signin = APIRouter(prefix="/v1", tags=["sign-in"])
# The sign-in answer must not be kept by a cache, nor its address sent on as a referrer.
PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@signin.get("/signin/{code}", status_code=status.HTTP_303_SEE_OTHER, response_class=RedirectResponse,
            responses={303: {"description": "signed in: on to the proposal, with the session cookie"},
                       410: {"description": "the link was used already or has expired",
                             "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}})
async def sign_in(code: Annotated[str, Path(min_length=1, max_length=100)], request: Request,
                  credentials: CredentialsDep, session: Annotated[str | None, Depends(_session)]) -> Response:
    """The proposal mail's link: consumes its single-use code, signs this browser in to that
    proposal (a session cookie) and goes on to the proposal, so the code leaves the address bar."""
    try:
        done = await credentials.sign_in(code, session)
    except LinkUnusable:
        raise HTTPException(status.HTTP_410_GONE, "this sign-in link was already used or has expired; ask for "
                            "a new one: POST /v1/signin/{code}/renew mails the proposal again, with a new link, "
                            "to the address it was sent to", headers=PRIVATE) from None
    answer = RedirectResponse(f"/v1/inbox/{done.decision_id}", status_code=status.HTTP_303_SEE_OTHER,
                              headers=PRIVATE)
    if done.cookie is not None:
        settings = request.app.state.settings
        answer.set_cookie(SESSION_COOKIE, done.cookie, expires=done.expires_at, path="/", httponly=True,
                          samesite="lax", secure=settings.public_url.lower().startswith("https://"))
    return answer


class Renewal(BaseModel):
    detail: str


@signin.post("/signin/{code}/renew", status_code=status.HTTP_202_ACCEPTED, response_model=Renewal)
async def renew_link(code: Annotated[str, Path(min_length=1, max_length=100)], request: Request,
                     credentials: CredentialsDep) -> Renewal:
    """Ask for a new link with a used or expired one: the proposal, while still open, is
    mailed again to the address it went to (once per link). The answer is the same either
    way: only that mailbox learns anything."""
    if await credentials.renew(code):
        request.app.state.notify.wake()
    return Renewal(detail="if this link's proposal is still open, it is mailed again, with a new link, to the "
                          "address it was sent to")


@signin.post("/signout", status_code=status.HTTP_204_NO_CONTENT,
             responses={204: {"description": "signed out (the session, if any, is revoked)"}})
async def sign_out(credentials: CredentialsDep, session: Annotated[str | None, Depends(_session)]) -> Response:
    """Revoke this browser's session: it and the grants it obtained open nothing more."""
    if session:
        await credentials.sign_out(session)
    answer = Response(status_code=status.HTTP_204_NO_CONTENT, headers=PRIVATE)
    answer.delete_cookie(SESSION_COOKIE, path="/")
    return answer


# --- operators: receivers' credentials ---------------------------------------------------------


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    valid_days: int = Field(default=90, ge=1, le=366)


class IssuedToken(BaseModel):
    """A token issued and on its way to the receiver: never the token itself."""

    id: str = Field(description="the token's id, to list or revoke it by")
    receiver_id: str
    expires_at: datetime
    delivered_to: str = Field(description="the receiver's registered address it is mailed to, masked "
                                          "(f***@example.org); only that mailbox holds the token")


class CredentialView(BaseModel):
    id: str
    kind: Literal["session", "token"]
    source: str = Field(description="'mail' for a session from a proposal mail; the issuing operator for a token")
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class CredentialList(BaseModel):
    receiver_id: str
    items: list[CredentialView]


ReceiverId = Annotated[str, Path(min_length=1, max_length=32)]
operator = APIRouter(prefix="/v1/receivers", tags=["receivers"])


def _unknown(receiver_id: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no receiver '{receiver_id}'")


@operator.post("/{receiver_id}/tokens", status_code=status.HTTP_202_ACCEPTED, response_model=IssuedToken,
               responses={409: {"description": "the receiver has no address on file to send the token to"}})
async def issue_token(receiver_id: ReceiverId, body: TokenRequest, op: OnboardingOperator,
                      credentials: CredentialsDep, request: Request) -> IssuedToken:
    """A token for a provider's own system (the receiver's whole inbox), mailed to the
    receiver's registered professional address: the answer says where (masked), never the
    token, so that no operator can act as a receiver."""
    try:
        issued = await credentials.issue_token(receiver_id, timedelta(days=body.valid_days), op.actor)
    except UnknownReceiver:
        raise _unknown(receiver_id) from None
    except NoAddress:
        raise HTTPException(status.HTTP_409_CONFLICT, {
            "field": "receiver_id", "reason": "no address on file to send the token to",
            "receiver_id": receiver_id}) from None
    request.app.state.notify.wake()
    return IssuedToken(id=issued.id, receiver_id=issued.receiver_id, expires_at=issued.expires_at,
                       delivered_to=issued.delivered_to)


@operator.get("/{receiver_id}/credentials", response_model=CredentialList)
async def list_credentials(receiver_id: ReceiverId, _: OnboardingOperator,
                           credentials: CredentialsDep) -> CredentialList:
    """The receiver's tokens and sessions, newest first: never a secret."""
    try:
        found = await credentials.of_receiver(receiver_id)
    except UnknownReceiver:
        raise _unknown(receiver_id) from None
    return CredentialList(receiver_id=receiver_id, items=[CredentialView(**vars(c)) for c in found])


@operator.delete("/{receiver_id}/credentials/{credential_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_credential(receiver_id: ReceiverId, credential_id: Annotated[str, Path(max_length=32)],
                            _: OnboardingOperator, credentials: CredentialsDep) -> Response:
    """Revoke a token or a session; the grants it obtained are refused at intake."""
    if not await credentials.revoke(receiver_id, credential_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such live token or session of this receiver")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
