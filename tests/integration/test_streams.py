"""The stream consumer against a real Redis: poison entries, bounded retries, reclaiming a
dead consumer's entries, infrastructure errors, hand-back on stop, one dead letter per entry.

Every test uses its own streams and groups (a private topology), so tests sharing the
session's Redis never see each other's entries."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from faststream.redis import RedisBroker

from shared.events import Envelope, ReferralSubmitted
from shared.streams.consumer import Message, StreamConsumer, stop_subscribers
from shared.streams.dead_letters import dead_letters, replay_dead_letter
from shared.streams.janitor import forget_idle_consumers
from shared.streams.topology import connect, dead_letter_stream, error_key, provision, replay_stream, stats_key


def submitted(referral_id: str | None = None, **over: Any) -> Envelope:
    rid = referral_id or uuid.uuid4().hex[:26]
    data = dict(referral_id=rid, agency_id="demo", pmks_category="korban_tindak_kekerasan", urgency="routine",
                region_code="12.71.05", age_band="30-34", gender="female", modality="any", consent_share=True,
                languages=["id"], needs=["emotional", "informational"])
    data.update(over)
    return Envelope.wrap(ReferralSubmitted(**data), source="test", subject=rid)  # type: ignore[arg-type]


class Lane:
    """A private topology: one group reading an urgent and a routine stream."""

    def __init__(self, redis: aioredis.Redis) -> None:
        tag = uuid.uuid4().hex[:8]
        self.redis = redis
        self.group = f"g-{tag}"
        self.urgent = f"t:{tag}:urgent"
        self.routine = f"t:{tag}:routine"
        self.topology = {self.group: [self.urgent, self.routine]}

    async def provision(self) -> None:
        await provision(self.redis, self.topology)

    async def add(self, env: Envelope, stream: str | None = None) -> str:
        return str(await self.redis.xadd(stream or self.routine, env.to_fields()))  # type: ignore[arg-type]

    async def add_raw(self, fields: dict[str, str], stream: str | None = None) -> str:
        return str(await self.redis.xadd(stream or self.routine, fields))  # type: ignore[arg-type]

    def consumer(self, handler: Callable[[list[Message]], Awaitable[None]], name: str = "c1",
                 **kw: Any) -> StreamConsumer:
        kw.setdefault("block_ms", 100)
        return StreamConsumer(self.redis, group=self.group, consumer=name, streams=self.topology[self.group],
                              handler=handler, topology=self.topology, **kw)

    async def pending(self, stream: str | None = None) -> int:
        info: Any = await self.redis.xpending(stream or self.routine, self.group)
        return int(info["pending"])


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = connect(redis_url)
    client_decoded = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client_decoded
    finally:
        await client_decoded.aclose()
        await client.aclose()


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Liveness bound only: fails the test if the condition never comes true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


async def running(consumer: StreamConsumer) -> asyncio.Task[None]:
    return asyncio.create_task(consumer.run())


async def stop(consumer: StreamConsumer, task: asyncio.Task[None]) -> None:
    consumer.stop()
    await asyncio.wait_for(task, 10)


# -- poison -----------------------------------------------------------------------------------


async def test_poison_entries_go_to_the_dead_letter_stream_and_the_consumer_goes_on(redis: aioredis.Redis) -> None:
    lane = Lane(redis)
    await lane.provision()
    good = [submitted() for _ in range(3)]
    await lane.add(good[0])
    bad_json = await lane.add_raw({"type": "referral.submitted.v1", "event": "{not json"})
    await lane.add(good[1])
    unknown = submitted().model_copy(update={"type": "referral.submitted.v9"})
    bad_version = await lane.add(unknown)
    invalid = submitted().model_dump(mode="json")
    invalid["data"]["age_band"] = "old"
    del invalid["data"]["urgency"]
    bad_schema = await lane.add_raw({"type": "referral.submitted.v1", "event": json.dumps(invalid)})
    no_event = await lane.add_raw({"type": "referral.submitted.v1"})
    await lane.add(good[2])

    seen: list[str] = []

    async def handler(ms: list[Message]) -> None:
        seen.extend(m.envelope.id for m in ms)

    c = lane.consumer(handler)
    task = await running(c)
    await until(lambda: _len(redis, dead_letter_stream(lane.group), 4))
    await until(lambda: _eq(lambda: len(seen), 3))
    await stop(c, task)

    assert seen == [g.id for g in good]
    letters = {d["entry_id"]: d for d in await dead_letters(redis, lane.group)}
    assert set(letters) == {bad_json, bad_version, bad_schema, no_event}
    assert letters[bad_json]["error"].startswith("malformed JSON")
    assert "unknown event type 'referral.submitted.v9'" in letters[bad_version]["error"]
    assert letters[bad_schema]["error"].startswith("schema-invalid")
    assert "age_band: String should match" in letters[bad_schema]["error"]
    assert "urgency: Field required" in letters[bad_schema]["error"]
    assert letters[no_event]["error"] == "entry has no 'event' field"
    for d in letters.values():
        assert d["consumer"] == "c1"
        assert d["group"] == lane.group
        assert d["stream"] == lane.routine
    assert json.loads(letters[bad_json]["entry"]) == {"type": "referral.submitted.v1", "event": "{not json"}
    assert await lane.pending() == 0  # every entry acknowledged, the poison ones too


async def test_urgent_lane_is_handled_before_routine_within_one_read(redis: aioredis.Redis) -> None:
    lane = Lane(redis)
    await lane.provision()
    routine = [submitted() for _ in range(5)]
    crisis = [submitted(urgency="crisis") for _ in range(2)]
    for e in routine:
        await lane.add(e)
    for e in crisis:
        await lane.add(e, lane.urgent)
    order: list[str] = []

    async def handler(ms: list[Message]) -> None:
        order.extend(m.envelope.id for m in ms)

    c = lane.consumer(handler)
    task = await running(c)
    await until(lambda: _eq(lambda: len(order), 7))
    await stop(c, task)
    assert order[:2] == [e.id for e in crisis]


# -- failures and retries ---------------------------------------------------------------------


async def test_an_entry_that_keeps_failing_is_retried_a_bounded_number_of_times_then_dead_lettered(
    redis: aioredis.Redis,
) -> None:
    lane = Lane(redis)
    await lane.provision()
    events = [submitted() for _ in range(6)]
    poison = events[2]
    ids = [await lane.add(e) for e in events]
    calls: Counter[str] = Counter()
    handled: Counter[str] = Counter()

    async def handler(ms: list[Message]) -> None:
        for m in ms:
            calls[m.envelope.id] += 1
        if any(m.envelope.id == poison.id for m in ms):
            raise ValueError("cannot decide: directory row is corrupt")
        for m in ms:
            handled[m.envelope.id] += 1

    c = lane.consumer(handler, reclaim_idle_ms=200, max_deliveries=3)
    task = await running(c)
    await until(lambda: _len(redis, dead_letter_stream(lane.group), 1))
    await stop(c, task)

    # The others were handled once each, not held back by the bad one.
    assert handled == Counter({e.id: 1 for e in events if e.id != poison.id})
    # The bad one: once in the batch, then once alone per delivery, max_deliveries deliveries.
    assert calls[poison.id] == 1 + 3
    [letter] = await dead_letters(redis, lane.group)
    assert letter["entry_id"] == ids[2]
    assert letter["deliveries"] == "4"
    assert "ValueError: cannot decide: directory row is corrupt" in letter["error"]
    assert await lane.pending() == 0
    stats = await redis.hgetall(stats_key(lane.group))
    assert int(stats["handled"]) == 5
    assert int(stats["failed"]) == 3
    assert int(stats["dead_lettered"]) == 1


async def test_infrastructure_errors_are_retried_in_place_and_never_count_as_deliveries(
    redis: aioredis.Redis,
) -> None:
    lane = Lane(redis)
    await lane.provision()
    e = submitted()
    await lane.add(e)
    attempts = 0
    got: list[Message] = []

    async def handler(ms: list[Message]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 3:
            raise ConnectionRefusedError("database unreachable")
        got.extend(ms)

    c = lane.consumer(handler, reclaim_idle_ms=60_000, max_deliveries=1)
    task = await running(c)
    await until(lambda: _eq(lambda: len(got), 1))
    await stop(c, task)
    assert got[0].envelope.id == e.id
    assert got[0].deliveries == 1
    assert await redis.xlen(dead_letter_stream(lane.group)) == 0
    assert await lane.pending() == 0


async def test_entries_of_a_dead_consumer_are_reclaimed_with_their_delivery_count(redis: aioredis.Redis) -> None:
    lane = Lane(redis)
    await lane.provision()
    events = [submitted() for _ in range(4)]
    for e in events:
        await lane.add(e)
    # A consumer reads them and dies before acknowledging.
    read = await redis.xreadgroup(lane.group, "dead-one", {lane.routine: ">"}, count=10)
    assert len(read[0][1]) == 4
    got: list[Message] = []

    async def handler(ms: list[Message]) -> None:
        got.extend(ms)

    c = lane.consumer(handler, name="survivor", reclaim_idle_ms=300)
    task = await running(c)
    await until(lambda: _eq(lambda: len(got), 4))
    await stop(c, task)
    assert [m.envelope.id for m in got] == [e.id for e in events]
    assert {m.deliveries for m in got} == {2}
    assert c.stats.reclaimed == 4
    assert await lane.pending() == 0


async def test_a_slow_consumer_and_its_reclaimer_leave_one_dead_letter(redis: aioredis.Redis) -> None:
    lane = Lane(redis)
    await lane.provision()
    entry = await lane.add_raw({"type": "x", "event": "{"})
    await redis.xreadgroup(lane.group, "slow", {lane.routine: ">"}, count=1)
    await redis.xclaim(lane.routine, lane.group, "fast", 0, [entry])  # reclaimed by another

    async def handler(ms: list[Message]) -> None:
        return None

    slow, fast = lane.consumer(handler, name="slow"), lane.consumer(handler, name="fast")
    moved = await asyncio.gather(*(c.dead_letter(lane.routine, entry, {"type": "x", "event": "{"}, "bad", 2)
                                   for c in (slow, fast)))
    assert sorted(moved) == [False, True]
    assert await redis.xlen(dead_letter_stream(lane.group)) == 1


async def test_stop_hands_back_what_could_not_be_finished(redis: aioredis.Redis) -> None:
    lane = Lane(redis)
    await lane.provision()
    events = [submitted() for _ in range(3)]
    for e in events:
        await lane.add(e)
    started = asyncio.Event()

    async def database_down(ms: list[Message]) -> None:
        started.set()
        raise ConnectionRefusedError("database unreachable")

    c = lane.consumer(database_down, name="leaving", reclaim_idle_ms=60_000)
    task = await running(c)
    await asyncio.wait_for(started.wait(), 10)
    await stop(c, task)
    # Still pending (nothing lost), but claimable at once by another consumer.
    rows = await redis.xpending_range(lane.routine, lane.group, "-", "+", 10)
    assert len(rows) == 3
    assert all(r["time_since_delivered"] >= 60_000 for r in rows)
    assert c.stats.handed_back == 3
    got: list[Message] = []

    async def handler(ms: list[Message]) -> None:
        got.extend(ms)

    other = lane.consumer(handler, name="other", reclaim_idle_ms=60_000)
    task = await running(other)
    await until(lambda: _eq(lambda: len(got), 3), timeout=5)  # far less than the 60 s idle time
    await stop(other, task)
    assert await lane.pending() == 0
    # It stayed in the group while it held entries; now that they were taken over, the
    # janitor forgets it (a live consumer would come back on its next read anyway).
    consumers = await redis.xinfo_consumers(lane.routine, lane.group)
    assert {c["name"]: c["pending"] for c in consumers} == {"leaving": 0}  # "other" left clean
    await forget_idle_consumers(redis, 0, lane.topology)
    assert await redis.xinfo_consumers(lane.routine, lane.group) == []


async def test_stopped_subscribers_have_ended_their_reads_before_the_connections_close(
        redis: aioredis.Redis, redis_url: str) -> None:
    lane = Lane(redis)
    await lane.provision()
    broker = RedisBroker(redis_url, apply_types=False)

    async def handler(ms: list[Message]) -> None:
        return None

    c = lane.consumer(handler, name="blocked", block_ms=5_000, broker=broker)
    c.subscribe(broker)
    await broker.start()
    try:
        subs = list(c._subscribers.values())
        await until(lambda: _eq(lambda: sum(s.running for s in subs), 2), timeout=10)
        reads = [t for s in subs for t in s.tasks]
        await asyncio.sleep(0.3)  # both inside a blocking XREADGROUP
        await stop_subscribers(subs)
        # FastStream's own stop() only cancels the reads; a read not yet ended would meet
        # the connection the broker closes next, and log a ConnectionError.
        assert reads
        assert all(t.done() for t in reads)
    finally:
        await broker.stop()


# -- replay -----------------------------------------------------------------------------------


async def test_replaying_a_repaired_dead_letter_reaches_the_same_group_only(redis: aioredis.Redis) -> None:
    lane = Lane(redis)
    other_group = f"{lane.group}-other"
    lane.topology[other_group] = [lane.routine]
    await lane.provision()
    broken = submitted().model_dump(mode="json")
    broken["data"]["age_band"] = "thirty"
    await lane.add_raw({"type": "referral.submitted.v1", "event": json.dumps(broken)})
    got: list[Message] = []

    async def handler(ms: list[Message]) -> None:
        got.extend(ms)

    c = lane.consumer(handler, reclaim_idle_ms=60_000)
    task = await running(c)
    await until(lambda: _len(redis, dead_letter_stream(lane.group), 1))
    [letter] = await dead_letters(redis, lane.group)

    # A repair that still does not parse is refused before anything moves.
    from shared.events import BadEvent

    with pytest.raises(BadEvent, match="age_band"):
        await replay_dead_letter(redis, lane.group, letter["id"], json.dumps(broken))
    assert await redis.xlen(dead_letter_stream(lane.group)) == 1

    broken["data"]["age_band"] = "30-34"
    await replay_dead_letter(redis, lane.group, letter["id"], json.dumps(broken))
    await until(lambda: _eq(lambda: len(got), 1))
    await stop(c, task)
    assert got[0].envelope.id == broken["id"]
    assert got[0].stream == replay_stream(lane.group)
    assert await redis.xlen(dead_letter_stream(lane.group)) == 0
    # Replayed once: a second replay of the same letter finds nothing.
    with pytest.raises(KeyError):
        await replay_dead_letter(redis, lane.group, letter["id"])
    # The other group reading the original stream never sees the replay.
    assert await redis.xlen(replay_stream(other_group)) == 0


async def _len(redis: aioredis.Redis, key: str, n: int) -> bool:
    return int(await redis.xlen(key)) >= n


async def _eq(value: Callable[[], int], n: int) -> bool:
    return value() >= n


class UniqueViolationError(Exception):  # asyncpg's, by name
    pass


def clash() -> Exception:
    from sqlalchemy.exc import IntegrityError
    return IntegrityError("INSERT INTO receiver", {}, UniqueViolationError("duplicate key value"))


async def test_a_clash_with_a_concurrent_transaction_is_handled_again_at_once(redis: aioredis.Redis) -> None:
    lane = Lane(redis)
    await lane.provision()
    e = submitted(urgency="crisis")
    await lane.add(e, lane.urgent)
    attempts = 0
    got: list[Message] = []

    async def handler(ms: list[Message]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 2:  # another handler inserted the same row first, then committed
            raise clash()
        got.extend(ms)

    # A reclaim a minute away: handled now, not after it.
    c = lane.consumer(handler, reclaim_idle_ms=60_000, max_deliveries=1)
    task = await running(c)
    await until(lambda: _eq(lambda: len(got), 1))
    await stop(c, task)
    assert got[0].deliveries == 1  # not counted as a failed delivery
    assert await redis.exists(error_key(lane.group, lane.urgent, got[0].entry_id)) == 0
    assert await lane.pending(lane.urgent) == 0
    assert await redis.xlen(dead_letter_stream(lane.group)) == 0


async def test_a_clash_that_keeps_coming_counts_as_the_entry_failing(redis: aioredis.Redis) -> None:
    from shared.streams.consumer import CONFLICT_RETRIES

    lane = Lane(redis)
    await lane.provision()
    await lane.add(submitted())
    attempts = 0

    async def handler(ms: list[Message]) -> None:
        nonlocal attempts
        attempts += 1
        raise clash()  # a unique violation of the entry's own making, every time

    c = lane.consumer(handler, reclaim_idle_ms=200, max_deliveries=1)
    task = await running(c)
    await until(lambda: _len(redis, dead_letter_stream(lane.group), 1))
    await stop(c, task)
    assert attempts == CONFLICT_RETRIES + 1  # a few at once, then it counted: one delivery
    entry = (await redis.xrange(dead_letter_stream(lane.group)))[0][1]
    assert "UniqueViolationError" in " ".join(str(v) for v in entry.values())  # the reason names it


def test_what_counts_as_the_infrastructure_being_away() -> None:
    from sqlalchemy.exc import OperationalError

    from shared.streams.consumer import is_transient

    class ConnectionDoesNotExistError(Exception):  # asyncpg's, by name
        pass

    wrapped = OperationalError("SELECT 1", {}, ConnectionDoesNotExistError("connection was closed"))
    assert is_transient(wrapped)
    assert is_transient(ConnectionRefusedError(111, "refused"))
    assert is_transient(OSError("Multiple exceptions: [Errno 111] Connect call failed"))
    assert is_transient(OperationalError("INSERT", {}, Exception("database is locked")))
    assert not is_transient(OperationalError("SELECT", {}, Exception("no such table: referral")))
    assert not is_transient(FileNotFoundError("templates/proposal.txt.j2"))
    assert not is_transient(ValueError("bad"))
    assert not is_transient(clash())  # a clash is handled again at once, a bounded number of times
    from shared.streams.consumer import is_conflict
    assert is_conflict(clash())
    assert not is_conflict(wrapped)

