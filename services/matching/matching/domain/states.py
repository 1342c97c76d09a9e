"""Where a referral's case and a seat hold stand. The database keeps these values as plain
strings (`referral_case.state`, `seat_hold.state`): a member is its stored value."""

from __future__ import annotations

from enum import StrEnum


class CaseState(StrEnum):
    submitted = "submitted"  # recorded, not decided yet
    proposed = "proposed"
    accepted = "accepted"
    in_progress = "in_progress"
    completed = "completed"
    waitlisted = "waitlisted"
    unmatched = "unmatched"
    cancelled = "cancelled"


class HoldState(StrEnum):
    held = "held"
    confirmed = "confirmed"
    released = "released"


# Holds that occupy a seat.
LIVE_HOLDS = (HoldState.held, HoldState.confirmed)
# Cases that nothing moves any more.
CLOSED_CASES = frozenset({CaseState.completed, CaseState.cancelled})
