"""Where a mail and a proposal stand. The database keeps these values as plain strings
(`delivery.state`, `proposal.status`): a member is its stored value."""

from __future__ import annotations

from enum import StrEnum


class DeliveryState(StrEnum):
    pending = "pending"  # queued, or failed and waiting for its next attempt
    sent = "sent"
    failed = "failed"  # for good: out of attempts, or nothing left to send
    dropped = "dropped"  # no longer wanted when due (a reminder after an answer, an unset channel)


class ProposalStatus(StrEnum):
    """A proposal as its receiver sees it."""

    proposed = "proposed"
    accepted = "accepted"
    in_progress = "in_progress"
    completed = "completed"
    declined = "declined"
    expired = "expired"  # the hold ran out unanswered
    cancelled = "cancelled"  # by the referring agency
    withdrawn = "withdrawn"  # no longer the referral's current proposal


# A proposal its receiver may still act on.
OPEN_PROPOSALS = (ProposalStatus.proposed, ProposalStatus.accepted, ProposalStatus.in_progress)
# Where the person's details may be read at intake.
SHARING_PROPOSALS = (ProposalStatus.accepted, ProposalStatus.in_progress)
