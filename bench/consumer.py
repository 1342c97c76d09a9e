"""Stage `consumer`: the project's stream consumer against a plain loop, and the takeover of a
dead consumer's entries (bench/README.md, "The consumer").

1. Hop: `shared.streams.consumer.StreamConsumer` (FastStream batched `StreamSub` underneath,
   the project's per-entry policy around the handler) against a plain XREADGROUP/XACK loop
   that parses each entry the same way (`parse_entry`), on the same redis-server, with the
   same entries and the same trivial handler: drain throughput of a backlog, and the latency
   from an entry's due time to its handler at a paced rate.
2. Takeover: a dead consumer's pending entries, idle past the claim time, taken over by
   FastStream's own `min_idle_time` subscriber (XAUTOCLAIM COUNT 1, one handler call and one
   XACK per entry) or by the project's batched `StreamConsumer.reclaim` (XAUTOCLAIM COUNT
   100, delivery counts by pipelined XPENDING, one handler call and one XACK per batch):
   the time until all are handled and acknowledged, with a trivial handler and with a
   handler that costs what a commit costs (`commit_ms`, slept per call).

Everything runs in this process on uvloop, one consumer at a time, on fresh streams.
`uv run python -m bench.consumer` runs it alone on a redis-server of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from faststream import AckPolicy
from faststream.redis import RedisBroker, StreamSub

from shared.events import new_id, parse_entry
from shared.streams.consumer import Message, StreamConsumer, redis_url_of, stop_subscribers
from shared.streams.topology import connect, decoded, ensure_groups, replay_stream

GROUP = "bench"
BATCH = 100  # the services' batch (StreamConsumer's default)
BLOCK_MS = 1000  # the services' stream_block_ms


@dataclass(frozen=True)
class Plan:
    drain: int = 10_000
    rounds: int = 3
    rate: float = 500.0
    paced_seconds: float = 4.0
    pending: int = 700
    claim_idle_ms: int = 200
    commit_ms: tuple[float, ...] = (0.0, 2.0)


QUICK = Plan(drain=5_000, rounds=2, paced_seconds=2.0)
TINY = Plan(drain=50, rounds=1, rate=200.0, paced_seconds=0.25, pending=50, claim_idle_ms=50, commit_ms=(0.0,))


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def entries(count: int, seed: int = 11) -> list[dict[str, str]]:
    """`referral.submitted` entries as intake publishes them (the pipeline stage's envelopes)."""
    from bench.workload import envelopes, make_directory

    return [env.to_fields() for env in envelopes(make_directory(200), count, seed)]


async def add(redis: aioredis.Redis, stream: str, fields: list[dict[str, str]]) -> None:
    for start in range(0, len(fields), 1000):
        pipe = redis.pipeline(transaction=False)
        for f in fields[start:start + 1000]:
            pipe.xadd(stream, f)  # type: ignore[arg-type]
        await pipe.execute()


async def fresh_stream(redis: aioredis.Redis, name: str) -> str:
    """A new stream with the group at id 0 (FastStream would create it at `$`)."""
    stream = f"bench:{name}:{new_id()}"
    await redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
    return stream


async def pending(redis: aioredis.Redis, stream: str) -> int:
    return int((await redis.xpending(stream, GROUP))["pending"])


async def _acknowledged(redis: aioredis.Redis, stream: str, timeout: float = 10.0) -> float:
    """When the last entry handled was acknowledged (the handler is called before the XACK)."""
    deadline = time.perf_counter() + timeout
    while await pending(redis, stream):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"entries of {stream} still pending")
        await asyncio.sleep(0.001)
    return time.perf_counter()


# --- the two consumers under test -----------------------------------------------------------


@dataclass
class Counter:
    """The trivial handler: counts what it is given, notes when, and says when `target` were seen."""

    target: int
    commit_s: float = 0.0
    seen: int = 0
    calls: int = 0
    first_at: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    on_batch: Callable[[list[Message], float], None] | None = None

    async def __call__(self, messages: list[Message]) -> None:
        now = time.perf_counter()
        if self.first_at is None:
            self.first_at = now
        if self.commit_s:
            await asyncio.sleep(self.commit_s)
        self.calls += 1
        self.seen += len(messages)
        if self.on_batch is not None:
            self.on_batch(messages, now)
        if self.seen >= self.target:
            self.done.set()


