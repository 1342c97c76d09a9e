"""The reference: a raw redis-py relay through two consumer-group hops.

    driver -> s0 -> hop A (process) -> s1 -> hop B (process) -> s2 -> driver

Each hop does what the project's consumer does at its simplest: XREADGROUP a batch of up to
100, parse each entry's JSON, re-serialise it, XADD it onward and XACK the batch in one
pipelined round trip. No database, no validation: the ceiling a Python service on Redis
streams could reach on this machine, measured in the same run as the project's figures.

The entries carry a real `referral.submitted.v1` envelope, so the hops move the same bytes
the pipeline moves. Both hop processes are started and idle before a run, as the services
are before theirs, and the same driver code (bench.flow) times both.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from contextlib import suppress
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

GROUP = "relay"
STREAMS = ("bench:relay:s0", "bench:relay:s1", "bench:relay:s2")
BATCH = 100


async def hop(redis_url: str, src: str, dst: str, ready_key: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    with suppress(ResponseError):  # BUSYGROUP: a previous run made it
        await client.xgroup_create(src, GROUP, id="$", mkstream=True)
    await client.set(ready_key, "1")
    consumer = f"hop-{os.getpid()}"
    while True:
        res: Any = await client.xreadgroup(GROUP, consumer, {src: ">"}, count=BATCH, block=1000)
        if not res:
            continue
        entries = res[0][1]
        pipe = client.pipeline(transaction=False)
        for _, fields in entries:
            body = json.loads(fields[b"event"])
            body["hops"] = body.get("hops", 0) + 1
            pipe.xadd(dst, {"type": fields[b"type"], "event": json.dumps(body)})
        pipe.xack(src, GROUP, *[entry_id for entry_id, _ in entries])
        await pipe.execute()


class Relay:
    """The two hop processes, started and stopped by the driver."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, timeout: float = 30.0) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            keys = []
            for i, (src, dst) in enumerate(itertools.pairwise(STREAMS)):
                key = f"bench:relay:ready:{i}"
                client.delete(key)
                keys.append(key)
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "bench.relay", "--redis", self.redis_url, "--src", src, "--dst", dst,
                     "--ready-key", key], start_new_session=True))
            deadline = time.monotonic() + timeout
            while not all(client.exists(k) for k in keys):
                for p in self.procs:
                    if p.poll() is not None:
                        raise RuntimeError(f"relay hop exited with {p.returncode}")
                if time.monotonic() > deadline:
                    raise TimeoutError("relay hops not ready")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one hop of the reference relay")
    parser.add_argument("--redis", required=True)
    parser.add_argument("--src", required=True)
    parser.add_argument("--dst", required=True)
    parser.add_argument("--ready-key", required=True)
    args = parser.parse_args(argv)
    # The services run under uvicorn, which uses uvloop when installed: so does the reference.
    import uvloop

    uvloop.run(hop(args.redis, args.src, args.dst, args.ready_key))



def probe(directory: Any, seed: int = 1) -> Any:
    """Entries for the relay: the same referral.submitted envelopes the pipeline gets."""
    from bench.flow import Probe
    from bench.workload import envelopes

    source = envelopes(directory, 10**9, seed)

    def make() -> tuple[str, str, dict[str, str]]:
        env = next(source)
        return env.id, STREAMS[0], env.to_fields()

    def classify(stream: str, fields: dict[bytes, bytes]) -> tuple[str, str] | None:
        return str(json.loads(fields[b"event"])["id"]), "end"

    return Probe(make, [STREAMS[-1]], classify)


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        main()
