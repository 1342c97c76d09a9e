from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.web.pages import safe_next
from shared.web.zones import WIB, WIT, WITA, local_time, zone_of


@pytest.mark.parametrize(("region", "zone"), [
    ("12.71.05", WIB), ("31.74", WIB), ("61", WIB), ("62.01", WIB),  # Sumatra, Java, West/Central Kalimantan
    ("53.71.01", WITA), ("51.71", WITA), ("64", WITA), ("73.71", WITA),  # Kupang, Bali, East Kalimantan, Sulawesi
    ("81.71", WIT), ("91.01", WIT), ("96", WIT),  # Maluku, Papua
    ("", WIB), (None, WIB),
])
def test_the_zone_follows_the_province(region: str | None, zone: str) -> None:
    assert zone_of(region) == zone


def test_a_moment_is_shown_in_the_receivers_zone() -> None:
    moment = datetime(2026, 12, 3, 6, 30, tzinfo=UTC)
    assert local_time(moment, "53.71", "id") == "3 Des 2026 14.30 WITA"
    assert local_time(moment, "12.71", "en") == "3 Dec 2026 13:30 WIB"
    assert local_time(moment, "91", "id") == "3 Des 2026 15.30 WIT"
    assert local_time(moment.replace(tzinfo=None), "91", "id") == "3 Des 2026 15.30 WIT"  # naive is UTC
    assert local_time(None, "91") == ""


@pytest.mark.parametrize(("target", "kept"), [
    ("/receiver/proposals/01H", "/receiver/proposals/01H"), ("/agency?status=open", "/agency?status=open"),
    ("//evil.example/x", "/"), ("https://evil.example", "/"), ("/\\evil.example", "/"),
    ("javascript:alert(1)", "/"), ("", "/"), (None, "/"),
])
def test_going_back_stays_on_this_site(target: str | None, kept: str) -> None:
    assert safe_next(target) == kept
