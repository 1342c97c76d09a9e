"""Matching's background loops besides the stream consumer: hold expiry, crisis escalation,
the waitlist and the rematch pass after directory changes.

All are safe to run in every replica (the work they do is claimed row by row, see
Matching.expire_due, escalate_due, retry_waitlist and rematch_pending); the period of the
waitlist and the rematch is only a safety net (they are woken at once in-process).
"""

from __future__ import annotations

import asyncio
import logging

from matching.service_layer.handlers import Matching
from shared.periodic import PeriodicWorker

log = logging.getLogger("rujukan.matching")


class HoldExpiry(PeriodicWorker):
    """Every `interval_s`, release the holds whose deadline passed and propose the next."""

    name = "hold expiry"

    def __init__(self, matching: Matching, interval_s: float = 30.0) -> None:
        super().__init__(interval_s)
        self.matching = matching

    async def round(self) -> None:
        while await self.matching.expire_due() and not self.stopping:
            pass  # a full page: there may be more


class CrisisEscalation(PeriodicWorker):
    """Every `interval_s`, escalate the crisis proposals nobody accepted in time."""

    name = "crisis escalation"

    def __init__(self, matching: Matching, interval_s: float = 15.0) -> None:
        super().__init__(interval_s)
        self.matching = matching

    async def round(self) -> None:
        while await self.matching.escalate_due() and not self.stopping:
            pass  # a full page: there may be more


class Rematch:
    """Match waiting referrals again after a directory change: at once when this process made
    it (Matching.directory_changed), and every `interval_s` for a change left undone by
    another process (a crash between commit and pass, an import from the command line)."""

    def __init__(self, matching: Matching, interval_s: float = 5.0) -> None:
        self.matching = matching
        self.interval_s = interval_s
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.matching.directory_changed()  # wake the loop so that it sees the stop

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.matching.rematch_pending()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("rematch round failed: %s: %s", type(e).__name__, e)
            await self.matching.wait_for_directory_change(self.interval_s)


class Waitlist:
    """Match waitlisted referrals again when capacity frees (kick_waitlist), and every
    `interval_s` in any case, for capacity freed by another replica or a crash."""

    def __init__(self, matching: Matching, interval_s: float = 60.0) -> None:
        self.matching = matching
        self.interval_s = interval_s
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.matching.kick_waitlist([])  # wake the loop so that it sees the stop

    async def run(self) -> None:
        while not self._stopping.is_set():
            service_ids = await self.matching.wait_for_waitlist_kick(self.interval_s)
            if self._stopping.is_set():
                break
            try:
                await self.matching.retry_waitlist(service_ids)
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("waitlist round failed: %s: %s", type(e).__name__, e)
