"""The agency's referral form, translated to and from the API's body (ReferralRequest):
the form's flat fields make the same body POST /v1/referrals takes, and each validation
error comes back as a message in the person's language next to the field it is about."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from intake.domain.model import ReferralRequest
from shared import regions
from shared.web.i18n import Gettext

# The form's fields, in the order the error summary lists them.
FIELDS = ("external_ref", "pmks_category", "urgency", "risk_flags", "needs", "initials", "age", "gender",
          "province", "regency", "district", "languages", "modality", "contact_name", "phone", "email",
          "consent_share", "consent_contact", "narrative", "caseworker_name", "caseworker_phone", "caseworker_email")
LISTS = ("needs", "risk_flags", "languages")
# Where in the body each form field goes (the body's path -> the form's field).
PLACES: dict[tuple[str, ...], str] = {
    ("client", "initials"): "initials", ("client", "age"): "age", ("client", "gender"): "gender",
    ("client", "region_code"): "province", ("client", "languages"): "languages",
    ("client", "modality"): "modality", ("client", "contact", "name"): "contact_name",
    ("client", "contact", "phone"): "phone", ("client", "contact", "email"): "email",
    ("client", "consent", "share_with_provider"): "consent_share",
    ("client", "consent", "contact_by_provider"): "consent_contact",
    ("caseworker", "name"): "caseworker_name", ("caseworker", "phone"): "caseworker_phone",
    ("caseworker", "email"): "caseworker_email",
}
FORM_REF = re.compile(r"^WEB-[A-Z0-9]{12}$")
ANSWERS = {"yes": True, "no": False}


@dataclass
class FilledForm:
    """What was typed (to show it again), and the body or the errors it makes."""

    values: dict[str, str] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    request: ReferralRequest | None = None


def new_form_ref() -> str:
    """The case number of a form sent without one: the same form sent twice is one referral."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "WEB-" + "".join(secrets.choice(alphabet) for _ in range(12))


def messages(_: Gettext) -> dict[str, str]:
    """What each field's error says (the field named, in the person's language)."""
    return {
        "external_ref": _("Case number: one line of at most 100 characters, or leave it empty."),
        "pmks_category": _("PMKS category: choose the one that fits the person best."),
        "urgency": _("Urgency: choose routine, priority or crisis."),
        "risk_flags": _("Risk: choose only from the list."),
        "needs": _("Support needed: choose only from the list, at most five."),
        "initials": _("Initials: write the person's initials (at most 10 characters)."),
        "age": _("Age: write the age in whole years, from 0 to 120."),
        "gender": _("Gender: choose one (or 'prefers not to say')."),
        "province": _("Province: choose the province where the person lives."),
        "regency": _("Regency/city: choose one in the province chosen, or leave it empty."),
        "district": _("District: write its two digits (05) under the regency/city chosen, "
                      "or the full code (12.71.05); or leave it empty."),
        "languages": _("Languages: choose at least one; other codes are 2 or 3 lower-case letters (e.g. mad)."),
        "modality": _("How to meet: choose in person, online or either."),
        "contact_name": _("Name to use: write how the provider should address the person."),
        "phone": _("Phone: digits, spaces or dashes, optionally starting with + (e.g. +62 812 3456 7890)."),
        "email": _("E-mail: write an address such as name@example.id, or leave it empty."),
        "consent_share": _("Consent to share: read the question to the person and record the answer."),
        "consent_contact": _("Consent to be contacted: read the question to the person and record the answer."),
        "narrative": _("Situation: at most 10,000 characters, without control characters."),
        "caseworker_name": _("Caseworker: write the caseworker's name, or leave the three caseworker fields empty."),
        "caseworker_phone": _("Caseworker's phone: digits, spaces or dashes, optionally starting with +, "
                              "or leave it empty."),
        "caseworker_email": _("Caseworker's e-mail: write an address such as name@agency.go.id, or leave it empty."),
    }


def refused_sharing(_: Gettext) -> str:
    return _("Consent to share: without the person's consent the referral cannot be sent. "
             "Help in a crisis does not need a referral: call the local police or SAPA 129.")


