"""Streams stay bounded without losing what a group needs, and Redis losing data (flush,
restart, restore from an older file = what `appendfsync everysec` loses on a power cut) is
made whole again by the outbox. Destructive tests run on their own redis-server."""

from __future__ import annotations

import asyncio
import random
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase

from devtools.redis_server import RedisProcess, free_port
from shared.db import OutboxMixin, make_engine, new_metadata, sessions
from shared.events import Envelope, ReferralSubmitted
from shared.outbox import OutboxRelay, add_events, watermark_key
from shared.streams.consumer import Message, StreamConsumer
from shared.streams.janitor import trim_streams
from shared.streams.topology import SUBMITTED, SUBMITTED_URGENT, connect, provision
from tests.integration.test_streams import Lane, submitted, until


class Base(DeclarativeBase):
    metadata = new_metadata()


class Outbox(OutboxMixin, Base):
    pass


# -- trimming ---------------------------------------------------------------------------------


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def test_trimming_never_removes_an_entry_some_group_still_needs(redis: aioredis.Redis) -> None:
    """Random interleavings of publishing, reading (some entries never acknowledged) and
    trimming, with two groups on one stream: after every trim, every entry still pending or
    not yet delivered in either group is there, and what both acknowledged is gone."""
    rng = random.Random(4)
    lane = Lane(redis)
    slow = f"{lane.group}-slow"
    lane.topology[slow] = [lane.routine]
    await lane.provision()
    for _ in range(60):
        op = rng.random()
        if op < 0.4:
            for _ in range(rng.randint(1, 5)):
                await redis.xadd(lane.routine, {"n": "1"})
        elif op < 0.8:
            group = rng.choice([lane.group, slow])
            res = await redis.xreadgroup(group, f"c{rng.randint(1, 2)}", {lane.routine: ">"}, count=rng.randint(1, 4))
            ids = [i for i, _ in res[0][1]] if res else []
            done = [i for i in ids if rng.random() < 0.7]  # the rest stays pending
            if done:
                await redis.xack(lane.routine, group, *done)
        else:
            needed = await _needed(redis, lane.routine, [lane.group, slow])
            await trim_streams(redis, lane.topology)
            present = {i for i, _ in await redis.xrange(lane.routine)}
            assert needed <= present, f"trimmed needed entries: {sorted(needed - present)}"
            # Everything below the first needed entry was acknowledged by both: gone.
            if needed:
                assert min(present, key=_key) == min(needed, key=_key)
    assert await redis.xlen(lane.routine) < 60 * 3


async def test_nothing_is_trimmed_while_a_group_is_missing(redis: aioredis.Redis) -> None:
    lane = Lane(redis)
    await lane.provision()
    for _ in range(3):
        await redis.xadd(lane.routine, {"n": "1"})
    res = await redis.xreadgroup(lane.group, "c", {lane.routine: ">"}, count=10)
    await redis.xack(lane.routine, lane.group, *[i for i, _ in res[0][1]])
    # A second group that should read this stream is not provisioned (yet, or any more).
    topology = {**lane.topology, f"{lane.group}-absent": [lane.routine]}
    trimmed = await trim_streams(redis, topology)
    assert lane.routine not in trimmed
    assert await redis.xlen(lane.routine) == 3
    assert (await trim_streams(redis, lane.topology))[lane.routine] == 3


async def _needed(redis: aioredis.Redis, stream: str, groups: list[str]) -> set[str]:
    needed: set[str] = set()
    entries = [i for i, _ in await redis.xrange(stream)]
    for g in groups:
        info = {x["name"]: x for x in await redis.xinfo_groups(stream)}[g]
        last = _key(info["last-delivered-id"])
        needed |= {i for i in entries if _key(i) > last}
        needed |= {r["message_id"] for r in await redis.xpending_range(stream, g, "-", "+", 10_000)}
    return needed


def _key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


# -- Redis losing data ------------------------------------------------------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(free_port(), tmp_path / "redis", appendfsync="everysec")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def outbox_db(tmp_path: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield sessions(engine)
    await engine.dispose()


async def _commit(db: async_sessionmaker[AsyncSession], envelopes: list[Envelope]) -> None:
    async with db() as s, s.begin():
        add_events(s, Outbox, envelopes)


async def _published_ids(redis: aioredis.Redis) -> list[str]:
    out = []
    for stream in (SUBMITTED, SUBMITTED_URGENT):
        for _, fields in await redis.xrange(stream):
            out.append(Envelope.model_validate_json(fields[b"event"]).id)
    return out


def _relay(db: async_sessionmaker[AsyncSession], redis: aioredis.Redis, **kw: Any) -> OutboxRelay:
    return OutboxRelay(db, Outbox, redis, service=f"test-{uuid.uuid4().hex[:6]}", **kw)


