"""One matching process of the concurrency test (run as `python -m tests.integration.matching_worker`).

It does what a matching replica does, as fast as it can, on the shared PostgreSQL: decides
on its share of referrals, answers its proposals at random (accept, decline, start,
complete), cancels some, and runs the hold expiry and the waitlist sweeps — which reach
every replica's referrals, so the processes race on the same cases, holds and seats.
Like the stream consumer, it retries a message whose transaction the database aborted
(a deadlock between replicas). Prints what it did as one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.exc import DBAPIError, IntegrityError

from shared.events import EventData, ReferralCancelled, ReferralMatched
from tests.matching_kit import World, message, response, submitted

CATEGORY_MIX = [
    dict(),  # korban_tindak_kekerasan in Medan
    dict(urgency="crisis", risk_flags=["ongoing_violence"]),
    dict(pmks_category="perempuan_rawan_sosial_ekonomi", region_code="53.71.02"),
]


async def main(url: str, seed: int, referrals: int, go: Path) -> dict[str, Any]:
    rnd = random.Random(seed)
    world = World(url)
    # Short holds, no grace: expiries happen during the run and race with the answers.
    world.matching.hold_routine = world.matching.hold_urgent = timedelta(milliseconds=300)
    world.matching.hold_grace = timedelta(0)
    stats = {"handled": 0, "retried": 0, "proposed": 0, "expired": 0, "rematched": 0}
    current: dict[str, ReferralMatched] = {}

    async def send(data: EventData) -> None:
        for attempt in range(30):
            mark = await world.outbox_mark()
            try:
                await world.matching.handle([message(data)])
            except (DBAPIError, IntegrityError):
                stats["retried"] += 1
                await asyncio.sleep(0.01 * (attempt + 1))
                continue
            stats["handled"] += 1
            for env in await world.published_since(mark):
                payload = env.payload()
                if isinstance(payload, ReferralMatched):
                    current[payload.referral_id] = payload
                    stats["proposed"] += 1
            return
        raise RuntimeError("gave up after 30 attempts")

    deadline = time.monotonic() + 30
    while not go.exists():  # all processes start together
        if time.monotonic() > deadline:
            raise RuntimeError("no go")
        await asyncio.sleep(0.005)

    mine: list[str] = []
    for i in range(referrals):
        e = submitted(**rnd.choice(CATEGORY_MIX))
        mine.append(e.referral_id)
        await send(e)
        if current and rnd.random() < 0.7:
            m = rnd.choice(list(current.values()))
            kind = rnd.choice(["accepted", "declined", "declined", "in_progress", "completed"])
            await send(response(m, kind))
        if rnd.random() < 0.1:
            await send(ReferralCancelled(referral_id=rnd.choice(mine), agency_id="demo", reason_code="other",
                                         urgency="routine"))
        if i % 5 == 0:
            try:
                stats["expired"] += await world.matching.expire_due()
                stats["rematched"] += await world.matching.retry_waitlist()
            except DBAPIError:
                stats["retried"] += 1  # a sweep aborted by a deadlock: the next one picks it up
    await world.close()
    return stats


if __name__ == "__main__":
    url, seed, n, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    print(json.dumps(asyncio.run(main(url, seed, n, go))), flush=True)
