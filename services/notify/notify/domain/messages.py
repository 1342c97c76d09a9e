"""What a receiver reads: Bahasa Indonesia first, English below, and why the match was
made. Only the category, region, urgency and reasons: never the person's personal data."""

from __future__ import annotations

from datetime import datetime
from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined

from shared import regions
from shared.events import ReferralMatched
from shared.pmks import categories
from shared.vocab import reason_label
from shared.web.zones import local_time

URGENCY_ID = {"routine": "biasa", "priority": "prioritas", "crisis": "KRISIS (segera)"}


@cache
def _env() -> Environment:
    return Environment(loader=PackageLoader("notify", "templates"), undefined=StrictUndefined,
                       autoescape=False, keep_trailing_newline=True)  # noqa: S701 - plain text mail


@cache
def _html_env() -> Environment:
    return Environment(loader=PackageLoader("notify", "templates"), undefined=StrictUndefined,
                       autoescape=True, trim_blocks=True, lstrip_blocks=True)


def local_hold(moment: datetime | None, region_code: str, lang: str = "id") -> str | None:
    """A seat's hold in the receiver's local time (WIB, WITA or WIT from the region)."""
    return local_time(moment, region_code, lang) if moment else None


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
        hold_expires_at=local_hold(e.hold_expires_at, e.region_code),
        hold_expires_at_en=local_hold(e.hold_expires_at, e.region_code, "en"),
        reasons_id=e.reasons_id, reasons_en=e.reasons_en,
    )
    return subject, body


def proposal_html(*, greeting: str, service_name: str, pmks_category: str, region_code: str, urgency: str,
                  risk_flags: list[str], hold_expires_at: datetime | None, reasons_id: list[str],
                  reasons_en: list[str], signin_url: str, link_expires_at: datetime) -> str:
    """The proposal mail's HTML part, rendered as it is sent (its one button holds the
    single-use sign-in link, never stored). Greets the receiving contact (or, unknown, the
    organisation); no personal data of the person referred."""
    cat = categories().get(pmks_category)
    return _html_env().get_template("proposal.html.j2").render(
        greeting=greeting, service_name=service_name,
        category_id=cat.nama if cat else pmks_category, category_en=cat.english if cat else pmks_category,
        region=regions.name(region_code), urgency=urgency, urgency_id=URGENCY_ID.get(urgency, urgency),
        urgent=urgency == "crisis" or bool(risk_flags),
        hold_expires_at=local_hold(hold_expires_at, region_code), reasons_id=reasons_id, reasons_en=reasons_en,
        hold_expires_at_en=local_hold(hold_expires_at, region_code, "en"),
        signin_url=signin_url, expires_at=local_hold(link_expires_at, region_code),
        expires_at_en=local_hold(link_expires_at, region_code, "en"))


# A notice that closes a proposal, by kind: (headline, what to do), in Bahasa Indonesia and English.
NOTICES: dict[str, tuple[str, str, str, str]] = {
    "hold_expired": (
        "Batas waktu tanggapan untuk rujukan ini sudah habis. Kursi yang ditahan telah dilepas dan "
        "rujukan dialihkan ke layanan lain.",
        "Tidak ada yang perlu Anda lakukan.",
        "The time to answer this referral has run out. The held seat was released and the referral "
        "moves on to another service.",
        "Nothing is needed from you.",
    ),
    "cancelled": (
        "Rujukan ini dibatalkan oleh lembaga perujuk. Kursi yang ditahan atau dipakai telah dilepas.",
        "Mohon hentikan tindak lanjut untuk rujukan ini.",
        "This referral was cancelled by the referring agency. The seat it held or used was released.",
        "Please stop any follow-up of this referral.",
    ),
    "withdrawn": (
        "Usulan rujukan ini ditutup: layanan lain sudah menerimanya lebih dahulu. Kursi yang ditahan "
        "untuk Anda telah dilepas.",
        "Tidak ada yang perlu Anda lakukan; mohon jangan menindaklanjuti rujukan ini.",
        "This referral proposal is closed: another service accepted it first. The seat held for you "
        "was released.",
        "Nothing is needed from you; please do not follow this referral up.",
    ),
    "response_refused": (
        "Tanggapan Anda untuk rujukan ini tidak dapat diterapkan.",
        "Lihat status terbaru di kotak masuk Rujukan Anda.",
        "Your response to this referral could not be applied.",
        "See its current status in your Rujukan inbox.",
    ),
}


def notice(kind: str, *, referral_id: str, organization_name: str, service_name: str, pmks_category: str,
           region_code: str, urgency: str, reason_code: str | None = None) -> tuple[str, str]:
    """(subject, body) of a notice that closes a proposal; no personal data, like the proposal."""
    cat = categories().get(pmks_category)
    headline_id, action_id, headline_en, action_en = NOTICES[kind]
    reason_id, reason_en = reason_label(reason_code)
    topic = {"hold_expired": "Batas waktu habis", "cancelled": "Rujukan dibatalkan",
             "response_refused": "Tanggapan tidak diterapkan",
             "withdrawn": "Usulan ditutup"}[kind]
    prefix = f"[{URGENCY_ID[urgency].upper()}] " if urgency != "routine" else ""
    subject = f"{prefix}{topic}: {cat.nama if cat else pmks_category} — {regions.name(region_code)} ({referral_id})"
    body = _env().get_template("notice.txt.j2").render(
        organization_name=organization_name, service_name=service_name, referral_id=referral_id,
        category_id=cat.nama if cat else pmks_category, category_en=cat.english if cat else pmks_category,
        region=f"{regions.name(region_code)} ({region_code})", headline_id=headline_id, headline_en=headline_en,
        action_id=action_id, action_en=action_en, reason_id=reason_id, reason_en=reason_en,
    )
    return subject, body