async def test_a_flushed_redis_gets_back_every_event_of_the_retention_window(
    own_redis: RedisProcess, outbox_db: async_sessionmaker[AsyncSession]
) -> None:
    redis = connect(own_redis.url)
    relay = _relay(outbox_db, redis)
    await provision(redis)
    events = [submitted() for _ in range(5)]
    await _commit(outbox_db, events)
    await relay.check_redis()
    assert await relay.publish_pending() == 5
    assert await relay.check_redis() == 0  # nothing lost, nothing to do

    await redis.flushall()
    assert await relay.check_redis() == 5
    assert await relay.publish_pending() == 5
    assert sorted(await _published_ids(redis)) == sorted(e.id for e in events)
    await redis.aclose()


async def test_redis_restored_from_an_older_file_gets_back_what_it_lost_and_not_much_more(
    own_redis: RedisProcess, outbox_db: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    """An older copy of the append-only file is what a power cut leaves with everysec (the
    last second missing), a lagging replica promoted, or a restored backup."""
    redis = connect(own_redis.url)
    # Every acknowledged XADD in the file before the copy: under everysec Redis may postpone
    # its write while a slow fsync is in flight, and the copy would miss acknowledged entries.
    await redis.config_set("appendfsync", "always")
    relay = _relay(outbox_db, redis, margin_s=0.0)
    await provision(redis)
    await relay.check_redis()
    batches = [[submitted() for _ in range(4)] for _ in range(4)]
    await _commit(outbox_db, batches[0])
    await relay.publish_pending()
    await asyncio.sleep(0.05)
    await _commit(outbox_db, batches[1])
    await relay.publish_pending()  # its watermark vouches for batch 0
    backup = tmp_path / "backup"
    aof = own_redis.data_dir / "appendonlydir"  # Redis 7; 6.2 writes one appendonly.aof
    if not aof.exists():
        aof = own_redis.data_dir / "appendonly.aof"
    copy = shutil.copytree if aof.is_dir() else shutil.copy2
    copy(aof, backup)
    for batch in batches[2:]:
        await asyncio.sleep(0.05)
        await _commit(outbox_db, batch)
        await relay.publish_pending()

    own_redis.kill()
    if aof.is_dir():
        shutil.rmtree(aof)
    copy(backup, aof)
    own_redis.start()
    before = await _published_ids(redis)
    assert sorted(before) == sorted(e.id for e in batches[0] + batches[1])  # batches 2 and 3 lost

    assert await relay.check_redis() == 12  # batches 1-3: everything not vouched for
    await relay.publish_pending()
    after = await _published_ids(redis)
    assert set(after) == {e.id for b in batches for e in b}
    assert all(after.count(e.id) == 1 for e in batches[0])  # vouched for: not sent again
    # The new run is vouched for from now on: a second check does nothing.
    assert await relay.check_redis() == 0
    assert (await redis.hgetall(watermark_key(relay.service)))[b"run_id"]
    await redis.aclose()


async def test_consumers_ride_out_a_redis_restart_and_a_flush(own_redis: RedisProcess) -> None:
    redis = connect(own_redis.url)
    lane = Lane(redis)
    await lane.provision()
    got: list[str] = []

    async def handler(ms: list[Message]) -> None:
        got.extend(m.envelope.id for m in ms)

    c = StreamConsumer(redis, group=lane.group, consumer="c", streams=lane.topology[lane.group],
                       handler=handler, topology=lane.topology, block_ms=100)
    task = asyncio.create_task(c.run())
    first = submitted()
    await lane.add(first)
    await until(lambda: _has(got, first.id))

    own_redis.kill()
    await asyncio.sleep(0.5)
    own_redis.start()
    second = submitted()
    await lane.add(second)
    await until(lambda: _has(got, second.id), timeout=30)

    await redis.flushall()  # streams and groups gone: NOGROUP, provisioned again at 0
    third = submitted()
    await lane.add(third)
    await until(lambda: _has(got, third.id), timeout=30)
    c.stop()
    await asyncio.wait_for(task, 10)
    assert got.count(third.id) == 1
    assert await lane.pending() == 0
    await redis.aclose()


async def _has(got: list[str], event_id: str) -> bool:
    return event_id in got


def _envelopes(n: int) -> list[Envelope]:
    return [Envelope.wrap(ReferralSubmitted(
        referral_id=f"r{i}", agency_id="demo", pmks_category="fakir_miskin", urgency="routine",  # type: ignore[arg-type]
        region_code="12.71", age_band="30-34", gender="female", modality="any", consent_share=True,  # type: ignore[arg-type]
    ), source="test", subject=f"r{i}") for i in range(n)]
