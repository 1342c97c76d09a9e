"""The pages of referring agencies' staff (server-rendered HTML) and intake's landing page.
Staff sign in with a single-use link mailed to their registered address; a session then
opens their agency's referrals only. The form, the list and the cancel go through the same
use cases as the agency API. Routes only translate between forms and the service layer."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import EmailStr, TypeAdapter, ValidationError

from intake.domain.model import REMATCHABLE, may_cancel
from intake.entrypoints import referral_form
from intake.service_layer import views
from intake.service_layer.referral_queries import ReferralFilter, search
from intake.service_layer.referrals import Intake, NotFound, NotOpen, NotRematchable, ReferralConflict
from intake.service_layer.staff import SignedIn, Staff
from shared import regions
from shared.pmks import categories
from shared.vocab import CancelReason, ReferralStatus, is_urgent
from shared.web.csrf import is_https
from shared.web.i18n import gettext_for, language_of
from shared.web.pages import PageProblem, form_lists, form_of

router = APIRouter(include_in_schema=False)

SESSION_COOKIE = "rujukan_agency"
COOKIE_PATH = "/agency"  # the session goes to the agency pages only
PAGE_SIZE = 20
EMAIL = TypeAdapter(EmailStr)


async def get_intake(request: Request) -> Intake:
    return request.app.state.intake


async def get_staff(request: Request) -> Staff:
    return request.app.state.staff


IntakeDep = Annotated[Intake, Depends(get_intake)]
StaffDep = Annotated[Staff, Depends(get_staff)]


async def signed_in(request: Request, staff: StaffDep) -> SignedIn | None:
    session_id = request.cookies.get(SESSION_COOKIE)
    return await staff.signed_in(session_id) if session_id else None


WhoDep = Annotated[SignedIn | None, Depends(signed_in)]


def to_signin() -> RedirectResponse:
    return RedirectResponse("/agency/signin", status_code=303)


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    return request.app.state.pages.render(request, name, context, status=status)


# --- the landing page and signing in -------------------------------------------------------


@router.get("/")
async def landing(request: Request) -> Response:
    return render(request, "landing.html", {})


@router.get("/agency")
async def agency_home() -> RedirectResponse:
    return RedirectResponse("/agency/referrals", status_code=303)


@router.get("/agency/signin")
async def signin_form(request: Request, who: WhoDep) -> Response:
    if who is not None:
        return RedirectResponse("/agency/referrals", status_code=303)
    return render(request, "agency_signin.html", {"errors": {}, "email": ""})


@router.post("/agency/signin")
async def ask_for_link(request: Request, staff: StaffDep, background: BackgroundTasks) -> Response:
    form = await form_of(request)
    email = form.get("email", "").strip()
    try:
        EMAIL.validate_python(email)
    except ValidationError:
        _ = gettext_for(language_of(request))
        return render(request, "agency_signin.html", {
            "errors": {"email": _("E-mail: write your work address, such as name@agency.go.id.")},
            "email": email}, status=422)
    # The same answer, at the same speed, whether the address is registered or not: the
    # look-up and the mail happen after the answer has gone.
    background.add_task(staff.mail_signin_link, email)
    return render(request, "agency_signin.html", {"sent": True, "errors": {}, "email": "",
                                                  "minutes": round(staff.code_minutes)})


@router.get("/agency/signin/{code}")
async def follow_link(code: str, request: Request, staff: StaffDep) -> Response:
    session = await staff.start_session(code)
    if session is None:  # unknown, used or expired: counted as a failed sign-in
        return render(request, "agency_signin.html", {"spent": True, "errors": {}, "email": ""}, status=410)
    response = RedirectResponse("/agency/referrals", status_code=303)  # the code leaves the address bar
    response.set_cookie(SESSION_COOKIE, session.session_id, expires=session.expires_at, path=COOKIE_PATH,
                        httponly=True, samesite="lax", secure=is_https(request))
    return response


@router.post("/agency/signout")
async def sign_out(request: Request, staff: StaffDep) -> Response:
    await form_of(request)
    if session_id := request.cookies.get(SESSION_COOKIE):
        await staff.end(session_id)
    response = RedirectResponse("/agency/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="lax",
                           secure=is_https(request))
    return response


# --- the agency's referrals ------------------------------------------------------------------


def _date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


@router.get("/agency/referrals")
async def referral_list(request: Request, who: WhoDep, intake: IntakeDep,
                        status: str | None = None, category: str | None = None,
                        since: Annotated[str | None, Query(alias="from")] = None,
                        until: Annotated[str | None, Query(alias="to")] = None,
                        page: Annotated[int, Query(ge=1, le=100_000)] = 1) -> Response:
    if who is None:
        return to_signin()
    chosen = ReferralFilter(
        status=ReferralStatus(status) if status and status in ReferralStatus.__members__ else None,
        category=category if category in categories() else None, since=_date(since), until=_date(until))
    found = await search(intake, who.agency_id, chosen, PAGE_SIZE, (page - 1) * PAGE_SIZE)
    query = {"status": chosen.status or "", "category": chosen.category or "",
             "from": chosen.since.isoformat() if chosen.since else "",
             "to": chosen.until.isoformat() if chosen.until else ""}
    return render(request, "agency_referrals.html", {
        "who": who, "found": found, "query": query, "page": page, "statuses": list(ReferralStatus),
        "categories": _categories(language_of(request)),
        "category_names": {code: name for code, name, _d in _categories(language_of(request))},
        "filtered": any(query.values()),
    })


def _categories(lang: str) -> list[tuple[str, str, str]]:
    """PMKS categories as (code, name, description): the name in the page's language, the
    other language's name as its description."""
    return [(c.code, c.nama, c.english) if lang == "id" else (c.code, c.english, c.nama)
            for c in sorted(categories().values(), key=lambda c: c.no)]


