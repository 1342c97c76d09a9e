"""Matching's use cases, as the entry points and workers call them: a batch of events in
one transaction (the table `HANDLERS` says which use case answers which event type), hold
expiry, crisis escalation, the waitlist, rematching after directory changes, and the
decisions recorded for a referral.

Every change to a referral happens with its case row locked (seats.lock_case) and every
seat moves with a conditional UPDATE (seats.take / seats.release), so several matching
replicas can consume, expire and retry side by side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from matching.adapters.orm import Decision, Outbox, ProcessedEvent, ReferralCase
from matching.service_layer import closed_loop, deciding, escalation, holds, rematch
from matching.service_layer.index import DirectoryIndex
from matching.service_layer.waitlist import WaitlistRetry
from shared.db import first_time
from shared.events import (
    Envelope,
    EventData,
    ReferralCancelled,
    ReferralRematchRequested,
    ReferralResponse,
    ReferralSubmitted,
    utcnow,
)
from shared.outbox import OutboxRelay, add_events
from shared.streams.consumer import Message


class DecisionObserver(Protocol):
    """Told of a first decision on a referral (the metrics' time from submission to decision)."""

    def __call__(self, urgency: str, outcome: str, submitted_at: datetime | None, decided_at: datetime) -> None: ...


@dataclass
class AfterCommit:
    """What a batch's use cases leave to do once its transaction committed."""

    freed: set[str] = field(default_factory=set)  # services with a seat freed: their waitlist is tried
    decided: list[deciding.Decided] = field(default_factory=list)  # first decisions: observed


@dataclass
class Matching:
    sessions: async_sessionmaker[AsyncSession]
    relay: OutboxRelay
    hold_routine: timedelta
    hold_urgent: timedelta
    # A hold is expired this long after its deadline, so that an answer given in time at
    # the inbox (which refuses late answers itself) still reaches matching first.
    hold_grace: timedelta = timedelta(minutes=2)
    # A crisis proposal not accepted within this escalates (see escalation.py).
    crisis_ack: timedelta = timedelta(minutes=15)
    # Told of each first decision, once committed (the time-to-decision metric).
    observe_decision: DecisionObserver = field(default=lambda *_: None)
    # This replica's own in-memory index of the directory (checked against the directory
    # version on every decision).
    index: DirectoryIndex = field(default_factory=DirectoryIndex)
    waitlist: WaitlistRetry = field(init=False)
    _directory_changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.waitlist = WaitlistRetry(self.sessions, self.relay, self.propose)

    async def handle(self, messages: list[Message]) -> None:
        """Apply a batch of events in one transaction; each event takes effect once."""
        after = AfterCommit()
        async with self.sessions() as s, s.begin():
            out: list[Envelope] = []
            for m in await first_time(s, ProcessedEvent, messages):
                handler = HANDLERS.get(type(m.data))
                if handler is not None:
                    out.extend(await handler(self, s, m.data, m.envelope, after))
            add_events(s, Outbox, out)
        if out:
            self.relay.kick()
        if after.freed:
            self.kick_waitlist(after.freed)
        for d in after.decided:  # counted once committed: a batch retried is not counted twice
            self.observe_decision(d.urgency, d.outcome, d.submitted_at, d.decided_at)

    async def propose(self, s: AsyncSession, case: ReferralCase, *, trigger: str, quiet: bool = False,
                      proposed: frozenset[str] = frozenset(), only_if_found: bool = False) -> list[Envelope]:
        return await deciding.propose(s, case, index=self.index, hold_routine=self.hold_routine,
                                      hold_urgent=self.hold_urgent, crisis_ack=self.crisis_ack, trigger=trigger,
                                      quiet=quiet, proposed=proposed, only_if_found=only_if_found)

    async def escalate_due(self, now: datetime | None = None, limit: int = 100) -> int:
        return await escalation.escalate_due(self.sessions, self.relay, self.propose, now=now or utcnow(),
                                             limit=limit)

    def directory_changed(self, woke: Iterable[str] = ()) -> None:
        """Called right after a directory write commits: the rematch pass runs now (for
        every DirectoryChange left undone), and the waitlist for services with more seats."""
        self._directory_changed.set()
        woke = list(woke)
        if woke:
            self.kick_waitlist(woke)

    async def wait_for_directory_change(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._directory_changed.wait(), timeout)
        except TimeoutError:
            return
        self._directory_changed.clear()

    async def rematch_pending(self) -> int:
        """Run the rematch pass of every directory change not done yet; how many moved."""
        return await rematch.run_pass(self.sessions, self.relay, self.propose, await rematch.pending(self.sessions))

    async def expire_due(self, now: datetime | None = None, limit: int = 100) -> int:
        return await holds.expire_due(self.sessions, self.relay, self.propose,
                                      cutoff=(now or utcnow()) - self.hold_grace, on_freed=self.kick_waitlist,
                                      limit=limit)

    def kick_waitlist(self, service_ids: Iterable[str] | None = None) -> None:
        self.waitlist.kick(service_ids)

    async def wait_for_waitlist_kick(self, timeout: float) -> set[str] | None:
        return await self.waitlist.wait_for_kick(timeout)

    async def retry_waitlist(self, service_ids: Iterable[str] | None = None, limit: int = 300) -> int:
        return await self.waitlist.retry(service_ids, limit)

    async def decisions_for(self, referral_id: str) -> list[Decision]:
        async with self.sessions() as s:
            return list((await s.scalars(select(Decision).where(Decision.referral_id == referral_id)
                                         .order_by(Decision.created_at, Decision.id))).all())


Handler = Callable[[Matching, AsyncSession, Any, Envelope, AfterCommit], Awaitable[list[Envelope]]]


async def _submitted(m: Matching, s: AsyncSession, e: ReferralSubmitted, env: Envelope,
                     after: AfterCommit) -> list[Envelope]:
    # Submitted when intake wrapped the event, in the submission's own transaction.
    decided = await deciding.decide(s, e, m.propose, submitted_at=env.time)
    if decided is None:
        return []
    after.decided.append(decided)
    return decided.events


async def _responded(m: Matching, s: AsyncSession, e: ReferralResponse, env: Envelope,
                     after: AfterCommit) -> list[Envelope]:
    return await closed_loop.respond(s, e, after.freed, m.propose)


async def _cancelled(m: Matching, s: AsyncSession, e: ReferralCancelled, env: Envelope,
                     after: AfterCommit) -> list[Envelope]:
    return await closed_loop.cancel(s, e, after.freed)


async def _rematch_requested(m: Matching, s: AsyncSession, e: ReferralRematchRequested, env: Envelope,
                             after: AfterCommit) -> list[Envelope]:
    return await rematch.requested(s, e, m.propose)


# Which use case answers each event matching reads, by exact type; any other is ignored.
HANDLERS: dict[type[EventData], Handler] = {
    ReferralSubmitted: _submitted,
    ReferralResponse: _responded,
    ReferralCancelled: _cancelled,
    ReferralRematchRequested: _rematch_requested,
}
