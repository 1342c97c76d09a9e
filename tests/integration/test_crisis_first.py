"""A crisis is never queued behind routine work: with thousands of routine referrals
waiting on the stream, a crisis submitted behind them is decided within the batch in hand
(real Redis, the real matching consumer, SQLite and PostgreSQL), and its decision leaves
on the urgent lane."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from matching.adapters.orm import Decision
from matching.bootstrap import create_app
from matching.settings import Settings
from shared.events import Envelope
from shared.streams.topology import DECISIONS_URGENT, SUBMITTED, SUBMITTED_URGENT, provision, publish
from tests.apps import OPERATOR_KEYS, eventually, running
from tests.matching_kit import World, submitted

BACKLOG = 2000
BATCH = 50

pytestmark = pytest.mark.slow


async def test_a_crisis_behind_thousands_of_routine_referrals_is_decided_first(
    database_url: str, redis_url: str, redis: Any
) -> None:
    world = await World(database_url).start()
    await world.close()
    await provision(redis)
    # The backlog: Kupang's PRSE women (routine), already on the stream before matching starts.
    routine = [Envelope.wrap(e, source="rujukan/intake", subject=e.referral_id) for e in (
        submitted(pmks_category="perempuan_rawan_sosial_ekonomi", region_code="53.71.02") for _ in range(BACKLOG))]
    for i in range(0, BACKLOG, 500):
        await publish(redis, routine[i:i + 500])
    assert await redis.xlen(SUBMITTED) == BACKLOG

    settings = Settings(database_url=database_url, redis_url=redis_url, operator_keys=OPERATOR_KEYS,
                        stream_batch=BATCH, stream_block_ms=100, outbox_poll_interval_s=0.2)
    app = create_app(settings)
    async with running(app):
        sessions = app.state.runtime.sessions

        async def decided() -> int:
            async with sessions() as s:
                return int(await s.scalar(select(func.count()).select_from(Decision)) or 0)

        # Matching is working through the backlog when a PPA officer submits a crisis.
        before = await eventually(decided, timeout=30, interval=0.01)
        crisis = submitted(urgency="crisis", risk_flags=["ongoing_violence"])
        await publish(redis, [Envelope.wrap(crisis, source="rujukan/intake", subject=crisis.referral_id)])
        assert await redis.xlen(SUBMITTED_URGENT) == 1

        async def crisis_decision() -> Decision | None:
            async with sessions() as s:
                return await s.scalar(select(Decision).where(Decision.referral_id == crisis.referral_id))

        decision = await eventually(crisis_decision, timeout=60, interval=0.01)
        async with sessions() as s:
            ahead = int(await s.scalar(select(func.count()).select_from(Decision)
                                       .where(Decision.created_at < decision.created_at)) or 0)
        # Only the batch already in hand (and one read's worth) went before it...
        assert ahead - before <= 2 * BATCH, (before, ahead)
        # ...while most of the backlog was still waiting.
        assert ahead < BACKLOG // 4, ahead
        assert decision.outcome == "proposed"
        assert decision.service_id in {"svc-ppa-medan", "svc-uptd-medan"}

        async def on_urgent_lane() -> list[Any]:
            rows = await redis.xrange(DECISIONS_URGENT)
            return [r for r in rows if crisis.referral_id.encode() in r[1][b"event"]]

        assert await eventually(on_urgent_lane, timeout=20)