def _form_context(request: Request, who: SignedIn, filled: referral_form.FilledForm) -> dict[str, Any]:
    return {
        "who": who, "v": filled.values, "lists": filled.lists, "errors": filled.errors,
        "categories": _categories(language_of(request)),
        "provinces": sorted(regions.PROVINCES.items(), key=lambda p: p[1]),
        "regencies": sorted(((code, name, regions.PROVINCES[code[:2]]) for code, name in regions.REGENCIES.items()),
                            key=lambda r: (r[2], r[1])),
    }


@router.get("/agency/referrals/new")
async def new_referral(request: Request, who: WhoDep) -> Response:
    if who is None:
        return to_signin()
    blank = referral_form.FilledForm(
        values={"form_ref": referral_form.new_form_ref(), "urgency": "routine", "modality": "any"},
        lists={"languages": ["id"], "needs": [], "risk_flags": []})
    return render(request, "agency_referral_form.html", _form_context(request, who, blank))


@router.post("/agency/referrals/new")
async def submit_referral(request: Request, who: WhoDep, intake: IntakeDep) -> Response:
    if who is None:
        return to_signin()
    values = await form_of(request)
    _ = gettext_for(language_of(request))
    filled = referral_form.read(values, await form_lists(request), _)
    if filled.request is not None:
        try:
            referral, _created = await views.submit(intake, who.agency_id, filled.request)
        except ReferralConflict:
            filled.errors["external_ref"] = _("Case number: your agency used it already for another referral; "
                                              "write another one, or leave it empty.")
        else:
            return RedirectResponse(f"/agency/referrals/{referral.id}", status_code=303)
    return render(request, "agency_referral_form.html", _form_context(request, who, filled), status=422)


async def _referral(intake: Intake, who: SignedIn, referral_id: str, request: Request) -> views.ReferralWithTimeline:
    try:
        return await views.referral(intake, who.agency_id, referral_id)
    except NotFound:
        # Another agency's referral is not told apart from none.
        raise PageProblem(404, gettext_for(language_of(request))("There is no such referral for your agency."),
                          title=gettext_for(language_of(request))("Not found")) from None


@router.get("/agency/referrals/{referral_id}")
async def referral_page(referral_id: str, request: Request, who: WhoDep, intake: IntakeDep) -> Response:
    if who is None:
        return to_signin()
    referral = await _referral(intake, who, referral_id, request)
    return render(request, "agency_referral.html", _detail(who, referral, {}))


def _detail(who: SignedIn, referral: views.ReferralWithTimeline, errors: dict[str, str]) -> dict[str, Any]:
    return {"who": who, "r": referral, "urgent": is_urgent(referral.urgency, list(referral.risk_flags)),
            "can_cancel": may_cancel(referral.status), "reasons": list(CancelReason),
            "can_rematch": referral.status in REMATCHABLE,
            "category": categories().get(referral.pmks_category), "region": regions.name(referral.region_code),
            "hold_expires_at": _moment(referral.match.hold_expires_at if referral.match else None),
            "errors": errors}


def _moment(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


@router.post("/agency/referrals/{referral_id}/cancel")
async def cancel_referral(referral_id: str, request: Request, who: WhoDep, intake: IntakeDep) -> Response:
    if who is None:
        return to_signin()
    form = await form_of(request)
    reason = form.get("reason_code", "")
    if reason not in CancelReason.__members__:
        referral = await _referral(intake, who, referral_id, request)
        _ = gettext_for(language_of(request))
        return render(request, "agency_referral.html", _detail(
            who, referral, {"reason_code": _("Reason: choose why the referral is cancelled.")}), status=422)
    try:
        await views.cancel(intake, who.agency_id, referral_id, reason)
    except NotFound:
        await _referral(intake, who, referral_id, request)  # raises the page's 404
    except NotOpen:
        pass  # closed meanwhile: the page shows what it is now
    return RedirectResponse(f"/agency/referrals/{referral_id}", status_code=303)


@router.post("/agency/referrals/{referral_id}/rematch")
async def rematch_referral(referral_id: str, request: Request, who: WhoDep, intake: IntakeDep) -> Response:
    """Match again: the same use case as POST /v1/referrals/{id}/rematch."""
    if who is None:
        return to_signin()
    await form_of(request)
    try:
        await views.rematch(intake, who.agency_id, referral_id)
    except NotFound:
        await _referral(intake, who, referral_id, request)  # raises the page's 404
    except NotRematchable:
        pass  # matched or closed meanwhile: the page shows what it is now
    return RedirectResponse(f"/agency/referrals/{referral_id}", status_code=303)
