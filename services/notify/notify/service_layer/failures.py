"""Deliveries given up on, told to a tally once recorded: `rujukan status` shows the last
24 hours' (shared/status.py keeps it in Redis; a count, nothing of a delivery)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("rujukan.notify")

FailureTally = Callable[[int], Awaitable[None]]


async def no_tally(count: int) -> None:
    return None


async def tally_given_up(tally: FailureTally, count: int) -> None:
    """Tell the tally; its being away loses only a count, never the round."""
    if not count:
        return
    try:
        await tally(count)
    except Exception as e:
        log.warning("could not tally %d failed deliveries: %s", count, type(e).__name__)