def access_section(signin_url: str, expires_at: datetime, region_code: str | None = None) -> str:
    """How to open the proposal: its single-use sign-in link, added when the mail is sent
    (never stored with the delivery; only the code's hash is kept). In the receiver's local
    time when its region is known."""
    shown = local_hold(expires_at, region_code) if region_code else expires_at.strftime("%Y-%m-%d %H:%M UTC")
    return _env().get_template("access.txt.j2").render(signin_url=signin_url, expires_at=shown)


def inbox_link(*, signin_url: str, expires_at: datetime) -> tuple[str, str, str]:
    """(subject, text, html) of the mail that signs a receiver in to its whole inbox ("My
    referrals"), asked for from a page: only the list's metadata, never personal data."""
    shown = expires_at.strftime("%Y-%m-%d %H:%M UTC")
    subject = "Tautan ke semua rujukan Anda / A link to all your referrals"
    text = _env().get_template("inbox_link.txt.j2").render(signin_url=signin_url, expires_at=shown)
    html = _html_env().get_template("inbox_link.html.j2").render(signin_url=signin_url, expires_at=shown)
    return subject, text, html


def system_token(*, token_id: str, service_id: str, expires_at: datetime) -> tuple[str, str]:
    """(subject, body) of the mail that brings a receiver the token an operator issued for
    its system, without the token: `token_section` adds it when the mail is sent."""
    subject = f"Token sistem Rujukan / Rujukan system token — {service_id}"
    body = _env().get_template("system_token.txt.j2").render(
        token_id=token_id, service_id=service_id, expires_at=expires_at.strftime("%Y-%m-%d %H:%M UTC"))
    return subject, body


def token_section(token: str, inbox_url: str) -> str:
    """The system token itself, added when its mail is sent (never stored; only its hash)."""
    return _env().get_template("token.txt.j2").render(token=token, inbox_url=inbox_url)


def masked_address(email: str) -> str:
    """An address as an operator may see it: enough to tell which mailbox, not to write to
    it (`f***@example.org`)."""
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}" if domain else "***"


def reminder(*, referral_id: str, organization_name: str, service_name: str, pmks_category: str,
             region_code: str, hold_expires_at: datetime) -> tuple[str, str]:
    """(subject, body) of the one reminder before a routine proposal's hold runs out; the
    sign-in link is added when it is sent (`access_section`)."""
    cat = categories().get(pmks_category)
    subject = f"Pengingat: {cat.nama if cat else pmks_category} — {regions.name(region_code)} ({referral_id})"
    body = _env().get_template("reminder.txt.j2").render(
        organization_name=organization_name, service_name=service_name, referral_id=referral_id,
        category_id=cat.nama if cat else pmks_category, category_en=cat.english if cat else pmks_category,
        region=f"{regions.name(region_code)} ({region_code})",
        hold_expires_at=local_hold(hold_expires_at, region_code),
        hold_expires_at_en=local_hold(hold_expires_at, region_code, "en"))
    return subject, body


def operator_alert(*, referral_id: str, decision_id: str, previous_decision_id: str, service_id: str, level: int,
                   reason_code: str, minutes_waited: float, urgency: str, risk_flags: list[str],
                   pmks_category: str, region_code: str) -> tuple[str, str]:
    """(subject, body) of the alert to the operators on duty when a crisis proposal escalates:
    ids, codes, category and region only."""
    cat = categories().get(pmks_category)
    category = f"{cat.nama} / {cat.english}" if cat else pmks_category or "-"
    region = f"{regions.name(region_code)} ({region_code})" if region_code else "-"
    subject = f"[ESKALASI {level}] Rujukan krisis belum diterima / Crisis unanswered: {referral_id}"
    body = _env().get_template("operator_alert.txt.j2").render(
        referral_id=referral_id, decision_id=decision_id, previous_decision_id=previous_decision_id,
        service_id=service_id, level=level, reason_code=reason_code, minutes_waited=f"{minutes_waited:.0f}",
        urgency=urgency, risk_flags=risk_flags, category=category, region=region)
    return subject, body


def channel_text(*, pmks_category: str, region_code: str, signin_url: str, reminder: bool = False) -> str:
    """An SMS or WhatsApp message: the category, the area and the sign-in link, nothing else."""
    cat = categories().get(pmks_category)
    what = "Pengingat rujukan" if reminder else "Rujukan baru"
    return f"Rujukan: {what} {cat.nama if cat else pmks_category}, {regions.name(region_code)}. {signin_url}"


def webhook_secret(*, service_id: str) -> tuple[str, str]:
    """(subject, body) of the mail that brings a receiver its webhook's signing secret,
    without the secret: `webhook_secret_section` adds it when the mail is sent."""
    subject = f"Kunci webhook Rujukan / Rujukan webhook secret — {service_id}"
    return subject, _env().get_template("webhook_secret.txt.j2").render(service_id=service_id)


def webhook_secret_section(secret: str) -> str:
    return _env().get_template("webhook_secret_section.txt.j2").render(secret=secret)
