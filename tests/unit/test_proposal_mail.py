"""The proposal mail's HTML part: one button (the sign-in link), the hold in the receiver's
local time, Bahasa Indonesia first, every value escaped, nothing about the person."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from notify.domain.messages import proposal_html


def mail(**over: object) -> str:
    values: dict[str, object] = dict(
        greeting="Dinas Sosial Kota Kupang", service_name="KUBE Perempuan", pmks_category="korban_tindak_kekerasan",
        region_code="53.71.02", urgency="crisis", risk_flags=["ongoing_violence"],
        hold_expires_at=datetime(2026, 12, 2, 3, 0, tzinfo=UTC), reasons_id=["wilayah Kota Kupang"],
        reasons_en=["area Kota Kupang"], signin_url="https://rujukan.example/signin/c0de",
        link_expires_at=datetime(2026, 12, 3, 3, 0, tzinfo=UTC))
    values.update(over)
    return proposal_html(**values)  # type: ignore[arg-type]


def test_one_button_the_hold_in_local_time_and_bahasa_first() -> None:
    html = mail()
    assert re.findall(r'href="([^"]+)"', html) == ["https://rujukan.example/signin/c0de"]
    assert "Yth. Dinas Sosial Kota Kupang," in html
    assert "2 Des 2026 11.00 WITA" in html  # 03:00 UTC in Kupang
    assert "2 Dec 2026 11:00 WITA" in html
    assert "KRISIS" in html
    assert html.index("Rujukan baru diusulkan") < html.index("A new referral is proposed")
    assert "UTC" not in html


def test_values_are_escaped_and_a_routine_proposal_is_not_marked() -> None:
    html = mail(service_name="<script>alert(1)</script>", urgency="routine", risk_flags=[], region_code="12.71")
    assert "<script>" not in html
    assert "&lt;script&gt;" in html
    assert "KRISIS" not in html
    assert "WIB" in html
