"""The one stream consumer every service uses: FastStream subscribers read, the project's
per-entry policy decides.

Reading is FastStream's: one batched `StreamSub` per stream (urgent lanes are subscribers of
their own, so a crisis is never queued behind routine work), on the process's `RedisBroker`,
with `AckPolicy.MANUAL`. What FastStream does not give on Redis stays here, wrapped around
the handler: entries parsed one by one (a bad one goes to the dead-letter stream with the
reason, not its whole batch), acknowledgement after the handler committed, bounded
deliveries, transient errors retried in place and not counted, a batched reclaim of a dead
consumer's entries (FastStream's `min_idle_time` claims one entry per call, see
bench/README.md), provisioning again and restarting a subscriber that NOGROUP stopped, and
handing back on stop. Groups are provisioned at id 0 before any subscriber starts
(FastStream would create them at `$`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import redis.asyncio as aioredis
from faststream import AckPolicy
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.message import RedisBatchStreamMessage
from opentelemetry import trace
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.events import BadEvent, Envelope, EventData, parse_entry
from shared.streams.dead_letters import DEAD_LETTER, dead_letter_call
from shared.streams.janitor import FORGET_CONSUMERS
from shared.streams.topology import (
    decoded,
    ensure_groups,
    error_key,
    is_urgent_lane,
    provision,
    replay_stream,
    stats_key,
)
from shared.tracing import context_of, event_context, tracer

log = logging.getLogger("rujukan.streams")


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
# Driver errors that mean "the database went away" (asyncpg, by class name so that this
# module does not import a driver a service may not use).
_TRANSIENT_NAMES = frozenset({
    "PostgresConnectionError", "ConnectionDoesNotExistError", "ConnectionFailureError",
    "CannotConnectNowError", "AdminShutdownError", "CrashShutdownError", "TooManyConnectionsError",
    "ConnectionRejectionError", "ClientCannotConnectError",
    "TimeoutError",  # also SQLAlchemy's pool timeout, which is not the builtin one
})
# OSErrors that are a bug or the file system, not the network: retrying in place would
# only stall the consumer, so they count as the entry failing.
_NOT_TRANSIENT: tuple[type[BaseException], ...] = (
    FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError, NotADirectoryError,
)
_TRANSIENT_MESSAGES = ("database is locked", "connection is closed", "connection was closed",
                       "the database system is", "terminating connection", "server closed the connection")


# A clash with a concurrent transaction (two handlers inserting the same row at once, a
# deadlock, a serialization failure): handled again at once, as the other has committed by
# then, a few times before it counts as the entry failing (which waits for the reclaim, 30 s
# or more: too long for a crisis). By the drivers' class names (asyncpg; SQLite serializes
# writers, so its "database is locked" is already transient).
_CONFLICT_NAMES = frozenset({"UniqueViolationError", "DeadlockDetectedError", "SerializationError"})
CONFLICT_RETRIES = 3


def is_conflict(error: BaseException) -> bool:
    """True when the error is a clash with a concurrent transaction, worth handling again."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if type(e).__name__ in _CONFLICT_NAMES:
            return True
        e = getattr(e, "orig", None) or e.__cause__ or e.__context__  # SQLAlchemy keeps the driver's in orig
    return False


