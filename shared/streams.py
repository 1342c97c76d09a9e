"""Stream topology and the one stream consumer every service uses.

Why not FastStream subscribers: FastStream creates consumer groups at `$` (skipping what was
published before), never reclaims a dead consumer's entries without `min_idle_time`, has no
retry limit or dead-letter stream for Redis, and per-message ack/publish measured ~16x slower
than a batched redis-py relay here. This module is that batched relay, with the guarantees
the brief asks for: groups provisioned at id 0, XAUTOCLAIM of stale entries, a bounded
number of deliveries, a dead-letter stream with the reason, and a consumer that never dies
on a bad entry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from shared.events import BadEvent, Envelope, EventData, parse_entry
from shared.vocab import is_urgent

log = logging.getLogger("rujukan.streams")

PREFIX = "rujukan"

# Two lanes per flow: a crisis (or any risk flag) is never queued behind routine work.
SUBMITTED_URGENT = f"{PREFIX}:referral.submitted:urgent"
SUBMITTED = f"{PREFIX}:referral.submitted"
DECISIONS_URGENT = f"{PREFIX}:referral.decisions:urgent"
DECISIONS = f"{PREFIX}:referral.decisions"
RESPONSES_URGENT = f"{PREFIX}:referral.responses:urgent"
RESPONSES = f"{PREFIX}:referral.responses"
CANCELLATIONS_URGENT = f"{PREFIX}:referral.cancellations:urgent"
CANCELLATIONS = f"{PREFIX}:referral.cancellations"
NOTIFICATIONS = f"{PREFIX}:notification.events"

# Consumer group (one per service) -> the streams it reads, every urgent lane first.
TOPOLOGY: dict[str, list[str]] = {
    "matching": [SUBMITTED_URGENT, RESPONSES_URGENT, CANCELLATIONS_URGENT, SUBMITTED, RESPONSES, CANCELLATIONS],
    "notify": [DECISIONS_URGENT, CANCELLATIONS_URGENT, DECISIONS, CANCELLATIONS],
    "intake": [DECISIONS_URGENT, DECISIONS, NOTIFICATIONS],
}

# Event family (the type's first two parts) -> (urgent lane, routine lane). Every other
# `referral.*` event is matching's (decisions and the closed-loop steps it applied).
LANES: dict[str, tuple[str, str]] = {
    "referral.submitted": (SUBMITTED_URGENT, SUBMITTED),
    "referral.response": (RESPONSES_URGENT, RESPONSES),
    "referral.cancelled": (CANCELLATIONS_URGENT, CANCELLATIONS),
}


def dead_letter_stream(group: str) -> str:
    return f"{PREFIX}:dead-letter:{group}"


def stream_for(envelope: Envelope) -> str:
    """Where an event is published: its flow, and the urgent lane when the case is urgent."""
    family = envelope.type.split(".")
    data = envelope.data
    urgent = is_urgent(str(data.get("urgency", "routine")), list(data.get("risk_flags", [])))
    if family[0] == "referral":
        lanes = LANES.get(".".join(family[:2]), (DECISIONS_URGENT, DECISIONS))
        return lanes[0] if urgent else lanes[1]
    if family[0] == "notification":
        return NOTIFICATIONS
    raise ValueError(f"no stream for event type {envelope.type}")


def connect(url: str) -> aioredis.Redis:
    """A client that retries its own connection errors, so a Redis restart is ridden out."""
    return aioredis.Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=5),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionResetError],
        health_check_interval=15,
        socket_keepalive=True,
    )


async def provision(redis: aioredis.Redis, topology: dict[str, list[str]] | None = None) -> None:
    """Create every stream and consumer group at id 0, idempotently, before anything runs.

    At `0` (not `$`) so that whatever was published before a group existed is still read.
    """
    for group, streams in (topology or TOPOLOGY).items():
        for stream in streams:
            try:
                await redis.xgroup_create(stream, group, id="0", mkstream=True)
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise


async def publish(redis: aioredis.Redis, envelopes: Sequence[Envelope]) -> list[str]:
    """XADD each envelope to its stream in one round trip; returns the entry ids."""
    if not envelopes:
        return []
    pipe = redis.pipeline(transaction=False)
    for env in envelopes:
        pipe.xadd(stream_for(env), env.to_fields())  # type: ignore[arg-type]
    ids = await pipe.execute()
    return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]


@dataclass(frozen=True)
class Message:
    """One parsed entry handed to a handler."""

    stream: str
    entry_id: str
    envelope: Envelope
    data: EventData
    deliveries: int = 1


BatchHandler = Callable[[list[Message]], Awaitable[None]]

# Errors of the infrastructure (database or Redis unreachable) are not the entry's fault:
# they are retried in place with backoff and never count towards dead-lettering.
TRANSIENT: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)


def add_transient(*errors: type[BaseException]) -> None:
    global TRANSIENT
    TRANSIENT = (*TRANSIENT, *errors)


@dataclass
class ConsumerStats:
    handled: int = 0
    dead_lettered: int = 0
    reclaimed: int = 0
    retried: int = 0
    errors: int = 0
    last_error: str | None = None
    started_at: float = field(default_factory=time.time)


class StreamConsumer:
    """Reads a group's streams in batches, most urgent stream first, and hands each batch
    to the handler; acknowledges only after the handler returned (its effects committed).

    - Unparseable entries go to the dead-letter stream at once, with the reason.
    - A batch whose handler fails is retried entry by entry; an entry that keeps failing
      stays pending and is retried after `reclaim_idle_ms`, up to `max_deliveries`, then
      dead-lettered.
    - Entries pending on a dead consumer are taken over with XAUTOCLAIM.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        group: str,
        consumer: str,
        streams: Sequence[str],
        handler: BatchHandler,
        batch: int = 100,
        block_ms: int = 1000,
        reclaim_idle_ms: int = 30_000,
        max_deliveries: int = 5,
    ) -> None:
        self.redis = redis
        self.group = group
        self.consumer = consumer
        self.streams = list(streams)
        self.handler = handler
        self.batch = batch
        self.block_ms = block_ms
        self.reclaim_idle_ms = reclaim_idle_ms
        self.max_deliveries = max_deliveries
        self.stats = ConsumerStats()
        self._stopping = asyncio.Event()
        self._next_reclaim = 0.0

    def stop(self) -> None:
        """Finish the batch in hand, acknowledge it, and return from run()."""
        self._stopping.set()

    async def run(self) -> None:
        backoff = 0.1
        while not self._stopping.is_set():
            try:
                if time.monotonic() >= self._next_reclaim:
                    await self._reclaim()
                    self._next_reclaim = time.monotonic() + max(self.reclaim_idle_ms / 2000, 0.5)
                await self._read_once()
                backoff = 0.1
            except ResponseError as e:
                if "NOGROUP" in str(e):
                    # Redis was flushed or restored from an old file: provision again.
                    log.warning("consumer group %s missing; provisioning streams again", self.group)
                    await self._sleep(backoff)
                    await provision(self.redis)
                else:
                    await self._fail(e, backoff)
                    backoff = min(backoff * 2, 5.0)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # the loop must survive anything; it logs and backs off
                await self._fail(e, backoff)
                backoff = min(backoff * 2, 5.0)

    async def _fail(self, e: BaseException, backoff: float) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{type(e).__name__}: {e}"
        log.warning("consumer %s/%s: %s; retrying in %.1fs", self.group, self.consumer,
                    self.stats.last_error, backoff)
        await self._sleep(backoff)

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)
        except TimeoutError:
            pass

    async def _read_once(self) -> None:
        res: Any = await self.redis.xreadgroup(
            self.group, self.consumer, {s: ">" for s in self.streams}, count=self.batch, block=self.block_ms
        )
        if not res:
            return
        by_stream = {_s(stream): entries for stream, entries in res}
        # Handle lanes in priority order: urgent entries first, even within one read.
        for stream in self.streams:
            entries = by_stream.get(stream)
            if entries:
                await self._process(stream, [(_s(i), dict(f), 1) for i, f in entries])

    async def _reclaim(self) -> None:
        for stream in self.streams:
            start = "0-0"
            while True:
                res = await self.redis.xautoclaim(
                    stream, self.group, self.consumer, self.reclaim_idle_ms, start_id=start, count=self.batch
                )
                start = _s(res[0])
                entries = [(_s(i), f) for i, f in res[1] if f is not None]
                # Entries deleted from the stream while pending come back as None: ack them.
                gone = [_s(i) for i, f in res[1] if f is None]
                if len(res) > 2:
                    gone += [_s(i) for i in res[2]]
                if gone:
                    await self.redis.xack(stream, self.group, *gone)
                if entries:
                    counts = await self._delivery_counts(stream, [i for i, _ in entries])
                    self.stats.reclaimed += len(entries)
                    log.info("consumer %s/%s reclaimed %d entries from %s", self.group, self.consumer,
                             len(entries), stream)
                    await self._process(stream, [(i, f, counts.get(i, self.max_deliveries)) for i, f in entries])
                if start == "0-0" or self._stopping.is_set():
                    break

    async def _delivery_counts(self, stream: str, ids: list[str]) -> dict[str, int]:
        rows = await self.redis.xpending_range(
            stream, self.group, min=ids[0], max=ids[-1], count=len(ids) + 1000, consumername=self.consumer
        )
        return {_s(r["message_id"]): int(r["times_delivered"]) for r in rows}

    async def _process(self, stream: str, entries: list[tuple[str, dict[Any, Any], int]]) -> None:
        messages: list[Message] = []
        for entry_id, fields, deliveries in entries:
            try:
                env, data = parse_entry(fields)
            except BadEvent as e:
                await self.dead_letter(stream, entry_id, fields, str(e), deliveries)
                continue
            if deliveries > self.max_deliveries:
                await self.dead_letter(stream, entry_id, fields,
                                       f"failed {deliveries - 1} deliveries; last error: {self.stats.last_error}",
                                       deliveries)
                continue
            messages.append(Message(stream, entry_id, env, data, deliveries))
        if not messages:
            return
        try:
            await self._handle_retrying_transient(messages)
            await self._ack(stream, [m.entry_id for m in messages])
            return
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if len(messages) == 1 or isinstance(e, TRANSIENT):
                self._record_failure(messages, e)
                return
        # One bad entry must not hold back its batch: retry them one at a time.
        for m in messages:
            try:
                await self._handle_retrying_transient([m])
                await self._ack(stream, [m.entry_id])
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._record_failure([m], e)

    async def _handle_retrying_transient(self, messages: list[Message]) -> None:
        backoff = 0.1
        while True:
            try:
                await self.handler(messages)
                self.stats.handled += len(messages)
                return
            except TRANSIENT as e:
                if self._stopping.is_set():
                    raise  # leave them pending: another consumer (or our restart) reclaims them
                self.stats.retried += 1
                await self._fail(e, backoff)
                backoff = min(backoff * 2, 5.0)

    def _record_failure(self, messages: list[Message], e: BaseException) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{type(e).__name__}: {e}"
        for m in messages:
            # Left pending: retried after reclaim_idle_ms, dead-lettered after max_deliveries.
            log.warning("%s failed handling %s %s (delivery %d): %s", self.group, m.envelope.type,
                        m.envelope.id, m.deliveries, self.stats.last_error)

    async def _ack(self, stream: str, ids: list[str]) -> None:
        await self.redis.xack(stream, self.group, *ids)

    async def dead_letter(self, stream: str, entry_id: str, fields: dict[Any, Any], reason: str,
                          deliveries: int) -> None:
        """Move an entry to the group's dead-letter stream with why, then acknowledge it."""
        original = {_s(k): _s(v) for k, v in fields.items()}
        pipe = self.redis.pipeline(transaction=True)
        pipe.xadd(dead_letter_stream(self.group), {
            "stream": stream, "entry_id": entry_id, "group": self.group, "consumer": self.consumer,
            "deliveries": str(deliveries), "error": reason[:2000], "entry": json.dumps(original),
            "at": str(time.time()),
        })
        pipe.xack(stream, self.group, entry_id)
        await pipe.execute()
        self.stats.dead_lettered += 1
        log.warning("%s dead-lettered %s %s: %s", self.group, stream, entry_id, reason[:300])


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


async def dead_letters(redis: aioredis.Redis, group: str, count: int = 100) -> list[dict[str, str]]:
    rows: Any = await redis.xrange(dead_letter_stream(group), count=count)
    return [{"id": _s(i), **{_s(k): _s(v) for k, v in f.items()}} for i, f in rows]


async def replay_dead_letter(redis: aioredis.Redis, group: str, dead_id: str,
                             event: str | None = None) -> str:
    """Put a dead letter (or a repaired version of its event) back on its stream, then remove it."""
    rows: Any = await redis.xrange(dead_letter_stream(group), min=dead_id, max=dead_id)
    if not rows:
        raise KeyError(dead_id)
    fields = {_s(k): _s(v) for k, v in rows[0][1].items()}
    original: dict[str, str] = json.loads(fields["entry"])
    if event is not None:
        original["event"] = event
    new_id = await redis.xadd(fields["stream"], original)  # type: ignore[arg-type]
    await redis.xdel(dead_letter_stream(group), dead_id)
    return _s(new_id)


def envelopes_of(messages: Iterable[Message]) -> list[Envelope]:
    return [m.envelope for m in messages]