def region_of(values: dict[str, str], errors: dict[str, str], say: dict[str, str]) -> str | None:
    """The Kemendagri code from the province, regency/city and district fields."""
    province, regency = values.get("province", ""), values.get("regency", "")
    district = values.get("district", "").strip()
    if province not in regions.PROVINCES:
        errors["province"] = say["province"]
        return None
    code = province
    if regency:
        if regency not in regions.REGENCIES or not regency.startswith(province + "."):
            errors["regency"] = say["regency"]
            return None
        code = regency
    if district:
        if re.fullmatch(r"[0-9]{2}", district) and regency:
            code = f"{regency}.{district}"
        elif regions.REGION_CODE.fullmatch(district) and district.count(".") >= 2 \
                and district.startswith((regency or province) + "."):
            code = district
        else:
            errors["district"] = say["district"]
            return None
    return code


def body_of(values: dict[str, str], lists: dict[str, list[str]], region: str | None) -> dict[str, Any]:
    """The API's body from the form (what is left empty is left out, as a client would)."""
    languages = list(lists.get("languages", []))
    languages += [c for c in re.split(r"[\s,;]+", values.get("other_languages", "").strip().lower()) if c]
    contact: dict[str, Any] = {"name": values.get("contact_name", "")}
    for name in ("phone", "email"):
        if value := values.get(name, "").strip():
            contact[name] = value
    consent = {key: ANSWERS[values[name]] for key, name in (("share_with_provider", "consent_share"),
                                                             ("contact_by_provider", "consent_contact"))
               if values.get(name) in ANSWERS}
    client: dict[str, Any] = {"initials": values.get("initials", "").strip(), "gender": values.get("gender"),
                              "region_code": region or "", "languages": languages,
                              "modality": values.get("modality") or "any", "contact": contact, "consent": consent}
    if age := values.get("age", "").strip():
        client["age"] = age
    form_ref = values.get("form_ref", "")
    body: dict[str, Any] = {
        "external_ref": values.get("external_ref", "").strip() or (form_ref if FORM_REF.match(form_ref) else ""),
        "pmks_category": values.get("pmks_category", ""), "needs": lists.get("needs", []),
        "urgency": values.get("urgency") or "routine", "risk_flags": lists.get("risk_flags", []),
        "client": {k: v for k, v in client.items() if v is not None}, "narrative": values.get("narrative", ""),
    }
    caseworker = {key: value for key in ("name", "phone", "email")
                  if (value := values.get(f"caseworker_{key}", "").strip())}
    if caseworker:  # all three empty: no caseworker named
        body["caseworker"] = {"name": "", **caseworker}
    return body


def field_of(loc: tuple[int | str, ...]) -> str:
    path = tuple(str(p) for p in loc if isinstance(p, str))
    for length in (3, 2):
        if path[:length] in PLACES:
            return PLACES[path[:length]]
    return path[0] if path and path[0] in FIELDS else "external_ref"


def read(values: dict[str, str], lists: dict[str, list[str]], _: Gettext) -> FilledForm:
    """Validate the form as the API validates its body: the same model, the same rules."""
    say = messages(_)
    filled = FilledForm(values=values, lists={k: lists.get(k, []) for k in LISTS})
    region = region_of(values, filled.errors, say)
    try:
        request = ReferralRequest.model_validate(body_of(values, lists, region))
    except ValidationError as e:
        for error in e.errors():
            name = field_of(error["loc"])
            if name == "province" and region is None:
                continue  # said already, by the region's own check
            if name == "consent_share" and error["type"] == "value_error":
                filled.errors.setdefault(name, refused_sharing(_))
            else:
                filled.errors.setdefault(name, say[name])
        filled.errors = {name: filled.errors[name] for name in FIELDS if name in filled.errors}
        return filled
    if filled.errors:
        filled.errors = {name: filled.errors[name] for name in FIELDS if name in filled.errors}
        return filled
    filled.request = request
    return filled
