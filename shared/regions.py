"""Kemendagri administrative region codes: province `12`, regency/city `12.71`,
district `12.71.05`, village `12.71.05.1001`.

A service area given as a province or regency covers everything under it.
"""

from __future__ import annotations

import re

# ASCII digits only, and the whole string (`$` alone would let a trailing newline through).
REGION_CODE = re.compile(r"[0-9]{2}(\.[0-9]{2}(\.[0-9]{2}(\.[0-9]{4})?)?)?")

# The 38 provinces (Kemendagri codes), so that a code with an unknown province is refused.
PROVINCES: dict[str, str] = {
    "11": "Aceh", "12": "Sumatera Utara", "13": "Sumatera Barat", "14": "Riau", "15": "Jambi",
    "16": "Sumatera Selatan", "17": "Bengkulu", "18": "Lampung", "19": "Kepulauan Bangka Belitung",
    "21": "Kepulauan Riau", "31": "DKI Jakarta", "32": "Jawa Barat", "33": "Jawa Tengah",
    "34": "DI Yogyakarta", "35": "Jawa Timur", "36": "Banten", "51": "Bali",
    "52": "Nusa Tenggara Barat", "53": "Nusa Tenggara Timur", "61": "Kalimantan Barat",
    "62": "Kalimantan Tengah", "63": "Kalimantan Selatan", "64": "Kalimantan Timur",
    "65": "Kalimantan Utara", "71": "Sulawesi Utara", "72": "Sulawesi Tengah",
    "73": "Sulawesi Selatan", "74": "Sulawesi Tenggara", "75": "Gorontalo", "76": "Sulawesi Barat",
    "81": "Maluku", "82": "Maluku Utara", "91": "Papua", "92": "Papua Barat", "93": "Papua Selatan",
    "94": "Papua Tengah", "95": "Papua Pegunungan", "96": "Papua Barat Daya",
}

# Regency/city names used in reasons shown to social workers; codes not listed are shown as is.
REGENCIES: dict[str, str] = {
    "12.71": "Kota Medan", "12.07": "Kabupaten Deli Serdang", "31.71": "Kota Jakarta Selatan",
    "31.74": "Kota Jakarta Timur", "32.73": "Kota Bandung", "33.74": "Kota Semarang",
    "34.71": "Kota Yogyakarta", "35.06": "Kabupaten Kediri", "35.71": "Kota Kediri",
    "35.78": "Kota Surabaya", "51.71": "Kota Denpasar", "53.71": "Kota Kupang",
    "53.01": "Kabupaten Kupang", "73.71": "Kota Makassar",
}


def schema_pattern() -> str:
    """REGION_CODE with the known provinces, as a JSON Schema pattern (for the OpenAPI)."""
    provinces = "|".join(sorted(PROVINCES))
    return rf"^(?:{provinces})(?:\.[0-9]{{2}}(?:\.[0-9]{{2}}(?:\.[0-9]{{4}})?)?)?$"


def validate(code: str) -> str:
    """Return the code if well formed with a known province, else raise ValueError."""
    if not REGION_CODE.fullmatch(code):
        raise ValueError("must be a Kemendagri code such as '12', '12.71' or '12.71.05'")
    if code[:2] not in PROVINCES:
        raise ValueError(f"unknown province code '{code[:2]}'")
    return code


def covers(area: str, region: str) -> bool:
    """True when a service area (any level) contains the region."""
    return region == area or region.startswith(area + ".")


def ancestors(region: str) -> list[str]:
    """The region and every level above it, most specific first: 12.71.05 -> [12.71.05, 12.71, 12]."""
    parts = region.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def name(code: str) -> str:
    """The name of the region or of its nearest named ancestor ("12.71.05" -> "Kota Medan")."""
    for c in ancestors(code):
        if c in REGENCIES:
            return REGENCIES[c]
        if c in PROVINCES:
            return f"Provinsi {PROVINCES[c]}"
    return code