def is_transient(error: BaseException) -> bool:
    """True when the error (or what caused it) is the infrastructure being away, not the
    entry being bad: Redis or the database unreachable, restarting, or locked."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, _NOT_TRANSIENT):
            return False
        if isinstance(e, TRANSIENT) or type(e).__name__ in _TRANSIENT_NAMES:
            return True
        if getattr(e, "connection_invalidated", False):  # SQLAlchemy's "the connection died"
            return True
        text = str(e).lower()
        if any(m in text for m in _TRANSIENT_MESSAGES):
            return True
        e = e.__cause__ or e.__context__
    return False


@dataclass
class ConsumerStats:
    handled: int = 0
    dead_lettered: int = 0
    reclaimed: int = 0
    retried: int = 0
    failed: int = 0
    handed_back: int = 0
    errors: int = 0
    last_error: str | None = None
    started_at: float = field(default_factory=time.time)


async def stop_subscribers(subscribers: Iterable[Any], timeout: float = 20.0) -> None:
    """Stop FastStream subscribers and wait until their reads have ended. A subscriber's
    stop() cancels its read task without waiting for it: a read still inside XREADGROUP
    when the broker then closes its connections fails and is logged as an error."""
    for sub in subscribers:
        reading = [t for t in getattr(sub, "tasks", ()) if not t.done()]
        try:
            await asyncio.wait_for(sub.stop(), timeout)
            await asyncio.wait_for(asyncio.gather(*reading, return_exceptions=True), 5)
        except Exception as e:
            log.warning("a stream subscriber did not stop cleanly: %s", e)


class StreamConsumer:
    """Reads a group's streams through FastStream, one batched subscriber per stream, and
    hands each batch to the handler; acknowledges only after the handler returned (its
    effects committed), with one pipelined XACK per batch.

    - Unparseable entries go to the dead-letter stream at once, with the reason.
    - A batch whose handler fails is retried entry by entry, so one bad entry never holds
      back the others; an entry that keeps failing stays pending and is retried after
      `reclaim_idle_ms`, up to `max_deliveries` deliveries, then dead-lettered with its
      last error.
    - Infrastructure errors (Redis or the database away) are retried in place and never
      count against the entry.
    - Entries pending on a dead consumer are taken over with XAUTOCLAIM; their delivery
      count is read back per entry with XPENDING.
    - On stop, the batch in hand is finished; what cannot be finished is handed back (made
      claimable at once by the other consumers) rather than left to time out.
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
        topology: dict[str, list[str]] | None = None,
        broker: RedisBroker | None = None,
        payloads: Mapping[str, Any] | None = None,
    ) -> None:
        self.redis = redis
        # The process's broker (started by the runtime), or one of this consumer's own.
        self.broker = broker
        self._own_broker = broker is None
        # Stream -> what its entries carry, for the AsyncAPI document only (not validated).
        self.payloads = dict(payloads or {})
        self._subscribers: dict[str, Any] = {}
        self.group = group
        self.consumer = consumer
        self.streams = list(streams)
        if replay_stream(group) not in self.streams:
            self.streams.append(replay_stream(group))
        self.handler = handler
        self.batch = batch
        self.block_ms = block_ms
        self.reclaim_idle_ms = reclaim_idle_ms
        self.max_deliveries = max_deliveries
        self.topology = topology
        self.stats = ConsumerStats()
        self._stopping = asyncio.Event()
        self._regroup = asyncio.Event()
        # Urgent batches in hand: routine batches wait to start until there are none, so
        # that a crisis does not compete with routine work for the database either.
        self._urgent_in_hand = 0
        self._no_urgent_in_hand = asyncio.Event()
        self._no_urgent_in_hand.set()
        self._next_reclaim = 0.0
        # Entries read (or claimed) and neither acknowledged, dead-lettered nor recorded as
        # failed: what is handed back if the consumer stops before finishing them.
        self._in_hand: dict[str, dict[str, None]] = {}
        self._dead_letter_script = redis.register_script(DEAD_LETTER)
        self._forget_script = redis.register_script(FORGET_CONSUMERS)

    @property
    def reclaim_interval_s(self) -> float:
        """How often pending entries are looked at: half the idle time, so that an entry of
        a dead consumer waits at most 1.5 x reclaim_idle_ms."""
        return max(self.reclaim_idle_ms / 2000, 0.2)

    def stop(self) -> None:
        """Finish the batches in hand, acknowledge them, hand back the rest, and return from run()."""
        self._stopping.set()

    def subscribe(self, broker: RedisBroker) -> None:
        """Declare one batched subscriber per stream on the broker (manual acknowledgement,
        entries handed over unparsed); they start with the broker or with run()."""
        for stream in self.streams:
            self._subscribers[stream] = self._subscriber(broker, stream)

    def _subscriber(self, broker: RedisBroker, stream: str) -> Any:
        sub = broker.subscriber(
            stream=StreamSub(stream, group=self.group, consumer=self.consumer, batch=True,
                             max_records=self.batch, polling_interval=self.block_ms),
            ack_policy=AckPolicy.MANUAL, no_reply=True,
            parser=_entries_unparsed, decoder=_entries_of,
            title=f"{stream}:{self.group}",
            description=f"Read by the '{self.group}' consumer group. Each entry's field `event` "
                        "holds one event envelope (JSON); `type` repeats its type.",
        )

        async def on_entries(entries: list[tuple[bytes, dict[Any, Any]]]) -> None:
            await self._on_entries(stream, entries)

        # FastStream documents the channel from this annotation; the entries arrive unparsed
        # (apply_types off) because one bad entry must be dead-lettered, not fail its batch.
        on_entries.__annotations__["entries"] = list[self.payloads.get(stream, dict[str, str])]  # type: ignore[misc]
        sub(on_entries)
        return sub

    async def run(self) -> None:
        """Start the subscribers, then reclaim stale entries and restart a subscriber that
        NOGROUP stopped, until stop(); then stop reading, hand back what is unfinished and
        leave the group."""
        backoff = 0.1
        try:
            await self._start_reading()
            while not self._stopping.is_set():
                try:
                    if time.monotonic() >= self._next_reclaim:
                        await self.reclaim()
                        self._next_reclaim = time.monotonic() + self.reclaim_interval_s
                    if self._regroup.is_set() or any(not s.running for s in self._subscribers.values()):
                        await self._restart_reading()
                    backoff = 0.1
                    await self._sleep(0.2)
                except ResponseError as e:
                    if "NOGROUP" in str(e):
                        self._regroup.set()
                    else:
                        await self._fail(e, backoff)
                        backoff = min(backoff * 2, 5.0)
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # the loop must survive anything; it logs and backs off
                    await self._fail(e, backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            await self._stop_reading()
            await self._hand_back()
        await self._leave()

    async def _start_reading(self) -> None:
        while True:
            try:
                if self.broker is None:
                    self.broker = RedisBroker(redis_url_of(self.redis), apply_types=False, log_level=logging.DEBUG,
                                              logger=logging.getLogger("rujukan.streams.faststream"),
                                              graceful_timeout=15.0)
                    await self.broker.connect()
                if not self._subscribers:
                    self.subscribe(self.broker)
                # Groups at 0 first: a subscriber would create a missing one at `$`.
                await self._provision()
                for sub in self._subscribers.values():
                    if not sub.running:
                        await sub.start()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if self._stopping.is_set():
                    return
                await self._fail(e, 1.0)

    async def _restart_reading(self) -> None:
        """Redis was flushed or restored from a file older than the groups (NOGROUP):
        provision again at 0 and restart the subscribers it stopped; the outbox relays
        publish again what the lost streams held."""
        log.warning("consumer group %s missing on Redis; provisioning streams again", self.group)
        self._regroup.clear()
        self._in_hand.clear()
        await self._provision()
        for sub in self._subscribers.values():
            if not sub.running:
                await sub.start()
        self._next_reclaim = 0.0

    async def _stop_reading(self) -> None:
        """Stop every subscriber; FastStream lets a batch in hand finish first (graceful_timeout)."""
        await stop_subscribers(self._subscribers.values())
        if self._own_broker and self.broker is not None:
            with contextlib.suppress(Exception):
                await self.broker.stop()

    async def _provision(self) -> None:
        await provision(self.redis, self.topology)
        await ensure_groups(self.redis, self.group, self.streams)

    async def _fail(self, e: BaseException, backoff: float) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{type(e).__name__}: {e}"
        log.warning("consumer %s/%s: %s; retrying in %.1fs", self.group, self.consumer,
                    self.stats.last_error, backoff)
        await self._sleep(backoff)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _on_entries(self, stream: str, raw: list[tuple[bytes, dict[Any, Any]]]) -> None:
        """One batch read by a subscriber. Nothing raises out of here: a failure leaves the
        entries pending, to be retried by reclaim."""
        entries = [(decoded(i), dict(f), 1) for i, f in raw]
        self._take(stream, [i for i, _, _ in entries])
        urgent = is_urgent_lane(stream)
        if urgent:
            self._urgent_in_hand += 1
            self._no_urgent_in_hand.clear()
        else:
            await self._no_urgent_in_hand.wait()
        try:
            await self._process(stream, entries)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if _group_gone(e):
                self._regroup.set()
            else:
                await self._fail(e, 0)
        finally:
            if urgent:
                self._urgent_in_hand -= 1
                if not self._urgent_in_hand:
                    self._no_urgent_in_hand.set()

    async def _read_once(self) -> None:
        """One read of every stream, without subscribers, handled as a subscriber would."""
        res: Any = await self.redis.xreadgroup(
            self.group, self.consumer, {s: ">" for s in self.streams}, count=self.batch, block=self.block_ms
        )
        for stream, entries in res or []:
            await self._on_entries(decoded(stream), list(entries))

    def _take(self, stream: str, ids: Iterable[str]) -> None:
        self._in_hand.setdefault(stream, {}).update(dict.fromkeys(ids))

    def _release(self, stream: str, ids: Iterable[str]) -> None:
        held = self._in_hand.get(stream)
        if held:
            for i in ids:
                held.pop(i, None)

    async def reclaim(self) -> int:
        """Take over entries pending longer than reclaim_idle_ms (on a dead consumer, or
        failed here earlier) and process them; returns how many were claimed."""
        total = 0
        for stream in self.streams:
            start = "0-0"
            while not self._stopping.is_set():
                res: Any = await self.redis.xautoclaim(
                    stream, self.group, self.consumer, self.reclaim_idle_ms, start_id=start, count=self.batch
                )
                start = decoded(res[0])
                entries = [(decoded(i), f) for i, f in res[1] if f is not None]
                # Redis 6.2 returns entries deleted while pending as nil (7.0 drops them from
                # the PEL itself and lists them in res[2]): acknowledge those.
                gone = [decoded(i) for i, f in res[1] if f is None]
                if gone:
                    await self.redis.xack(stream, self.group, *gone)
                # Claimed while a subscriber of this consumer still handles them (a batch
                # longer than the idle time): that subscriber finishes them.
                held = self._in_hand.get(stream, {})
                entries = [(i, f) for i, f in entries if i not in held]
                if entries:
                    ids = [i for i, _ in entries]
                    self._take(stream, ids)
                    counts = await self._delivery_counts(stream, ids)
                    total += len(entries)
                    self.stats.reclaimed += len(entries)
                    await self.redis.hincrby(stats_key(self.group), "reclaimed", len(entries))
                    log.info("consumer %s/%s reclaimed %d entries from %s", self.group, self.consumer,
                             len(entries), stream)
                    # XAUTOCLAIM counted this delivery; an entry missing from XPENDING was
                    # acknowledged meanwhile by its old consumer, which is harmless to redo.
                    await self._process(stream, [(i, dict(f), counts.get(i, 2)) for i, f in entries])
                if start == "0-0":
                    break
        return total

    async def _delivery_counts(self, stream: str, ids: list[str]) -> dict[str, int]:
        """Each entry's delivery count, read exactly (one XPENDING per id, pipelined)."""
        pipe = self.redis.pipeline(transaction=False)
        for i in ids:
            pipe.xpending_range(stream, self.group, min=i, max=i, count=1, consumername=self.consumer)
        counts: dict[str, int] = {}
        for rows in await pipe.execute():
            for r in rows:
                counts[decoded(r["message_id"])] = int(r["times_delivered"])
        return counts

    async def _process(self, stream: str, entries: list[tuple[str, dict[Any, Any], int]]) -> None:
        messages: list[Message] = []
        for entry_id, fields, deliveries in entries:
            try:
                env, data = parse_entry(fields)
            except BadEvent as e:
                await self.dead_letter(stream, entry_id, fields, str(e), deliveries)
                continue
            if deliveries > self.max_deliveries:
                last = await self.redis.get(error_key(self.group, stream, entry_id))
                reason = (f"failed {deliveries - 1} deliveries; last error: "
                          f"{decoded(last) if last else 'none recorded (the consumer died while handling it)'}")
                await self.dead_letter(stream, entry_id, fields, reason, deliveries)
                continue
            messages.append(Message(stream, entry_id, env, data, deliveries))
        if not messages:
            return
        try:
            await self._handle(stream, messages)
            return
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if _group_gone(e):
                raise
            if is_transient(e):
                return  # stopping while the infrastructure is away: handed back on exit
            if len(messages) == 1:
                await self._record_failure(stream, messages[0], e)
                return
        # One bad entry must not hold back its batch: retry them one at a time.
        for m in messages:
            try:
                await self._handle(stream, [m])
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if _group_gone(e):
                    raise
                if is_transient(e):
                    return
                await self._record_failure(stream, m, e)

    async def _handle(self, stream: str, messages: list[Message]) -> None:
        """Run the handler, then acknowledge; infrastructure errors are retried in place
        (until stop) since they are not the entries' fault."""
        # The handling continues the first event's trace (a batch links the others' traces);
        # the events the handler makes carry this span on (Envelope.wrap).
        first = messages[0].envelope
        links = [trace.Link(ctx) for m in messages[1:]
                 if (ctx := trace.get_current_span(context_of(m.envelope.traceparent)).get_span_context()).is_valid]
        with tracer.start_as_current_span(
                f"{self.group} handle {first.type}", context=context_of(first.traceparent), links=links,
                kind=trace.SpanKind.CONSUMER,
                attributes={"messaging.destination.name": stream, "messaging.batch.message_count": len(messages),
                            "rujukan.event_id": first.id}), \
                event_context(first.id if len(messages) == 1 else None):
            await self._retrying_transient(lambda: self._handling_again_on_conflict(messages))
        self.stats.handled += len(messages)
        await self._retrying_transient(lambda: self._ack(stream, messages))

    async def _handling_again_on_conflict(self, messages: list[Message]) -> None:
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                await self.handler(messages)
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if attempt == CONFLICT_RETRIES or not is_conflict(e):
                    raise
                self.stats.retried += 1
                log.info("%s: a concurrent transaction clashed (%s); handling the batch again",
                         self.group, type(e).__name__)
                await asyncio.sleep(0.02 * (attempt + 1))

    async def _retrying_transient(self, action: Callable[[], Awaitable[Any]]) -> None:
        backoff = 0.1
        while True:
            try:
                await action()
                return
            except asyncio.CancelledError:
                raise
            except Exception as e:
                if not is_transient(e) or self._stopping.is_set():
                    raise
                self.stats.retried += 1
                await self._fail(e, backoff)
                backoff = min(backoff * 2, 5.0)

    async def _ack(self, stream: str, messages: list[Message]) -> None:
        ids = [m.entry_id for m in messages]
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(stream, self.group, *ids)
        pipe.hincrby(stats_key(self.group), "handled", len(ids))
        retried = [error_key(self.group, stream, m.entry_id) for m in messages if m.deliveries > 1]
        if retried:
            pipe.delete(*retried)
        await pipe.execute()
        self._release(stream, ids)

    async def _record_failure(self, stream: str, m: Message, e: BaseException) -> None:
        """Leave the entry pending: it is retried after reclaim_idle_ms (its idle time is the
        backoff), and dead-lettered with this error after max_deliveries."""
        self.stats.errors += 1
        self.stats.failed += 1
        self.stats.last_error = f"{type(e).__name__}: {e}"
        self._release(stream, [m.entry_id])
        log.warning("%s failed handling %s %s (delivery %d of %d): %s", self.group, m.envelope.type,
                    m.envelope.id, m.deliveries, self.max_deliveries, self.stats.last_error[:500])
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(error_key(self.group, stream, m.entry_id), self.stats.last_error[:2000], ex=7 * 86400)
            pipe.hincrby(stats_key(self.group), "failed", 1)
            await pipe.execute()
        except Exception as re:  # only bookkeeping: the entry stays pending either way
            log.warning("could not record the failure of %s: %s", m.entry_id, re)

    async def dead_letter(self, stream: str, entry_id: str, fields: dict[Any, Any], reason: str,
                          deliveries: int) -> bool:
        """Move an entry to the group's dead-letter stream with why, then acknowledge it
        (atomically; False when it was no longer pending here: someone else handled it)."""
        keys, args = dead_letter_call(group=self.group, consumer=self.consumer, stream=stream, entry_id=entry_id,
                                      fields=fields, reason=reason, deliveries=deliveries)
        moved = await self._retrying_transient_value(lambda: self._dead_letter_script(keys=keys, args=args))
        self._release(stream, [entry_id])
        if moved:
            self.stats.dead_lettered += 1
            log.warning("%s dead-lettered %s %s: %s", self.group, stream, entry_id, reason[:300])
        return bool(moved)

    async def _retrying_transient_value(self, action: Callable[[], Awaitable[Any]]) -> Any:
        box: list[Any] = []

        async def run() -> None:
            box.append(await action())

        await self._retrying_transient(run)
        return box[0]

    async def _hand_back(self) -> None:
        """Make what was read but not finished claimable at once by another consumer (its
        idle time set past reclaim_idle_ms; JUSTID leaves the delivery count as it is)."""
        held: dict[str, list[Any]] = {s: list(ids) for s, ids in self._in_hand.items() if ids}
        self._in_hand.clear()
        for stream, ids in held.items():
            try:
                await asyncio.wait_for(self.redis.xclaim(
                    stream, self.group, self.consumer, 0, ids, idle=self.reclaim_idle_ms + 1000, justid=True,
                ), timeout=5)
                self.stats.handed_back += len(ids)
                await self.redis.hincrby(stats_key(self.group), "handed_back", len(ids))
                log.info("consumer %s/%s handed back %d entries of %s", self.group, self.consumer, len(ids), stream)
            except Exception as e:  # they stay pending and are reclaimed after the idle time
                log.warning("consumer %s/%s could not hand back %d entries: %s", self.group, self.consumer,
                            len(ids), e)

    async def _leave(self) -> None:
        """Remove this consumer from the group when it holds nothing, so that XINFO shows
        only live consumers; one that still holds entries stays until they are reclaimed."""
        for stream in self.streams:
            try:
                await asyncio.wait_for(self._forget_script(keys=[stream], args=[self.group, 0, self.consumer]), 5)
            except Exception as e:
                log.debug("consumer %s/%s not removed from %s: %s", self.group, self.consumer, stream, e)


def _group_gone(e: BaseException) -> bool:
    """NOGROUP from Redis: not the entry's fault; the run loop provisions again."""
    return isinstance(e, ResponseError) and "NOGROUP" in str(e)


async def _entries_unparsed(raw: Any, _original: Any) -> RedisBatchStreamMessage:
    """FastStream's parser would fail the whole batch on one entry that is not UTF-8 JSON:
    keep the entries as read, for the per-entry policy to parse."""
    return RedisBatchStreamMessage(raw_message=raw, body=b"", consumer=None, group=None)  # type: ignore[arg-type]


async def _entries_of(message: Any, _original: Any) -> list[tuple[bytes, dict[Any, Any]]]:
    raw = message.raw_message
    return list(zip(raw["message_ids"], raw["data"], strict=True))


def redis_url_of(redis: aioredis.Redis) -> str:
    """The URL of a client's server, for a broker of the same server (TCP or unix socket)."""
    kw = redis.connection_pool.connection_kwargs
    auth = ""
    if kw.get("password"):
        auth = f"{quote(str(kw.get('username') or ''), safe='')}:{quote(str(kw['password']), safe='')}@"
    if kw.get("path"):
        return f"unix://{auth}{kw['path']}?db={kw.get('db', 0)}"
    return f"redis://{auth}{kw.get('host', 'localhost')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"
