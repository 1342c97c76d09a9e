"""A background loop that does one round every `interval_s` (hold expiry, stream trimming):
a failed round (the database or Redis away) is logged and tried again next period, and
stop() ends the wait at once."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger("rujukan")


class PeriodicWorker:
    name = "periodic worker"
    # True: a round right at start (catch up on what piled up while stopped); False: wait first.
    round_at_start = True

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._stopping = asyncio.Event()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        self._stopping.set()

    async def round(self) -> None:
        raise NotImplementedError

    async def run(self) -> None:
        wait = not self.round_at_start
        while not self._stopping.is_set():
            if wait:
                try:
                    await asyncio.wait_for(self._stopping.wait(), timeout=self.interval_s)
                    return
                except TimeoutError:
                    pass
            wait = True
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                log.warning("%s: round failed: %s: %s; trying again in %.0fs",
                            self.name, type(e).__name__, e, self.interval_s)
