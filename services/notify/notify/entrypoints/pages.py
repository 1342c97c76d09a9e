"""The receivers' pages (server-rendered HTML): the proposal mail's link, the proposal page
with its answers, "My referrals", and signing out. Routes only translate between forms and
the service layer: the same use cases as the JSON API (service_layer.inbox, .credentials).

Sessions: a mail's link (`/signin/{code}`) is exchanged at once for the session cookie the
API uses too, then redirected (303) to the page, so the code leaves the address bar. A
proposal mail's session opens that proposal only; "My referrals" lists what this browser's
session opens, and mails (to the receiver's registered address only) a link whose session
opens the receiver's whole inbox.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from notify.entrypoints.inbox import PRIVATE, SESSION_COOKIE, ResponseRequest
from notify.service_layer.credentials import WHOLE_INBOX, Credential, Credentials, LinkUnusable
from notify.service_layer.inbox import Conflict, Inbox, NotFound, NotOpened, ProposalItem
from shared import regions
from shared.grants import sign
from shared.pmks import categories
from shared.vocab import DeclineReason, Outcome, reason_label
from shared.web.i18n import Gettext, gettext_for, language_of
from shared.web.pages import PageProblem, form_of
from shared.web.zones import zone_of

router = APIRouter(include_in_schema=False)
OPEN = ("proposed", "accepted", "in_progress")
CODE_MAX = 100
ID_MAX = 32


def _credentials(request: Request) -> Credentials:
    return request.app.state.credentials


def _inbox(request: Request) -> Inbox:
    return request.app.state.inbox


def _gettext(request: Request) -> Gettext:
    return gettext_for(language_of(request))


def _secure(request: Request) -> bool:
    return str(request.app.state.settings.public_url).lower().startswith("https://")


async def _who(request: Request) -> Credential | None:
    """The receiver signed in in this browser (the session cookie the mail's link set)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    return await _credentials(request).by_session(cookie) if cookie else None


def _signed_out(request: Request) -> HTMLResponse:
    return request.app.state.pages.render(request, "receiver_signin_needed.html", status=401)


def labels(_: Gettext) -> dict[str, dict[str, str]]:
    """What a receiver reads for each code (literal messages, so the catalogue finds them)."""
    return {
        "urgency": {"routine": _("Routine"), "priority": _("Priority"), "crisis": _("Crisis: act at once")},
        "risk": {"ongoing_violence": _("Ongoing violence"), "suicidal_ideation": _("Thoughts of suicide"),
                 "child_at_risk": _("A child at risk"), "medical_emergency": _("Medical emergency")},
        "status": {"proposed": _("Waiting for your answer"), "accepted": _("Accepted"),
                   "in_progress": _("In progress"), "completed": _("Completed"), "declined": _("Declined"),
                   "expired": _("Time ran out"), "cancelled": _("Cancelled by the agency"),
                   "withdrawn": _("No longer yours")},
        "next": {
            "proposed": _("Please accept or decline before the seat's hold ends. The referring agency sees "
                          "your answer at once."),
            "accepted": _("You accepted: the seat is confirmed and the referring agency was told. Read the "
                          "person's details, contact them, then press Start when the service begins."),
            "in_progress": _("The service is under way and the referring agency was told. Press Complete when "
                             "it ends."),
            "completed": _("Completed, and the referring agency was told. Thank you."),
            "declined": _("You declined. The referring agency was told, and the referral goes on to another "
                          "service. Nothing more is needed from you."),
            "expired": _("The time to answer ran out: the seat was released and the referral went on to "
                         "another service. Nothing more is needed from you."),
            "cancelled": _("The referring agency cancelled this referral. Please stop any follow-up."),
            "withdrawn": _("This proposal is no longer current: the referral is not with you any more. "
                           "Nothing more is needed from you."),
        },
    }


def _code_label(code: str | None, lang: str) -> str:
    ind, eng = reason_label(code)
    return ind if lang == "id" else eng


def describe(p: ProposalItem, lang: str, _: Gettext) -> dict[str, Any]:
    """The proposal as the page shows it: names in the person's language, no personal data."""
    cat = categories().get(p.pmks_category)
    names = labels(_)
    return {
        "id": p.decision_id, "category": (cat.nama if lang == "id" else cat.english) if cat else p.pmks_category,
        "region": regions.name(p.region_code), "region_code": p.region_code, "zone": zone_of(p.region_code),
        "service_name": p.service_name, "organization_name": p.organization_name,
        "urgency": p.urgency, "urgency_label": names["urgency"].get(p.urgency, p.urgency),
        "crisis": p.urgency == "crisis" or bool(p.risk_flags),
        "risks": [names["risk"].get(f, f) for f in p.risk_flags],
        "reasons": p.reasons_id if lang == "id" else p.reasons_en,
        "hold_expires_at": p.hold_expires_at, "status": p.status,
        "status_label": names["status"].get(p.status, p.status),
        "next": names["next"].get(p.status, ""),
        "status_reason": _code_label(p.status_reason, lang) if p.status_reason else "",
        "open": p.status in OPEN, "created_at": p.created_at,
        "responses": [{"response": names["status"].get(r.response, r.response),
                       "why": _code_label(r.reason_code or r.outcome_code, lang), "at": r.at}
                      for r in (p.responses or [])],
    }


def _options(codes: type[DeclineReason] | type[Outcome], lang: str) -> list[tuple[str, str]]:
    return [(str(c), _code_label(str(c), lang)) for c in codes]


# --- the mail's link ---------------------------------------------------------------------------


@router.get("/signin/{code}")
async def sign_in(code: str, request: Request) -> Response:
    """The proposal mail's button: the single-use code becomes this browser's session at once,
    and the page opens without the code in the address bar (303)."""
    if len(code) > CODE_MAX:
        return _spent(request, "")
    try:
        done = await _credentials(request).sign_in(code, request.cookies.get(SESSION_COOKIE))
    except LinkUnusable:
        return _spent(request, code)
    target = "/receiver/" if done.decision_id == WHOLE_INBOX else f"/receiver/proposals/{done.decision_id}"
    answer = RedirectResponse(target, status_code=303, headers=PRIVATE)
    if done.cookie is not None:
        answer.set_cookie(SESSION_COOKIE, done.cookie, expires=done.expires_at, path="/", httponly=True,
                          samesite="lax", secure=_secure(request))
    return answer


def _spent(request: Request, code: str) -> HTMLResponse:
    """A used, expired or unknown link: said plainly, with a button to mail a new one; nothing
    personal (the page is the same whatever the code was)."""
    answer = request.app.state.pages.render(request, "receiver_link_spent.html", {"code": code}, status=410)
    answer.headers["Referrer-Policy"] = "no-referrer"
    return answer


@router.post("/signin/renew")
async def renew(request: Request) -> HTMLResponse:
    """Mail the proposal again with a new link, to the address it went to (the API's renew)."""
    form = await form_of(request)
    code = form.get("code", "")[:CODE_MAX]
    if code and await _credentials(request).renew(code):
        request.app.state.notify.wake()
    return request.app.state.pages.render(request, "receiver_link_renewed.html", status=202)


# --- the proposal page -------------------------------------------------------------------------


async def _proposal(request: Request, who: Credential, proposal_id: str) -> ProposalItem:
    _ = _gettext(request)
    try:
        return await _inbox(request).proposal(who, proposal_id[:ID_MAX])
    except NotFound:
        raise PageProblem(404, _("There is no such proposal in your inbox."),
                          title=_("Proposal not found")) from None
    except NotOpened:
        raise PageProblem(403, _("This sign-in opens only the proposals whose mail links you followed. Open "
                                  "the link in that proposal's mail, or ask for a link to all your referrals "
                                  "on the My referrals page."), title=_("Not opened by this sign-in")) from None


def _grant(request: Request, who: Credential, p: ProposalItem) -> str | None:
    """The short-lived grant with which intake shows the person's details (as the API's
    personal_data offer): only while the receiver holds the accepted referral."""
    settings = request.app.state.settings
    if not p.shares_personal_data or not settings.receiver_grant_secret:
        return None
    grant, _expires = sign(settings.receiver_grant_secret, referral_id=p.referral_id, decision_id=p.decision_id,
                           receiver_id=who.receiver_id, credential_id=who.id,
                           ttl=timedelta(minutes=settings.receiver_grant_minutes), not_after=who.expires_at)
    return grant


async def _page(request: Request, who: Credential, p: ProposalItem, *, error: str | None = None,
                status: int = 200) -> HTMLResponse:
    lang = language_of(request)
    _ = _gettext(request)
    return request.app.state.pages.render(request, "receiver_proposal.html", {
        "p": describe(p, lang, _), "referral_id": p.referral_id, "grant": _grant(request, who, p),
        "decline_reasons": _options(DeclineReason, lang), "outcomes": _options(Outcome, lang),
        "error": error, "whole_inbox": who.whole_inbox,
    }, status=status)


@router.get("/receiver/proposals/{proposal_id}")
async def proposal_page(proposal_id: str, request: Request) -> HTMLResponse:
    who = await _who(request)
    if who is None:
        return _signed_out(request)
    return await _page(request, who, await _proposal(request, who, proposal_id))


@router.post("/receiver/proposals/{proposal_id}/responses")
async def respond(proposal_id: str, request: Request) -> Response:
    """An answer from the page: the same use case as POST /v1/inbox/{id}/responses (the
    closed loop), then back to the page (303), which shows what happened next."""
    form = await form_of(request)
    who = await _who(request)
    if who is None:
        return _signed_out(request)
    _ = _gettext(request)
    kind = form.get("response", "")
    try:
        body = ResponseRequest(response=kind,
                               reason_code=form.get("reason_code") or None if kind == "declined" else None,
                               outcome_code=form.get("outcome_code") or None if kind == "completed" else None)
    except ValidationError:
        p = await _proposal(request, who, proposal_id)
        message = {"declined": _("Choose why you decline."), "completed": _("Choose how it ended.")}.get(
            kind, _("This answer is not possible."))
        return await _page(request, who, p, error=message, status=422)
    try:
        await _inbox(request).respond(who, proposal_id[:ID_MAX], body.response, body.reason_code,
                                      body.outcome_code)
    except (NotFound, NotOpened):
        await _proposal(request, who, proposal_id)  # raises the page that says why
        raise
    except Conflict:
        p = await _proposal(request, who, proposal_id)
        return await _page(request, who, p, status=409, error=_(
            "This answer is no longer possible: the proposal has moved on (see its status below)."))
    return RedirectResponse(f"/receiver/proposals/{proposal_id[:ID_MAX]}", status_code=303)


# --- My referrals ------------------------------------------------------------------------------


@router.get("/receiver/")
async def my_referrals(request: Request) -> HTMLResponse:
    """What this browser's session opens, open ones first and crises on top; a whole-inbox
    session (from the mailed link) lists everything sent to the receiver."""
    who = await _who(request)
    if who is None:
        return _signed_out(request)
    lang = language_of(request)
    _ = _gettext(request)
    items = [describe(p, lang, _) for p in await _inbox(request).proposals(who, None, 200, 0)]
    items.sort(key=lambda i: (not i["open"], not i["crisis"], -i["created_at"].timestamp()))
    return request.app.state.pages.render(request, "receiver_list.html", {
        "items": items, "whole_inbox": who.whole_inbox})


@router.get("/receiver")
async def my_referrals_bare() -> RedirectResponse:
    return RedirectResponse("/receiver/", status_code=303)


@router.post("/receiver/link")
async def mail_inbox_link(request: Request) -> HTMLResponse:
    """Mail a link to the receiver's whole inbox, to its registered address only: asked for
    from a session (which knows the receiver), never from an address typed in."""
    await form_of(request)
    who = await _who(request)
    if who is None:
        return _signed_out(request)
    sent_to = await _credentials(request).mail_inbox_link(who.receiver_id)
    if sent_to is not None:
        request.app.state.notify.wake()
    return request.app.state.pages.render(request, "receiver_link_mailed.html", {"sent_to": sent_to}, status=202)


# --- signing out -------------------------------------------------------------------------------


@router.post("/receiver/signout")
async def sign_out(request: Request) -> HTMLResponse:
    """End this browser's session (the API's sign-out): it and its grants open nothing more."""
    await form_of(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        await _credentials(request).sign_out(cookie)
    answer = request.app.state.pages.render(request, "receiver_signed_out.html")
    answer.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=_secure(request))
    return answer
