"""Handlers' pure parts: how events become timeline steps, which status moves are allowed,
and what a receiver reads."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from intake.domain.model import may_move
from intake.service_layer.referrals import timeline_step
from notify.domain.messages import proposal
from shared.events import NotificationFailed, NotificationSent, ReferralMatched, ReferralUnmatched, ReferralWaitlisted
from shared.vocab import ReferralStatus


def matched(urgency: str = "routine") -> ReferralMatched:
    return ReferralMatched(
        referral_id="01R", decision_id="D", service_id="svc", service_name="Kelompok Sebaya Daring",
        organization_name="Yayasan X", resource_kind="peer_support", pmks_category="perempuan_rawan_sosial_ekonomi",
        region_code="53.71.02", urgency=urgency,  # type: ignore[arg-type]
        hold_expires_at=datetime(2026, 11, 27, 8, 0, tzinfo=UTC),
        reasons_id=["melayani perempuan rawan sosial ekonomi", "kursi tersedia 3/12"],
        reasons_en=["serves socio-economically vulnerable women", "seats available 3/12"], recipients=[],
    )


def test_each_decision_moves_the_referral_with_its_reasons() -> None:
    step = timeline_step(matched())
    assert step is not None
    assert (step.kind, step.status, step.actor) == ("proposed", ReferralStatus.proposed, "matching")
    assert "kursi tersedia 3/12" in step.reason_id
    assert "seats available 3/12" in step.reason_en
    common = dict(referral_id="01R", decision_id="D", pmks_category="fakir_miskin", region_code="53.71",
                  urgency="routine", reasons_id=["penuh"], reasons_en=["full"])
    waitlisted = timeline_step(ReferralWaitlisted.model_validate(common))
    unmatched = timeline_step(ReferralUnmatched.model_validate(common))
    assert waitlisted is not None
    assert waitlisted.status == ReferralStatus.waitlisted
    assert unmatched is not None
    assert unmatched.status == ReferralStatus.unmatched


def test_notifications_add_a_step_without_changing_the_status() -> None:
    sent = timeline_step(NotificationSent(referral_id="01R", delivery_id="X", decision_id="D",
                                          receiver_id="c"))
    failed = timeline_step(NotificationFailed(referral_id="01R", delivery_id="X", decision_id="D",
                                              receiver_id="c", reason="SMTP 550"))
    assert sent is not None
    assert (sent.kind, sent.status) == ("notified", None)
    assert failed is not None
    assert (failed.kind, failed.status) == ("notification_failed", None)
    assert "SMTP 550" in failed.reason_id


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        ("submitted", ReferralStatus.proposed, True),
        ("submitted", ReferralStatus.unmatched, True),
        ("proposed", ReferralStatus.accepted, True),
        ("cancelled", ReferralStatus.proposed, False),  # a late decision never reopens a cancelled referral
        ("completed", ReferralStatus.cancelled, False),
        ("unmatched", ReferralStatus.accepted, False),
    ],
)
def test_status_moves_only_along_the_lifecycle(current: str, new: ReferralStatus, allowed: bool) -> None:
    assert may_move(current, new) is allowed


def test_the_receivers_email_is_bahasa_first_says_why_and_holds_no_personal_data() -> None:
    subject, body = proposal(matched())
    assert subject == "Rujukan baru: Perempuan Rawan Sosial Ekonomi (PRSE) — Kota Kupang"
    assert body.index("Rujukan baru diusulkan") < body.index("A new referral is proposed")
    for fact in ("Kota Kupang (53.71.02)", "Urgensi       : biasa", "kursi tersedia 3/12", "27 Nov 2026 16.00 WITA",
                 "Mengapa layanan Anda dipilih", "Why your service was chosen", "01R"):
        assert fact in body


def test_a_crisis_is_marked_in_the_subject() -> None:
    subject, body = proposal(matched("crisis"))
    assert subject.startswith("[KRISIS (SEGERA)] ")
    assert "Urgensi       : KRISIS (segera)" in body
