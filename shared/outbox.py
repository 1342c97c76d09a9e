"""Transactional outbox relay, and how it makes up for what Redis loses.

A service writes its change and the outbox row in one transaction (`add_events`). The
relay is kicked right after that commit and publishes at once (no poll interval added to
each hop); its periodic poll is only the safety net for rows a crash left unsent. A row is
marked published after XADD returned, so a crash in between publishes it twice at worst:
consumers are idempotent by event id.

XADD returning is not the same as the entry being durable: with `appendfsync everysec` a
power loss takes the last second of writes, a failover to a lagging replica takes what it
had not received, a restore from a backup takes everything since the backup, and a flush
takes everything. So "published" rows are kept for a retention window, and a durability
*watermark* tells how many of them Redis is known to hold:

- With every publish the relay also writes, in the same pipeline, the watermark hash
  `rujukan:outbox:<service>` = {t, run_id}: t is a time taken before that pipeline was sent,
  so every XADD that had returned before t was executed before this write. Redis' data
  (AOF, RDB, a replica's copy) is always a prefix of its history: if the watermark is in
  the data, so is every entry XADDed before t. The write is skipped unless the stored
  run_id is this Redis process's, so a watermark never vouches across a restart.
- Each relay checks, every `check_interval_s`, the stored run_id against the server's. If
  they differ (Redis restarted: it may have lost its tail) or the watermark is missing
  (flushed or a new Redis), every row published since `t - margin` (or within the whole
  retention window when there is no watermark) is marked unpublished again, and the relay
  publishes it again. Only then is the watermark adopted for the new run_id.
- Published rows older than the retention window are deleted. A Redis restored from a
  backup older than that window cannot be made whole by the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from opentelemetry import trace
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.events import Envelope, utcnow
from shared.streams.topology import PREFIX, stream_for
from shared.tracing import context_of, current_traceparent, tracer

log = logging.getLogger("rujukan.outbox")


def add_events(session: AsyncSession, model: type, envelopes: Sequence[Envelope]) -> None:
    for env in envelopes:
        session.add(model(**outbox_row(env)))


def outbox_row(env: Envelope) -> dict[str, str]:
    """An outbox row's values, for a plain INSERT on a hot path (created_at is the column's default).
    An event made outside any span starts its trace here, so that its hops still join up."""
    if env.traceparent is None:
        with tracer.start_as_current_span(f"outbox {env.type}", attributes={"rujukan.event_id": env.id}):
            traceparent = current_traceparent()
        if traceparent is not None:
            env = env.model_copy(update={"traceparent": traceparent})
    return {"event_id": env.id, "event_type": env.type, "envelope": env.model_dump_json()}


def watermark_key(service: str) -> str:
    return f"{PREFIX}:outbox:{service}"


_RUN_ID = "local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')\n"

# Move the watermark forward, only within the same Redis run.
_MARK = _RUN_ID + """
if redis.call('HGET', KEYS[1], 'run_id') ~= run_id then return 0 end
redis.call('HSET', KEYS[1], 't', ARGV[1])
return 1
"""

# {stored t or false, stored run_id or false, this server's run_id}
_CHECK = _RUN_ID + """
local stored = redis.call('HMGET', KEYS[1], 't', 'run_id')
return {stored[1], stored[2], run_id}
"""

# After the rows were marked for publishing again: vouch from now on, for the run that was
# checked (if Redis restarted once more meanwhile, nothing is adopted and the check repeats).
_ADOPT = _RUN_ID + """
if run_id ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 't', ARGV[1], 'run_id', run_id)
return 1
"""


class OutboxRelay:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], model: type, redis: aioredis.Redis,
                 *, poll_interval_s: float = 1.0, batch: int = 500, service: str | None = None,
                 retention: timedelta = timedelta(days=7), margin_s: float = 5.0,
                 check_interval_s: float = 1.0, purge_interval_s: float = 600.0) -> None:
        self.sessions = sessions
        self.model = model
        self.redis = redis
        self.poll_interval_s = poll_interval_s
        self.batch = batch
        # The watermark is per service: each service's relays publish that service's rows.
        self.service = service or model.__module__.split(".")[0]
        self.key = watermark_key(self.service)
        self.retention = retention
        # Covers clock differences between the replicas that stamp published_at.
        self.margin = timedelta(seconds=margin_s)
        self.check_interval_s = check_interval_s
        self.purge_interval_s = purge_interval_s
        self.published = 0
        self.republished = 0
        self.recoveries = 0
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._next_check = 0.0
        self._next_purge = time.monotonic() + purge_interval_s
        self._mark = redis.register_script(_MARK)
        self._check = redis.register_script(_CHECK)
        self._adopt = redis.register_script(_ADOPT)

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
                if time.monotonic() >= self._next_check:
                    await self.check_redis()
                    self._next_check = time.monotonic() + self.check_interval_s
                n = await self.publish_pending()
                if time.monotonic() >= self._next_purge:
                    await self.purge()
                    self._next_purge = time.monotonic() + self.purge_interval_s
                backoff = 0.1
                if n >= self.batch:
                    continue  # more waiting
            except asyncio.CancelledError:
                raise
            except Exception as e:  # Redis or the database away: keep the rows, retry later
                log.warning("outbox relay: %s: %s; retrying in %.1fs", type(e).__name__, e, backoff)
                self._next_check = 0.0  # Redis may have restarted: check before trusting it
                await self._sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            await self._sleep(self.poll_interval_s, wake=True)
        # On shutdown, one last pass so that nothing committed waits for the next start.
        try:
            await self.check_redis()
            await self.publish_pending()
        except Exception as e:
            log.warning("outbox relay final flush failed (the rows stay for the next start): %s", e)

    async def _sleep(self, seconds: float, wake: bool = False) -> None:
        event = self._wake if wake else self._stopping
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=seconds)

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
            t0 = time.time()
            pipe = self.redis.pipeline(transaction=False)
            spans = []
            for env in envelopes:
                stream = stream_for(env)
                pipe.xadd(stream, env.to_fields())  # type: ignore[arg-type]
                # Each publish is a hop of its event's trace (ids only); the envelope is unchanged.
                spans.append(tracer.start_span(
                    f"outbox publish {env.type}", context=context_of(env.traceparent), kind=trace.SpanKind.PRODUCER,
                    attributes={"messaging.destination.name": stream, "rujukan.event_id": env.id}))
            # Same round trip: vouch for every XADD that returned before t0 (see the module doc).
            await self._mark(keys=[self.key], args=[repr(t0)], client=pipe)
            try:
                await pipe.execute()
            finally:
                for span in spans:
                    span.end()
            # Stamped after XADD returned: a row's published_at is later than its entry.
            await s.execute(update(m).where(m.id.in_([r.id for r in rows]))  # type: ignore[attr-defined]
                            .values(published_at=utcnow()))
        self.published += len(rows)
        return len(rows)

    async def check_redis(self) -> int:
        """Publish again what Redis may have lost; returns how many rows were marked."""
        stored_t, stored_run, run_id = await self._check(keys=[self.key])
        run_id = _s(run_id)
        if stored_run is not None and _s(stored_run) == run_id:
            return 0
        if stored_t is None:
            since = utcnow() - self.retention
            why = "no durability watermark (Redis flushed, new, or restored without it)"
        else:
            since = datetime.fromtimestamp(float(_s(stored_t)), UTC) - self.margin
            why = f"Redis restarted (run {_s(stored_run)[:8]} -> {run_id[:8]})"
        adopt_at = time.time()
        m = self.model
        async with self.sessions() as s, s.begin():
            res: Any = await s.execute(
                update(m).where(m.published_at.is_not(None), m.published_at >= since)  # type: ignore[attr-defined]
                .values(published_at=None).execution_options(synchronize_session=False))
            n = int(res.rowcount or 0)
        await self._adopt(keys=[self.key], args=[repr(adopt_at), run_id])
        self.recoveries += 1
        self.republished += n
        # A first start (no watermark) or a clean restart that lost nothing is normal: only a
        # re-send is worth a line, and at INFO (the outbox made up for it; nothing is wrong).
        log.log(logging.INFO if n else logging.DEBUG, "outbox %s: %s; publishing again %d events published since %s",
                self.service, why, n, since.isoformat())
        if n:
            self.kick()
        return n

    async def purge(self) -> int:
        """Delete published rows older than the retention window."""
        m = self.model
        async with self.sessions() as s, s.begin():
            res: Any = await s.execute(delete(m).where(
                m.published_at.is_not(None), m.published_at < utcnow() - self.retention))  # type: ignore[attr-defined]
        return int(res.rowcount or 0)


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
