"""Showing a referral's personal data to the receiver who took it on.

Only the receiver the referral was proposed to (the receiver id matching issued, never an
HSDS contact id), once it accepted (and until the referral closes), with a valid grant
signed by notify whose credential was not revoked since; only what the person consented
to (contact details only with `contact_by_provider`), with the agency's caseworker for the
handover; and every reading recorded on the timeline, so the referring agency sees who read
what, and when.
"""

from __future__ import annotations

from typing import Any

from intake.adapters.orm import Agency, Referral, RevokedCredential, TimelineEntry
from intake.service_layer.referrals import Intake, NotFound
from shared.events import new_id, utcnow
from shared.grants import Grant
from shared.vocab import ReferralStatus

READABLE = (ReferralStatus.accepted, ReferralStatus.in_progress)


class NotYours(Exception):
    """The grant is genuine but does not open this referral (yet, or any more)."""


class CredentialRevoked(Exception):
    """The session or token that obtained the grant was revoked (or signed out)."""


async def read_for_receiver(intake: Intake, grant: Grant, referral_id: str) -> dict[str, Any]:
    if grant.referral_id != referral_id:
        raise NotYours("the grant is for another referral")
    async with intake.sessions() as s, s.begin():
        if await s.get(RevokedCredential, grant.credential_id) is not None:
            raise CredentialRevoked("the sign-in or token that obtained this grant was revoked")
        referral = await s.get(Referral, referral_id)
        if referral is None:
            raise NotFound(referral_id)
        match = referral.matched_service or {}
        if match.get("decision_id") != grant.decision_id or grant.receiver_id not in match.get(
            "recipient_receiver_ids", []
        ):
            raise NotYours("this referral is not (or no longer) with this receiver")
        if referral.status not in READABLE:
            raise NotYours(f"readable only once accepted and while open (now {referral.status})")
        agency = await s.get(Agency, referral.agency_id)
        details = intake.client_contact(referral)
        shown = ["initials", "narrative"] + (["contact"] if referral.consent_contact else [])
        s.add(TimelineEntry(
            referral_id=referral.id, event_id=new_id(), at=utcnow(), kind="personal_data_viewed", status=None,
            actor=f"receiver:{grant.receiver_id}",
            reason_id="Penerima membuka data pribadi: " + ", ".join(shown),
            reason_en="The receiver opened the personal data: " + ", ".join(shown),
        ))
        narrative = intake.cipher.open(referral.narrative_enc, f"{referral.id}:narrative")
        caseworker = intake.caseworker(referral)
    return {
        "referral_id": referral.id,
        "referring_agency": agency.name if agency else referral.agency_id,
        "pmks_category": referral.pmks_category, "urgency": referral.urgency, "risk_flags": referral.risk_flags,
        "needs": referral.needs,
        "client": {
            "initials": details["initials"], "age": referral.age, "gender": referral.gender,
            "region_code": referral.region_code, "languages": referral.languages, "modality": referral.modality,
            "contact": details["contact"] if referral.consent_contact else None,
        },
        "narrative": narrative,
        "consent": {"share_with_provider": referral.consent_share, "contact_by_provider": referral.consent_contact},
        # Whom to call at the referring agency (staff, not the person: no consent needed); null if not given.
        "caseworker": caseworker,
        "note": None if referral.consent_contact else (
            "Klien tidak mengizinkan dihubungi langsung; hubungi melalui lembaga perujuk. / "
            "The person did not consent to be contacted directly; go through the referring agency."),
    }
