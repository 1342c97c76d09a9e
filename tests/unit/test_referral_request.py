"""What a referral submission must say (the 422 rules of POST /v1/referrals)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from intake.domain.model import ReferralRequest
from shared.vocab import age_band

VALID: dict[str, Any] = {
    "external_ref": "PPA-MDN-1",
    "pmks_category": "korban_tindak_kekerasan",
    "needs": ["emotional", "informational", "emotional"],
    "urgency": "routine",
    "risk_flags": [],
    "client": {
        "initials": "SN", "age": 34, "gender": "female", "region_code": "12.71.05", "languages": ["id", "jv"],
        "modality": "any", "contact": {"name": "Siti", "phone": "+62 812 3456 7890", "email": "s@example.org"},
        "consent": {"share_with_provider": True, "contact_by_provider": False},
    },
    "narrative": "cerita",
}


def with_(path: str, value: Any) -> dict[str, Any]:
    body = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    node = body
    for p in parents:
        node = node[p]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return body


def test_valid_body_is_accepted_and_needs_deduplicated() -> None:
    req = ReferralRequest.model_validate(VALID)
    assert req.needs == ["emotional", "informational"]


@pytest.mark.parametrize(
    ("path", "value", "field", "reason"),
    [
        ("pmks_category", "korban_banjir", "pmks_category", "unknown PMKS category"),
        ("client.region_code", "12-71", "client.region_code", "Kemendagri code"),
        ("client.region_code", "99.01", "client.region_code", "unknown province"),
        ("client.age", 121, "client.age", "less than or equal to 120"),
        ("client.age", -1, "client.age", "greater than or equal to 0"),
        ("client.age", "tiga puluh", "client.age", "valid integer"),
        ("client.consent", ..., "client.consent", "Field required"),
        ("client.consent.share_with_provider", False, "client.consent.share_with_provider", "consent"),
        ("urgency", "asap", "urgency", "'routine', 'priority' or 'crisis'"),
        ("needs", ["money"], "needs.0", "'emotional'"),
        ("client.gender", "f", "client.gender", "'female'"),
        ("client.languages", ["Bahasa"], "client.languages.0", "pattern"),
        ("client.contact.phone", "call me", "client.contact.phone", "pattern"),
        ("external_ref", "", "external_ref", "at least 1"),
        ("risk_flags", ["danger"], "risk_flags.0", "'ongoing_violence'"),
        # Consent is a JSON boolean: nothing that merely looks like yes counts as consent.
        ("client.consent.share_with_provider", "yes", "client.consent.share_with_provider", "valid boolean"),
        ("client.consent.share_with_provider", "on", "client.consent.share_with_provider", "valid boolean"),
        ("client.consent.share_with_provider", "true", "client.consent.share_with_provider", "valid boolean"),
        ("client.consent.share_with_provider", 1, "client.consent.share_with_provider", "valid boolean"),
        ("client.consent.contact_by_provider", "no", "client.consent.contact_by_provider", "valid boolean"),
        ("client.consent.contact_by_provider", 0, "client.consent.contact_by_provider", "valid boolean"),
        # Free text that cannot be stored, or that is not text a person typed.
        ("external_ref", "PPA\x00MDN", "external_ref", "NUL"),
        ("external_ref", "PPA-MDN-1\n", "external_ref", "control character (U+000A)"),
        ("external_ref", "PPA\x1b[31m", "external_ref", "control character (U+001B)"),
        ("external_ref", "PPA\ud800", "external_ref", "valid string"),
        ("client.initials", "S\x00N", "client.initials", "NUL"),
        ("client.contact.name", "Siti\x07", "client.contact.name", "control character"),
        ("narrative", "cerita\x00", "narrative", "NUL"),
        ("narrative", "cerita\x0c", "narrative", "control character (U+000C)"),
        ("client.region_code", "12.71\n", "client.region_code", "Kemendagri code"),
        ("client.region_code", "12.\u0667\u0661", "client.region_code", "Kemendagri code"),
    ],
)
def test_invalid_input_names_the_field_and_the_reason(path: str, value: Any, field: str, reason: str) -> None:
    with pytest.raises(ValidationError) as e:
        ReferralRequest.model_validate(with_(path, value))
    errors = {".".join(str(p) for p in err["loc"]): err["msg"] for err in e.value.errors()}
    assert field in errors, errors
    assert reason in errors[field]


def test_unknown_fields_are_refused_rather_than_silently_dropped() -> None:
    body = with_("client.address", "Jl. Merdeka 1")
    with pytest.raises(ValidationError) as e:
        ReferralRequest.model_validate(body)
    assert e.value.errors()[0]["loc"] == ("client", "address")


@pytest.mark.parametrize(("age", "band"), [(0, "0-4"), (34, "30-34"), (35, "35-39"), (120, "120-124")])
def test_age_travels_only_as_a_five_year_band(age: int, band: str) -> None:
    assert age_band(age) == band


def test_a_narrative_keeps_its_line_breaks_and_tabs() -> None:
    req = ReferralRequest.model_validate(with_("narrative", "baris satu\r\nbaris dua\n\tmenjorok"))
    assert req.narrative == "baris satu\r\nbaris dua\n\tmenjorok"
