"""The person's details page (server-rendered HTML): a receiver who accepted a referral
reads, here where the data lives, what the person consented to share.

The receiver's proposal page (notify) posts the short-lived grant it obtained for this
referral as a hidden form field: no personal data and no secret in the address. The grant
is checked with the same use case as GET /v1/receivers/referrals/{id} (every view is
recorded on the agency's timeline); a refusal says why without anything personal.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from intake.service_layer.referrals import NotFound
from intake.service_layer.sharing import CredentialRevoked, NotYours, read_for_receiver
from shared import regions
from shared.grants import InvalidGrant, verify
from shared.pmks import categories
from shared.vocab import SUPPORT_TYPE_ID
from shared.web.i18n import Gettext, gettext_for, language_of
from shared.web.pages import form_of

router = APIRouter(include_in_schema=False)
GRANT_MAX = 2000


def _labels(_: Gettext) -> dict[str, dict[str, str]]:
    return {
        "gender": {"female": _("Female"), "male": _("Male"), "other": _("Other"),
                   "undisclosed": _("Not disclosed")},
        "modality": {"online": _("Online"), "in_person": _("In person"), "any": _("Online or in person")},
        "urgency": {"routine": _("Routine"), "priority": _("Priority"), "crisis": _("Crisis: act at once")},
        "risk": {"ongoing_violence": _("Ongoing violence"), "suicidal_ideation": _("Thoughts of suicide"),
                 "child_at_risk": _("A child at risk"), "medical_emergency": _("Medical emergency")},
    }


def _refused(request: Request, status: int, message: str) -> HTMLResponse:
    return request.app.state.pages.render(request, "person_refused.html", {"message": message}, status=status)


@router.get("/person/{referral_id}")
async def person_without_grant(referral_id: str, request: Request) -> HTMLResponse:
    """Opened by address (a bookmark, the back button): the details need the proposal page's button."""
    _ = gettext_for(language_of(request))
    return _refused(request, 401, _("Open the person's details from the button on your proposal page."))


@router.post("/person/{referral_id}")
async def person_details(referral_id: str, request: Request) -> HTMLResponse:
    form = await form_of(request)
    lang = language_of(request)
    _ = gettext_for(lang)
    try:
        grant = verify(request.app.state.settings.receiver_grant_secret, form.get("grant", "")[:GRANT_MAX])
    except InvalidGrant:
        return _refused(request, 401, _("This permission to see the person's details is not valid or has "
                                        "expired. Go back to your proposal page and press the button again."))
    try:
        data = await read_for_receiver(request.app.state.intake, grant, referral_id[:32])
    except NotFound:
        return _refused(request, 404, _("There is no such referral."))
    except NotYours:
        return _refused(request, 403, _("This referral is not with you, or no longer: the person's details are "
                                        "shown only while you hold an accepted referral."))
    except CredentialRevoked:
        return _refused(request, 401, _("The sign-in that gave this permission has ended. Open the link in "
                                        "your mail again."))
    # Back to the proposal page (notify, on the same address) the grant came from.
    return request.app.state.pages.render(request, "person.html", {
        "d": _shown(data, lang, _), "back": f"/receiver/proposals/{grant.decision_id}"})


def _shown(data: dict[str, Any], lang: str, _: Gettext) -> dict[str, Any]:
    names = _labels(_)
    client = data["client"]
    cat = categories().get(data["pmks_category"])
    return {
        "referral_id": data["referral_id"], "agency": data["referring_agency"],
        "category": (cat.nama if lang == "id" else cat.english) if cat else data["pmks_category"],
        "urgency": names["urgency"].get(data["urgency"], data["urgency"]),
        "crisis": data["urgency"] == "crisis" or bool(data["risk_flags"]),
        "risks": [names["risk"].get(f, f) for f in data["risk_flags"]],
        "needs": [SUPPORT_TYPE_ID.get(n, n) if lang == "id" else n for n in data["needs"]],
        "initials": client["initials"], "age": client["age"],
        "gender": names["gender"].get(client["gender"], client["gender"]) if client["gender"] else "",
        "region": regions.name(client["region_code"]) if client["region_code"] else "",
        "languages": client["languages"],
        "modality": names["modality"].get(client["modality"], client["modality"]) if client["modality"] else "",
        "contact": client["contact"], "narrative": data["narrative"],
        "may_contact": bool(data["consent"]["contact_by_provider"]),
        "caseworker": data.get("caseworker"),
    }
