"""The bench's timing machinery against a real Redis: the reference relay's two hop
processes move every entry, a drain counts each once, a paced run reports every entry it
sent. No timed assertions: only that the harness measures what it says it measures."""

from __future__ import annotations

import redis.asyncio as aioredis

from bench import flow
from bench.relay import STREAMS, Relay, probe
from bench.workload import make_directory


async def test_reference_relay_drain_and_paced_runs(redis_url: str) -> None:
    relay = Relay(redis_url)
    relay.start()
    client = aioredis.Redis.from_url(redis_url)
    try:
        p = probe(make_directory(50, seed=1))
        drained = await flow.drain(client, p, 300, timeout=60, consumer_pids=relay.pids())
        assert drained["completed"] == 300
        assert drained["complete"]
        assert drained["ends"] == {"end": 300}
        paced = await flow.paced(client, p, rate=100, duration=1.0, max_backlog=1000, drain_timeout=60)
        assert paced["sent"] == paced["completed"] == 100
        assert paced["count"] == 100
        assert paced["p99_ms"] is not None
        assert paced["p50_ms"] <= paced["p99_ms"] <= paced["max_ms"]
        # Each entry went through both hops exactly once.
        last = await client.xrevrange(STREAMS[-1], count=1)
        assert b'"hops": 2' in last[0][1][b"event"]
    finally:
        relay.stop()
        await client.delete(*STREAMS)
        await client.aclose()


async def test_paced_run_stops_when_the_flow_falls_behind(redis_url: str) -> None:
    # No consumer at all: nothing completes, so the backlog guard must stop the producer.
    p = probe(make_directory(20, seed=1))
    client = aioredis.Redis.from_url(redis_url)
    try:
        out = await flow.paced(client, p, rate=1000, duration=2.0, max_backlog=50, drain_timeout=0.5)
        assert not out["sustained"]
        assert 50 < out["sent"] < 2000
        assert out["completed"] == 0
    finally:
        await client.delete(*STREAMS)
        await client.aclose()
