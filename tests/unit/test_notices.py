"""What a receiver reads when a proposal closes, and how it is told to answer: Bahasa
Indonesia first, the reason in words, nothing about the person."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from notify.domain.messages import access_section, notice


@pytest.mark.parametrize(("kind", "reason", "headline", "why"), [
    ("hold_expired", None, "Batas waktu tanggapan untuk rujukan ini sudah habis", None),
    ("cancelled", "client_withdrew", "dibatalkan oleh lembaga perujuk", "klien mengundurkan diri"),
    ("response_refused", "hold_expired", "tidak dapat diterapkan", "batas waktu sudah habis"),
])
def test_a_closing_notice_says_what_happened_and_why(kind: str, reason: str | None, headline: str,
                                                     why: str | None) -> None:
    subject, body = notice(kind, referral_id="01REF", organization_name="Dinas Sosial Kota Kupang",
                           service_name="KUBE Perempuan", pmks_category="perempuan_rawan_sosial_ekonomi",
                           region_code="53.71.02", urgency="routine", reason_code=reason)
    assert "01REF" in subject
    assert "Kota Kupang" in subject
    assert headline in body
    assert body.index(headline) < body.index("-- English --")
    if why:
        assert f"Alasan        : {why}" in body


def test_a_crisis_notice_is_marked_and_the_access_section_is_bilingual() -> None:
    subject, _ = notice("cancelled", referral_id="01REF", organization_name="Polrestabes Medan",
                        service_name="Unit PPA", pmks_category="korban_tindak_kekerasan", region_code="12.71",
                        urgency="crisis", reason_code="duplicate")
    assert subject.startswith("[KRISIS (SEGERA)] Rujukan dibatalkan")
    text = access_section("https://rujukan.example/v1/signin/c0de", datetime(2026, 12, 24, 8, 0, tzinfo=UTC))
    assert "https://rujukan.example/v1/signin/c0de" in text
    assert "2026-12-24 08:00 UTC" in text
    assert "Authorization" not in text  # one link, no other secret
    assert text.index("hanya membuka usulan ini") < text.index("opens this proposal only")
