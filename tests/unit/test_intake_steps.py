"""The timeline steps of issue 11's events, pure: an escalation says why (the reason, the
minutes waited, the level) in both languages, a withdrawn proposal says why, neither moves
the status; an unmatched referral may be proposed again (matched again), never accepted."""

from __future__ import annotations

import pytest

from intake.domain.model import REMATCHABLE, may_move
from intake.service_layer.referrals import HANDLERS, TIMELINE_STEPS, escalated_step, status_step, withdrawn_step
from shared.events import (
    HandoverContact,
    ReferralEscalated,
    ReferralProposalWithdrawn,
    ReferralRematchRequested,
    ReferralStatusChanged,
    utcnow,
)
from shared.vocab import ReferralStatus


def escalation(level: int, service_id: str, waited: float) -> ReferralEscalated:
    return ReferralEscalated(referral_id="R1", decision_id="D2", previous_decision_id="D1", service_id=service_id,
                             level=level, reason_code="crisis_unanswered", minutes_waited=waited, at=utcnow(),
                             urgency="crisis")


def test_an_escalation_says_why_how_long_and_which_level_and_moves_nothing() -> None:
    step = escalated_step(escalation(1, "svc-2", 15.6))
    assert (step.kind, step.status, step.actor) == ("escalated", None, "matching")
    assert step.reason_id.startswith("Eskalasi tingkat 1: usulan krisis belum diterima setelah 16 menit")
    assert step.reason_en.startswith("Escalation level 1: the crisis proposal was not accepted after 16 minutes")
    last = escalated_step(escalation(2, "", 31))
    assert "tidak ada lagi layanan lain" in last.reason_id
    assert "operators on duty are alerted" in last.reason_en


def test_a_withdrawn_proposal_says_why_and_moves_nothing() -> None:
    step = withdrawn_step(ReferralProposalWithdrawn(referral_id="R1", decision_id="D2", service_id="svc-2",
                                                    reason_code="accepted_elsewhere", at=utcnow(), urgency="crisis"))
    assert (step.kind, step.status) == ("withdrawn", None)
    assert step.reason_id.endswith("rujukan sudah diterima layanan lain")
    # An unknown code is shown as itself, never dropped.
    odd = withdrawn_step(ReferralProposalWithdrawn(referral_id="R1", decision_id="D2", service_id="svc-2",
                                                   reason_code="new_code", at=utcnow(), urgency="routine"))
    assert odd.reason_en.endswith(": new_code")


def test_intake_reads_the_new_events_by_exact_type_and_not_its_own_request() -> None:
    assert ReferralEscalated in HANDLERS
    assert ReferralProposalWithdrawn in HANDLERS
    assert ReferralEscalated in TIMELINE_STEPS
    assert ReferralRematchRequested not in HANDLERS  # intake publishes it; matching reads it


def test_only_an_acceptance_carries_the_handover() -> None:
    contact = HandoverContact(name="Wati", phone="+62 61 777 8899", email="w@example.org")

    def changed(status: str) -> ReferralStatusChanged:
        return ReferralStatusChanged.model_validate(dict(
            referral_id="R1", decision_id="D1", service_id="svc-1", status=status, actor="receiver:x", at=utcnow(),
            urgency="routine", handover=contact))

    assert status_step(changed("accepted")).handover == contact.model_dump()
    assert status_step(changed("accepted")).decision_id == "D1"
    for other in ("declined", "in_progress", "completed", "hold_expired"):
        assert status_step(changed(other)).handover is None, other


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        ("unmatched", ReferralStatus.proposed, True),  # matched again
        ("unmatched", ReferralStatus.waitlisted, True),
        ("unmatched", ReferralStatus.accepted, False),
        # An escalated crisis: one of its open proposals declined, another accepted after.
        ("declined", ReferralStatus.accepted, True),
        ("cancelled", ReferralStatus.accepted, False),
        ("cancelled", ReferralStatus.proposed, False),
        ("completed", ReferralStatus.proposed, False),
    ],
)
def test_an_unmatched_referral_may_be_matched_again(current: str, new: ReferralStatus, allowed: bool) -> None:
    assert may_move(current, new) is allowed


def test_only_unmatched_or_waitlisted_is_matched_again_on_request() -> None:
    assert set(REMATCHABLE) == {ReferralStatus.unmatched, ReferralStatus.waitlisted}
