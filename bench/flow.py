"""Driving a stream flow and timing it, the same way for the reference relay and for the
referral pipeline, so that their figures compare.

- drain (the method of the brief's relay_bench.py, minus process start-up): the consumer
  processes are started and idle, then paused (SIGSTOP); N entries are XADDed as a backlog;
  the processes are resumed (SIGCONT) and throughput is N over the time from resuming to
  the N-th completion seen at the end of the flow. Filling first keeps the producer's work
  off the 2 cores while the consumers are timed.
- paced: entries are sent at a fixed rate for a fixed time; each one's latency runs from
  the moment it was *due* (not when the producer got to it: a late producer must not hide
  queueing) to the moment its completion was read at the end of the flow. A run is
  sustained when what came out, over the time until the last one came out, is at least
  95% of the rate sent in; if the backlog grows past what the flow could drain in a few
  seconds, sending stops early (not sustained either).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from bench.stats import latency_summary

# (key of the item, stream to XADD to, fields) for one new item.
MakeEntry = Callable[[], tuple[str, str, dict[str, str]]]
# A read entry -> (key of the item, label) when it tells something about an item: label
# "end" completes it, "end:<why>" completes it without the normal end, anything else is a
# milestone on the way.
Classify = Callable[[str, dict[bytes, bytes]], tuple[str, str] | None]


@dataclass
class Probe:
    make: MakeEntry
    end_streams: list[str]
    classify: Classify


@dataclass
class Tracker:
    """Reads the end streams and stamps what arrives, by item key."""

    redis: aioredis.Redis
    probe: Probe
    sent_at: dict[str, float] = field(default_factory=dict)
    ended_at: dict[str, float] = field(default_factory=dict)
    end_kind: dict[str, str] = field(default_factory=dict)
    milestones: dict[str, dict[str, float]] = field(default_factory=dict)
    _positions: dict[str, str] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False

    async def start(self) -> None:
        for stream in self.probe.end_streams:
            last: Any = await self.redis.xrevrange(stream, count=1)
            self._positions[stream] = last[0][0].decode() if last else "0-0"
        self._task = asyncio.create_task(self._read())

    async def stop(self) -> None:
        # Not task.cancel(): cancelling redis-py in the middle of a blocking XREAD can hang
        # the connection; the loop notices the flag within one block interval instead.
        self._stopping = True
        if self._task is not None:
            await self._task

    @property
    def done(self) -> int:
        return len(self.ended_at)

    async def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.done < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(remaining, 1.0))
        return True

    async def _read(self) -> None:
        while not self._stopping:
            res: Any = await self.redis.xread(self._positions, count=1000, block=200)  # type: ignore[arg-type]
            now = time.monotonic()
            for stream, entries in res or []:
                name = stream.decode()
                for entry_id, fields in entries:
                    self._positions[name] = entry_id.decode()
                    seen = self.probe.classify(name, fields)
                    if seen is None:
                        continue
                    key, label = seen
                    if key not in self.sent_at or key in self.ended_at:
                        continue  # not this run's, or a duplicate delivery
                    if label == "end" or label.startswith("end:"):
                        self.ended_at[key] = now
                        self.end_kind[key] = label
                    else:
                        self.milestones.setdefault(label, {})[key] = now
            if res:
                self._changed.set()


class Paused:
    """SIGSTOP / SIGCONT of the consumer processes around the filling of a backlog."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def __enter__(self) -> Paused:
        for pid in self.pids:
            os.kill(pid, signal.SIGSTOP)
        return self

    def __exit__(self, *exc: object) -> None:
        for pid in self.pids:
            os.kill(pid, signal.SIGCONT)


async def drain(redis: aioredis.Redis, probe: Probe, count: int, timeout: float,
                consumer_pids: list[int]) -> dict[str, Any]:
    entries = [probe.make() for _ in range(count)]
    tracker = Tracker(redis, probe)
    await tracker.start()
    try:
        with Paused(consumer_pids):
            for i in range(0, count, 1000):
                pipe = redis.pipeline(transaction=False)
                for key, stream, fields in entries[i:i + 1000]:
                    pipe.xadd(stream, fields)  # type: ignore[arg-type]
                    tracker.sent_at[key] = 0.0
                await pipe.execute()
            t0 = time.monotonic()
        for key in tracker.sent_at:
            tracker.sent_at[key] = t0
        complete = await tracker.wait_for(count, timeout)
        last = max(tracker.ended_at.values(), default=t0)
    finally:
        await tracker.stop()
    seconds = last - t0
    return {
        "count": count, "completed": tracker.done, "complete": complete, "seconds": round(seconds, 3),
        "throughput_per_s": round(tracker.done / seconds, 1) if seconds > 0 else None,
        **_ends(tracker),
    }


async def paced(redis: aioredis.Redis, probe: Probe, rate: float, duration: float, *,
                max_backlog: int, drain_timeout: float) -> dict[str, Any]:
    total = int(rate * duration)
    tracker = Tracker(redis, probe)
    await tracker.start()
    sustained = True
    sent = 0
    try:
        t0 = time.monotonic()
        while sent < total:
            due = min(total, int((time.monotonic() - t0) * rate) + 1)
            if due > sent:
                pipe = redis.pipeline(transaction=False)
                for i in range(sent, due):
                    key, stream, fields = probe.make()
                    tracker.sent_at[key] = t0 + i / rate
                    pipe.xadd(stream, fields)  # type: ignore[arg-type]
                await pipe.execute()
                sent = due
                if sent - tracker.done > max_backlog:
                    sustained = False  # the flow falls behind: stop before the backlog buries the machine
                    break
            delay = t0 + sent / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        send_s = time.monotonic() - t0
        complete = await tracker.wait_for(sent, drain_timeout)
    finally:
        await tracker.stop()
    latencies = [tracker.ended_at[k] - tracker.sent_at[k] for k in tracker.ended_at]
    # Kept up: what came out, over the time until the last one came out, is the rate sent in
    # (a flow slower than the rate still finishes a short run, but late).
    span = max(tracker.ended_at.values(), default=t0) - t0
    achieved = tracker.done / span if span > 0 else 0.0
    out: dict[str, Any] = {
        "rate_per_s": rate, "planned": total, "sent": sent, "completed": tracker.done, "complete": complete,
        "send_seconds": round(send_s, 2), "achieved_per_s": round(achieved, 1),
        "sustained": sustained and complete and achieved >= 0.95 * rate,
        **latency_summary(latencies), **_ends(tracker),
    }
    for label, stamps in sorted(tracker.milestones.items()):
        out[f"to_{label}"] = latency_summary([stamps[k] - tracker.sent_at[k] for k in stamps])
    return out


def _ends(tracker: Tracker) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    for kind in tracker.end_kind.values():
        kinds[kind] = kinds.get(kind, 0) + 1
    return {"ends": kinds}


def envelope_fields(fields: dict[bytes, bytes]) -> dict[str, Any]:
    return json.loads(fields[b"event"])
