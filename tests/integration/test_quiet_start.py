"""A first start and a restart that lost nothing say nothing above DEBUG; a re-send says so at INFO."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from devtools.redis_server import RedisProcess
from shared.streams.topology import connect, provision
from tests.integration.test_streams import submitted
from tests.integration.test_streams_recovery import _commit, _relay, outbox_db, own_redis

__all__ = ["outbox_db", "own_redis"]


async def test_a_first_start_and_a_restart_that_lost_nothing_log_no_warning(
    own_redis: RedisProcess, outbox_db: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="rujukan")
    redis = connect(own_redis.url)
    relay = _relay(outbox_db, redis)
    await provision(redis)
    assert await relay.check_redis() == 0  # a new Redis, an empty outbox: the first start
    own_redis.kill()
    own_redis.start()
    assert await relay.check_redis() == 0  # restarted, nothing had been published
    assert relay.recoveries == 2
    loud = [r for r in caplog.records if r.name.startswith("rujukan") and r.levelno >= logging.INFO]
    assert loud == []
    assert any("no durability watermark" in r.getMessage() for r in caplog.records)  # at DEBUG
    await redis.aclose()


async def test_what_is_sent_again_is_said_once_at_info(
    own_redis: RedisProcess, outbox_db: async_sessionmaker[AsyncSession], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="rujukan")
    redis = connect(own_redis.url)
    relay = _relay(outbox_db, redis)
    await provision(redis)
    await relay.check_redis()
    await _commit(outbox_db, [submitted() for _ in range(3)])
    assert await relay.publish_pending() == 3
    await redis.flushall()
    caplog.clear()
    assert await relay.check_redis() == 3
    said = [r for r in caplog.records if r.name == "rujukan.outbox"]
    assert [(r.levelno, "publishing again 3 events" in r.getMessage()) for r in said] == [(logging.INFO, True)]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    await redis.aclose()
