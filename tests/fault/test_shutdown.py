"""Graceful shutdown of a real service process: SIGTERM in the middle of a backlog. The
process finishes the batch in hand (or hands it back), publishes what it committed, and
exits 0; nothing it read is left unprocessed and unclaimable, nothing acknowledged lacks
its effect, and a restart takes the rest at once (not after the reclaim idle time)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from devtools.redis_server import RedisProcess, free_port
from shared.streams.topology import DECISIONS, DECISIONS_URGENT, RECEIVERS, SUBMITTED, connect, provision, publish
from tests.apps import OPERATOR_KEYS
from tests.integration.test_streams import submitted

pytestmark = [pytest.mark.fault, pytest.mark.timeout(300)]
ROOT = Path(__file__).resolve().parents[2]
BACKLOG = 1500
IDLE_MS = 60_000


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(free_port(), tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def start_matching(tmp_path: Path, redis_url: str, db: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PORT": str(port), "REDIS_URL": redis_url, "DATABASE_URL": f"sqlite+aiosqlite:///{db}",
           "SEED_DEMO": "true", "OPERATOR_KEYS": OPERATOR_KEYS, "RECLAIM_IDLE_MS": str(IDLE_MS), "STREAM_BATCH": "20",
           "LOG_LEVEL": "INFO"}
    log = (tmp_path / "matching.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "matching"], env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        assert proc.poll() is None, (tmp_path / "matching.log").read_text()[-3000:]
        time.sleep(0.2)
    raise AssertionError("matching did not start")


async def stopped_gracefully(proc: subprocess.Popen[bytes], log: Path, nth: int) -> None:
    """Exited after a complete lifespan shutdown (uvicorn re-raises SIGTERM once it is done,
    so the status is 0 or -SIGTERM; the log line tells a finished shutdown from a kill)."""
    code = await asyncio.to_thread(proc.wait, 60)
    text_ = log.read_text()
    assert code in (0, -signal.SIGTERM), text_[-3000:]
    assert text_.count("Application shutdown complete.") == nth, text_[-3000:]


async def test_sigterm_during_a_backlog_loses_nothing(tmp_path: Path, own_redis: RedisProcess) -> None:
    db = tmp_path / "matching.db"
    engine = create_async_engine(f"sqlite+aiosqlite:///{db}")
    redis = connect(own_redis.url)
    plain = aioredis.Redis.from_url(own_redis.url, decode_responses=True)

    async def scalar(sql: str) -> int:
        async with engine.connect() as conn:
            return int((await conn.execute(text(sql))).scalar_one())

    try:
        await provision(redis)
        port = free_port()
        proc = await asyncio.to_thread(start_matching, tmp_path, own_redis.url, db, port)
        events = [submitted() for _ in range(BACKLOG)]
        for i in range(0, BACKLOG, 500):
            await publish(redis, events[i:i + 500])
        while await scalar("SELECT count(*) FROM processed_event") < 100:
            await asyncio.sleep(0.05)

        proc.send_signal(signal.SIGTERM)
        await stopped_gracefully(proc, tmp_path / "matching.log", 1)

        group: Any = {g["name"]: g for g in await plain.xinfo_groups(SUBMITTED)}["matching"]
        read, pending = int(group["entries-read"]), int(group["pending"])
        assert 0 < read < BACKLOG, "SIGTERM should have landed in the middle of the backlog"
        # What was read but not finished was handed back: claimable at once, not after 60 s.
        for row in await plain.xpending_range(SUBMITTED, "matching", "-", "+", BACKLOG):
            assert row["time_since_delivered"] >= IDLE_MS, row
        # Everything acknowledged has its effect, once.
        processed = await scalar("SELECT count(*) FROM processed_event")
        assert processed == read - pending
        assert await scalar("SELECT count(*) FROM decision") == processed
        # What it committed, it published before leaving.
        assert await scalar("SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
        # Decisions, and the receivers matching issued on its first proposals to them.
        published = sum([await plain.xlen(s) for s in (DECISIONS, DECISIONS_URGENT, RECEIVERS)])
        assert published == await scalar("SELECT count(*) FROM outbox")
        handled_before = processed

        proc = await asyncio.to_thread(start_matching, tmp_path, own_redis.url, db, port)
        deadline = time.monotonic() + IDLE_MS / 1000 - 10  # liveness: well before any idle reclaim
        while await scalar("SELECT count(*) FROM processed_event") < BACKLOG:
            assert time.monotonic() < deadline, "the rest of the backlog was not taken over"
            await asyncio.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        await stopped_gracefully(proc, tmp_path / "matching.log", 2)
        assert await scalar("SELECT count(*) FROM decision") == BACKLOG
        assert await scalar("SELECT count(DISTINCT referral_id) FROM decision") == BACKLOG
        assert int((await plain.xpending(SUBMITTED, "matching"))["pending"]) == 0
        log = (tmp_path / "matching.log").read_text()
        print(f"\nSIGTERM after {handled_before} of {BACKLOG}; {pending} entries handed back; "
              f"log lines on hand-back: {log.count('handed back')}")
    finally:
        await plain.aclose()
        await redis.aclose()
        await engine.dispose()