class Raw:
    """The plain loop: XREADGROUP (COUNT 100, BLOCK), parse each entry, the handler, XACK."""

    name = "raw XREADGROUP/XACK loop"

    def __init__(self, redis: aioredis.Redis, stream: str, handler: Counter) -> None:
        # A client of its own, as a service process has: a read cancelled at stop must not
        # leave a broken connection in the driver's pool.
        self.redis, self.stream, self.handler = connect(redis_url_of(redis)), stream, handler
        self.consumer = f"raw-{new_id()}"
        self.task: asyncio.Task[None] | None = None
        self.stopping = False

    async def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self.stopping:
            # A short BLOCK only so that stop() is quick: a read returns as soon as entries come.
            res: Any = await self.redis.xreadgroup(GROUP, self.consumer, {self.stream: ">"}, count=BATCH,
                                                   block=100)
            for _stream, batch in res or []:
                messages = []
                for entry_id, fields in batch:
                    env, data = parse_entry(fields)
                    messages.append(Message(self.stream, decoded(entry_id), env, data))
                await self.handler(messages)
                await self.redis.xack(self.stream, GROUP, *[m.entry_id for m in messages])

    async def stop(self) -> None:
        # Not by cancelling: a redis-py read cancelled while it blocks can hang its task.
        self.stopping = True
        if self.task is not None:
            await asyncio.wait_for(self.task, 10)
        await self.redis.aclose()


class Project:
    """`StreamConsumer` as the services run it: its own broker, one batched subscriber per
    stream (and the group's replay stream), the per-entry policy around the handler."""

    name = "StreamConsumer (FastStream)"

    def __init__(self, redis: aioredis.Redis, stream: str, handler: Counter, reclaim_idle_ms: int = 30_000) -> None:
        self.redis = connect(redis_url_of(redis))
        self.consumer = StreamConsumer(self.redis, group=GROUP, consumer=f"fs-{new_id()}", streams=[stream],
                                       handler=handler, batch=BATCH, block_ms=BLOCK_MS,
                                       reclaim_idle_ms=reclaim_idle_ms, topology={GROUP: [stream]})
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.consumer.run())

    async def stop(self) -> None:
        self.consumer.stop()
        if self.task is not None:
            await asyncio.wait_for(self.task, 30)
        await self.redis.aclose()


Kind = Callable[[aioredis.Redis, str, Counter], "Raw | Project"]
KINDS: dict[str, Kind] = {"raw": Raw, "faststream": Project}


# --- 1. drain and paced latency --------------------------------------------------------------


async def drain_once(redis: aioredis.Redis, kind: str, fields: list[dict[str, str]], timeout: float) -> float:
    """msg/s from the first handler call to the last entry acknowledged, on a backlog
    written before the consumer starts."""
    stream = await fresh_stream(redis, f"drain-{kind}")
    await add(redis, stream, fields)
    handler = Counter(len(fields))
    consumer = KINDS[kind](redis, stream, handler)
    await consumer.start()
    try:
        await asyncio.wait_for(handler.done.wait(), timeout)
        end = await _acknowledged(redis, stream)
    finally:
        await consumer.stop()
        await redis.delete(stream, replay_stream(GROUP))
    assert handler.first_at is not None
    return len(fields) / (end - handler.first_at)


async def paced_once(redis: aioredis.Redis, kind: str, fields: list[dict[str, str]], rate: float) -> dict[str, Any]:
    """Entries XADDed one by one on a schedule; an entry's latency runs from when it was due
    (a late producer hides nothing) to its handler's call."""
    stream = await fresh_stream(redis, f"paced-{kind}")
    due: dict[str, float] = {}
    latencies: list[float] = []

    def note(messages: list[Message], now: float) -> None:
        latencies.extend(now - due[m.envelope.id] for m in messages)

    handler = Counter(len(fields), on_batch=note)
    consumer = KINDS[kind](redis, stream, handler)
    await consumer.start()
    await asyncio.sleep(0.5)  # reading before the first entry is due
    try:
        t0 = time.perf_counter() + 0.05
        for i, f in enumerate(fields):
            at = t0 + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            due[json.loads(f["event"])["id"]] = at
            await redis.xadd(stream, f)  # type: ignore[arg-type]
        await asyncio.wait_for(handler.done.wait(), 30)
        sent_for = time.perf_counter() - t0
    finally:
        await consumer.stop()
        await redis.delete(stream, replay_stream(GROUP))
    ms = sorted(x * 1000 for x in latencies)
    return {"entries": len(ms), "p50_ms": round(_pct(ms, 50), 2), "p99_ms": round(_pct(ms, 99), 2),
            "max_ms": round(ms[-1], 2), "seconds": round(sent_for, 2)}


