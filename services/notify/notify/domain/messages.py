"""What a receiver reads: Bahasa Indonesia first, English below, and why the match was
made. Only the category, region, urgency and reasons: never the person's personal data."""

from __future__ import annotations

from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined

from shared import regions
from shared.events import ReferralMatched
from shared.pmks import categories

URGENCY_ID = {"routine": "biasa", "priority": "prioritas", "crisis": "KRISIS (segera)"}


@cache
def _env() -> Environment:
    return Environment(loader=PackageLoader("notify", "templates"), undefined=StrictUndefined,
                       autoescape=False, keep_trailing_newline=True)  # noqa: S701 - plain text mail


def proposal(e: ReferralMatched) -> tuple[str, str]:
    """(subject, body) of the email proposing a referral to a receiver."""
    cat = categories().get(e.pmks_category)
    urgent = e.urgency != "routine"
    prefix = f"[{URGENCY_ID[e.urgency].upper()}] " if urgent else ""
    subject = f"{prefix}Rujukan baru: {cat.nama if cat else e.pmks_category} — {regions.name(e.region_code)}"
    body = _env().get_template("proposal.txt.j2").render(
        organization_name=e.organization_name, service_name=e.service_name, referral_id=e.referral_id,
        category_id=cat.nama if cat else e.pmks_category, category_en=cat.english if cat else e.pmks_category,
        region=f"{regions.name(e.region_code)} ({e.region_code})", urgency=e.urgency,
        urgency_id=URGENCY_ID.get(e.urgency, e.urgency),
        hold_expires_at=e.hold_expires_at.strftime("%Y-%m-%d %H:%M UTC") if e.hold_expires_at else None,
        reasons_id=e.reasons_id, reasons_en=e.reasons_en,
    )
    return subject, body
