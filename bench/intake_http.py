"""Intake over HTTP under wrk: accepted referrals per second, and latency percentiles.

Each request is a new valid referral (bench/intake_referral.lua), answered 202 only after
its transaction (referral, timeline entry, outbox row) is committed to PostgreSQL with
fsync and synchronous_commit on, as compose runs it. wrk is closed-loop: CONNECTIONS
requests are in flight at any time, so the figure is the service's capacity, and its p99
the latency at that capacity. Only intake runs (matching and notify would share the two
cores and their work is measured by the pipeline stage); submitted referrals wait in
their stream. The count of 202s is checked against the rows in the database.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from sqlalchemy import text

from shared.db import make_engine

SCRIPT = Path(__file__).with_name("intake_referral.lua")
CONNECTIONS = 32


def wrk_path() -> str | None:
    return shutil.which("wrk")


def run_wrk(url: str, api_key: str, seconds: float, run_id: str, connections: int = CONNECTIONS) -> dict[str, Any]:
    exe = wrk_path()
    if exe is None:
        raise RuntimeError("wrk is not installed: `apt-get install -y wrk` (or `make bench-setup`)")
    cmd = [exe, "-t", "1", "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "--timeout", "10s",
           "-s", str(SCRIPT), f"{url}/v1/referrals", "--", run_id, api_key]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            raw: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
            break
    else:
        raise RuntimeError(f"wrk gave no result (exit {out.returncode}): {out.stdout[-500:]} {out.stderr[-500:]}")
    seconds_run = raw["duration_us"] / 1e6
    return {
        "connections": connections, "seconds": round(seconds_run, 2), "requests": raw["requests"],
        "accepted": raw["accepted"], "other_status": raw["other_status"],
        "last_other_status": raw["last_other_status"] or None, "socket_errors": raw["socket_errors"],
        "accepted_per_s": round(raw["accepted"] / seconds_run, 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2), "p90_ms": round(raw["p90_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2), "max_ms": round(raw["max_us"] / 1000, 2),
    }


def count_referrals(database_url: str) -> int:
    async def count() -> int:
        engine = make_engine(database_url)
        try:
            async with engine.connect() as conn:
                return int((await conn.execute(text("SELECT count(*) FROM referral"))).scalar_one())
        finally:
            await engine.dispose()

    return asyncio.run(count())


def measure(url: str, api_key: str, database_url: str, seconds: float) -> dict[str, Any]:
    run_id = time.strftime("%H%M%S")
    before = count_referrals(database_url)
    result = run_wrk(url, api_key, seconds, f"run{run_id}")
    result["rows_committed"] = count_referrals(database_url) - before
    # Every 202 is a committed row (requests cut off by wrk's end may still commit: >=).
    result["all_accepted_committed"] = result["rows_committed"] >= result["accepted"]
    return result