def _pct(sorted_values: list[float], p: float) -> float:
    k = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


async def hop(redis_url: str, plan: Plan) -> dict[str, Any]:
    redis = connect(redis_url)
    try:
        backlog = entries(plan.drain)
        # Warm-up (imports, pydantic's first validations, connections), not measured.
        for kind in KINDS:
            await drain_once(redis, kind, backlog[: min(1000, len(backlog))], 60)
        drains: dict[str, list[float]] = {k: [] for k in KINDS}
        for _ in range(plan.rounds):  # alternating, so that both see the same machine
            for kind in KINDS:
                drains[kind].append(await drain_once(redis, kind, backlog, 60))
        drain = {k: round(statistics.median(v)) for k, v in drains.items()}
        log(f"consumer drain ({plan.drain} entries, median of {plan.rounds}): StreamConsumer {drain['faststream']} "
            f"msg/s, raw loop {drain['raw']} msg/s, ratio {drain['faststream'] / drain['raw']:.2f}")
        paced_entries = entries(int(plan.rate * plan.paced_seconds), seed=12)
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
        for _ in range(plan.rounds):
            for kind in KINDS:
                runs[kind].append(await paced_once(redis, kind, paced_entries, plan.rate))
        # The round with the median p99 of each (other work on the machine shows as outliers).
        paced = {k: sorted(v, key=lambda x: x["p99_ms"])[(len(v) - 1) // 2] for k, v in runs.items()}
        fs, raw = paced["faststream"], paced["raw"]
        log(f"consumer at {plan.rate:g} msg/s (median p99 of {plan.rounds}): StreamConsumer p50 {fs['p50_ms']} ms "
            f"p99 {fs['p99_ms']} ms; raw loop p50 {raw['p50_ms']} ms p99 {raw['p99_ms']} ms")
    finally:
        await redis.aclose()
    return {
        "drain_per_s": drain, "drain_rounds_per_s": {k: [round(x) for x in v] for k, v in drains.items()},
        "drain_ratio": round(drain["faststream"] / drain["raw"], 3),
        "paced_rate_per_s": plan.rate, "paced": paced,
        "paced_rounds_p99_ms": {k: [x["p99_ms"] for x in v] for k, v in runs.items()},
        "p99_ratio": round(paced["faststream"]["p99_ms"] / max(paced["raw"]["p99_ms"], 0.001), 3),
    }


# --- 2. takeover of a dead consumer's pending entries ----------------------------------------


async def orphaned(redis: aioredis.Redis, fields: list[dict[str, str]], idle_ms: int) -> str:
    """A stream whose entries were all read by a consumer that then died, idle past idle_ms."""
    stream = await fresh_stream(redis, "takeover")
    await add(redis, stream, fields)
    res: Any = await redis.xreadgroup(GROUP, f"dead-{new_id()}", {stream: ">"}, count=len(fields))
    assert sum(len(b) for _, b in res) == len(fields)
    await asyncio.sleep(idle_ms / 1000 + 0.05)
    return stream


async def _until_acknowledged(redis: aioredis.Redis, stream: str, handler: Counter, timeout: float) -> float:
    await asyncio.wait_for(handler.done.wait(), timeout)
    return await _acknowledged(redis, stream)


async def takeover_faststream(redis: aioredis.Redis, fields: list[dict[str, str]], idle_ms: int,
                              commit_s: float, timeout: float) -> dict[str, Any]:
    """FastStream's `min_idle_time` subscriber: XAUTOCLAIM COUNT 1, the handler (parse the
    entry, the trivial handler) and FastStream's XACK for each entry."""
    stream = await orphaned(redis, fields, idle_ms)
    handler = Counter(len(fields), commit_s)
    broker = RedisBroker(redis_url_of(redis), apply_types=False, log_level=logging.DEBUG,
                         logger=logging.getLogger("bench.faststream"))
    sub = broker.subscriber(
        stream=StreamSub(stream, group=GROUP, consumer=f"taker-{new_id()}", min_idle_time=idle_ms,
                         polling_interval=100),
        ack_policy=AckPolicy.ACK, no_reply=True, decoder=_fields_of)

    async def on_entry(fields: dict[bytes, bytes]) -> None:
        env, data = parse_entry(fields)
        await handler([Message(stream, env.id, env, data, 2)])

    sub(on_entry)
    await broker.connect()
    try:
        t0 = time.perf_counter()
        await sub.start()
        end = await _until_acknowledged(redis, stream, handler, timeout)
    finally:
        await stop_subscribers([sub])  # its read ended before the broker closes the connection
        await broker.stop()
        await redis.delete(stream)
    return {"seconds": round(end - t0, 3), "handler_calls": handler.calls}


async def _fields_of(message: Any, _original: Any) -> Any:
    return message.raw_message["data"]


async def takeover_project(redis: aioredis.Redis, fields: list[dict[str, str]], idle_ms: int,
                           commit_s: float, timeout: float) -> dict[str, Any]:
    """The project's batched reclaim: `StreamConsumer.reclaim()` once, as its run loop calls it."""
    stream = await orphaned(redis, fields, idle_ms)
    handler = Counter(len(fields), commit_s)
    consumer = StreamConsumer(redis, group=GROUP, consumer=f"taker-{new_id()}", streams=[stream], handler=handler,
                              batch=BATCH, block_ms=BLOCK_MS, reclaim_idle_ms=idle_ms, topology={GROUP: [stream]})
    await ensure_groups(redis, GROUP, consumer.streams)
    try:
        t0 = time.perf_counter()
        claimed = await asyncio.wait_for(consumer.reclaim(), timeout)
        end = await _until_acknowledged(redis, stream, handler, timeout)
    finally:
        await redis.delete(stream, replay_stream(GROUP))
    return {"seconds": round(end - t0, 3), "handler_calls": handler.calls, "claimed": claimed}


async def takeover(redis_url: str, plan: Plan) -> dict[str, Any]:
    redis = connect(redis_url)
    out: dict[str, Any] = {"pending": plan.pending, "claim_idle_ms": plan.claim_idle_ms}
    try:
        fields = entries(plan.pending, seed=13)
        for commit_ms in plan.commit_ms:
            runs = {
                "faststream_min_idle_time": await takeover_faststream(redis, fields, plan.claim_idle_ms,
                                                                      commit_ms / 1000, 55),
                "stream_consumer_reclaim": await takeover_project(redis, fields, plan.claim_idle_ms,
                                                                  commit_ms / 1000, 55),
            }
            ratio = runs["faststream_min_idle_time"]["seconds"] / max(runs["stream_consumer_reclaim"]["seconds"],
                                                                       1e-6)
            out[f"commit_{commit_ms:g}ms"] = {**runs, "ratio_faststream_to_reclaim": round(ratio, 2)}
            log(f"takeover of {plan.pending} pending entries (handler {commit_ms:g} ms per call): FastStream "
                f"min_idle_time {runs['faststream_min_idle_time']['seconds']} s, StreamConsumer.reclaim "
                f"{runs['stream_consumer_reclaim']['seconds']} s ({ratio:.1f}x)")
    finally:
        await redis.aclose()
    return out


# --- the stage ---------------------------------------------------------------------------


async def run_async(redis_url: str, plan: Plan) -> dict[str, Any]:
    return {"hop": await hop(redis_url, plan), "takeover": await takeover(redis_url, plan)}


def run(redis_url: str, plan: Plan = Plan()) -> dict[str, Any]:
    """The stage, on uvloop as the services run."""
    import uvloop

    result: dict[str, Any] = uvloop.run(run_async(redis_url, plan))
    return result


def main(argv: list[str] | None = None) -> int:
    """Only this stage, on a redis-server of its own (as compose runs it) on a free port."""
    from devtools.redis_server import RedisProcess, free_port

    ap = argparse.ArgumentParser(prog="python -m bench.consumer", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args(argv)
    workdir = Path(__file__).resolve().parent.parent / "var" / "bench" / f"consumer-{time.strftime('%Y%m%d-%H%M%S')}"
    server = RedisProcess(free_port(), workdir / "redis", appendonly=True, appendfsync="everysec").start()
    try:
        result = run(server.url, QUICK if args.quick else Plan())
    finally:
        server.stop()
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
