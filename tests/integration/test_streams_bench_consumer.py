"""The consumer bench (bench/consumer.py) works end to end at a tiny size: every entry is
handled and acknowledged by each consumer, and the takeover counts one handler call per
entry for FastStream's min_idle_time subscriber and one per batch for the batched reclaim.
No timing is asserted: the figures are the bench's, on its own redis-server."""

from __future__ import annotations

from typing import Any

from bench import consumer


async def test_the_consumer_bench_runs_at_a_tiny_size(redis_url: str, redis: Any) -> None:
    plan = consumer.TINY
    result = await consumer.run_async(redis_url, plan)

    hop = result["hop"]
    assert set(hop["drain_per_s"]) == {"raw", "faststream"}
    assert all(v > 0 for v in hop["drain_per_s"].values())
    for kind in ("raw", "faststream"):
        assert hop["paced"][kind]["entries"] == int(plan.rate * plan.paced_seconds), kind

    took = result["takeover"]["commit_0ms"]
    assert took["faststream_min_idle_time"]["handler_calls"] == plan.pending
    assert took["stream_consumer_reclaim"]["claimed"] == plan.pending
    assert took["stream_consumer_reclaim"]["handler_calls"] == 1  # 50 entries: one batch

    # Nothing is left behind: every stream the bench made was deleted.
    assert [k async for k in redis.scan_iter(match="bench:*")] == []
