"""Transactional outbox relay.

A service writes its change and the outbox row in one transaction (`add_events`). The
relay is kicked right after that commit and publishes at once (no poll interval added to
each hop); its periodic poll is only the safety net for rows a crash left unsent. A row is
marked published after XADD succeeded, so a crash in between publishes it twice at worst:
consumers are idempotent by event id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import redis.asyncio as aioredis
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.events import Envelope, utcnow
from shared.streams import publish

log = logging.getLogger("rujukan.outbox")


def add_events(session: AsyncSession, model: type, envelopes: Sequence[Envelope]) -> None:
    for env in envelopes:
        session.add(model(event_id=env.id, event_type=env.type, envelope=env.model_dump_json()))


class OutboxRelay:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], model: type, redis: aioredis.Redis,
                 *, poll_interval_s: float = 1.0, batch: int = 500) -> None:
        self.sessions = sessions
        self.model = model
        self.redis = redis
        self.poll_interval_s = poll_interval_s
        self.batch = batch
        self.published = 0
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()

    def kick(self) -> None:
        """Called after a commit that wrote outbox rows."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    async def run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                self._wake.clear()
                n = await self.publish_pending()
                backoff = 0.1
                if n >= self.batch:
                    continue  # more waiting
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis or the database away: keep the rows, retry later
                log.warning("outbox relay: %s: %s; retrying in %.1fs", type(e).__name__, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval_s)
            except TimeoutError:
                pass
        # On shutdown, one last pass so that nothing committed waits for the next start.
        try:
            await self.publish_pending()
        except Exception as e:
            log.warning("outbox relay final flush failed (the rows stay for the next start): %s", e)

    async def publish_pending(self) -> int:
        m = self.model
        async with self.sessions() as s, s.begin():
            # SKIP LOCKED lets several replicas relay side by side without publishing the
            # same rows (PostgreSQL; SQLite has a single writer and ignores it).
            rows = (await s.execute(
                select(m.id, m.envelope).where(m.published_at.is_(None)).order_by(m.id)  # type: ignore[attr-defined]
                .limit(self.batch).with_for_update(skip_locked=True)
            )).all()
            if not rows:
                return 0
            envelopes = [Envelope.model_validate_json(r.envelope) for r in rows]
            await publish(self.redis, envelopes)
            await s.execute(update(m).where(m.id.in_([r.id for r in rows]))  # type: ignore[attr-defined]
                            .values(published_at=utcnow()))
        self.published += len(rows)
        return len(rows)
