"""Local time in Indonesia's three zones, from a Kemendagri region code: a receiver in
Kupang reads WITA, one in Medan WIB, one in Jayapura WIT."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from babel.dates import format_datetime

WIB, WITA, WIT = "WIB", "WITA", "WIT"
ZONES = {WIB: ZoneInfo("Asia/Jakarta"), WITA: ZoneInfo("Asia/Makassar"), WIT: ZoneInfo("Asia/Jayapura")}
# Provinces by their two-digit code: Bali, Nusa Tenggara, South/East/North Kalimantan and
# Sulawesi are WITA; Maluku and Papua WIT; Sumatra, Java, West and Central Kalimantan WIB.
_WITA = {"51", "52", "53", "63", "64", "65", "71", "72", "73", "74", "75", "76"}
_WIT = {"81", "82", "91", "92", "93", "94", "95", "96", "97"}


def zone_of(region_code: str | None) -> str:
    province = (region_code or "")[:2]
    if province in _WIT:
        return WIT
    if province in _WITA:
        return WITA
    return WIB


def local_time(moment: datetime | None, region_code: str | None, lang: str = "id") -> str:
    """'3 Des 2026 14.30 WITA': the moment in the region's zone, named by its abbreviation."""
    if moment is None:
        return ""
    zone = zone_of(region_code)
    if moment.tzinfo is None:  # the databases keep UTC
        moment = moment.replace(tzinfo=ZoneInfo("UTC"))
    shown = moment.astimezone(ZONES[zone])
    pattern = "d MMM y HH.mm" if lang == "id" else "d MMM y HH:mm"
    return f"{format_datetime(shown, pattern, locale=lang)} {zone}"
