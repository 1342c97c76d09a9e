"""Decision latency against directories of 1k, 10k and 100k services (a benchmark, not a test).

    uv run python bench/matching_latency.py --sizes 1000,10000,100000 [--database-url URL] [--decisions 300]

One decision is what matching does for one `referral.submitted`: its transaction (inbox,
candidate lookup, ranking, seat hold, decision row, outbox row), measured end to end
through `Matching.handle`, one referral at a time, on the same synthetic national directory
the pipeline bench uses (bench.workload: services over 38 provinces x 10 regencies, 1-4
PMKS categories each, 10% online, 30% support groups; referrals that each have a match).

A decision must not scan the directory. Two figures say so, measured in the same run:
- the candidates a decision reads (mean, max) against the directory's size: with the
  in-memory directory index (service_layer.index), the candidates whose live seat counts it
  reads; when it falls back, the rows of the database shortlist;
- the reference: reading every service of one category with the decision's own query
  (what a lookup without the region index would read) — the decision's p50 is given as a
  ratio to it.

Without --database-url the bench runs its own PostgreSQL (tests.servers.PostgresProcess,
durable as compose runs it); a SQLite URL works too. The directory tables of the given
database are emptied and filled again for each size.

`run(sizes, database_url) -> dict` is what `make bench` imports.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import func, select, text

from bench.stats import latency_summary
from bench.workload import envelopes, load_directory, make_directory
from matching.adapters.orm import Service, ServiceCategory
from matching.service_layer import deciding as deciding_module
from matching.service_layer import shortlist as shortlist_module
from matching.service_layer.handlers import Matching
from shared.db import make_engine, sessions
from shared.events import ReferralSubmitted
from shared.streams.consumer import Message

TABLES = ("seat_hold", "decision", "referral_case", "outbox", "processed_event", "service_area",
          "service_category", "service_capacity", "contact", "schedule", "attribute", "service_at_location",
          "service", "organization")


class _Unrelayed:
    """The outbox is written but not relayed: the bench measures the decision alone."""

    def kick(self) -> None:
        pass


async def _empty(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        async with engine.begin() as conn:
            existing = set(await conn.run_sync(lambda c: __import__("sqlalchemy").inspect(c).get_table_names()))
            for table in TABLES:
                if table in existing:
                    await conn.execute(text(f"DELETE FROM {table}"))  # noqa: S608 - fixed names
    finally:
        await engine.dispose()


async def measure(size: int, database_url: str, decisions: int = 300, seed: int = 11) -> dict[str, Any]:
    from matching.bootstrap import MIGRATIONS
    from shared.db import upgrade

    await upgrade(database_url, MIGRATIONS)
    await _empty(database_url)
    directory = make_directory(size)
    t0 = time.perf_counter()
    await load_directory(database_url, directory)
    load_s = time.perf_counter() - t0

    engine = make_engine(database_url)
    db = sessions(engine)
    matching = Matching(db, _Unrelayed(), hold_routine=timedelta(hours=72),  # type: ignore[arg-type]
                        hold_urgent=timedelta(hours=4))
    # Count what each decision reads, by wrapping the candidate lookup it calls.
    read: list[int] = []
    lookup = deciding_module.shortlist

    async def counting(s: Any, facts: Any, **kw: Any) -> Any:
        found = await lookup(s, facts, **kw)
        read.append(len(found.views))
        return found

    # ... and the in-memory index's shortlist (the candidates whose seats it reads).
    fast_lookup = matching.index.shortlist

    async def counting_fast(s: Any, facts: Any, *passed_by: Any) -> Any:
        views = await fast_lookup(s, facts, *passed_by)
        if views is not None:
            read.append(len(views))
        return views

    deciding_module.shortlist = counting  # type: ignore[assignment]
    matching.index.shortlist = counting_fast  # type: ignore[method-assign,assignment]
    try:
        batch = list(envelopes(directory, decisions + 20, seed))
        # The generator's 100k objects are the bench's, not the service's: keep the garbage
        # collector from walking them during the measurement (a service process has no such heap).
        del directory
        gc.collect()
        gc.freeze()
        for env in batch[:20]:  # warm-up: connections, statement caches
            await matching.handle([Message("bench", "0-1", env, ReferralSubmitted.model_validate(env.data))])
        read.clear()
        latencies = []
        for env in batch[20:]:
            msg = Message("bench", "0-1", env, ReferralSubmitted.model_validate(env.data))
            t = time.perf_counter()
            await matching.handle([msg])
            latencies.append(time.perf_counter() - t)

        # The reference: every service of one (typical) category, read with the decision's own
        # columns: what a lookup by category alone (no region index) would read.
        rnd = random.Random(seed)
        async with db() as s:
            codes = list((await s.scalars(select(ServiceCategory.pmks_code).distinct())).all())
            scan = []
            for code in rnd.sample(codes, min(5, len(codes))):
                t = time.perf_counter()
                rows = (await s.execute(shortlist_module._details().join(
                    ServiceCategory, ServiceCategory.service_id == Service.id)
                    .where(ServiceCategory.pmks_code == code))).all()
                scan.append((time.perf_counter() - t, len(rows)))
            outcomes = dict((await s.execute(text(
                "SELECT outcome, count(*) FROM decision GROUP BY outcome"))).all())  # type: ignore[arg-type]
            total = await s.scalar(select(func.count()).select_from(Service))
    finally:
        gc.unfreeze()
        deciding_module.shortlist = lookup  # type: ignore[assignment]
        await engine.dispose()
    summary = latency_summary(latencies)
    scan_s = sorted(x for x, _ in scan)[len(scan) // 2]
    return {
        "services": total, "database": engine.dialect.name, "load_s": round(load_s, 2), **summary,
        "candidates_read_mean": round(sum(read) / len(read), 1), "candidates_read_max": max(read),
        "read_share_of_directory": round(max(read) / size, 4),
        "category_scan_ms": round(scan_s * 1000, 2), "category_scan_rows": sorted(n for _, n in scan)[len(scan) // 2],
        "p50_to_category_scan": round((summary["p50_ms"] or 0) / (scan_s * 1000), 3),
        "outcomes": {str(k): int(v) for k, v in outcomes.items()},
    }


async def _run(sizes: list[int], database_url: str, decisions: int) -> dict[str, Any]:
    results = {}
    for size in sizes:
        results[str(size)] = await measure(size, database_url, decisions)
        print_row(size, results[str(size)])
    first, last = results[str(sizes[0])], results[str(sizes[-1])]
    return {"sizes": results,
            "p50_growth": round((last["p50_ms"] or 0) / (first["p50_ms"] or 1), 2),
            "size_growth": round(sizes[-1] / sizes[0], 1)}


def print_header() -> None:
    print(f"{'services':>9} {'db':>10} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'read mean':>9} "
          f"{'read max':>8} {'cat scan ms':>11} {'p50/scan':>8}", flush=True)


def print_row(size: int, r: dict[str, Any]) -> None:
    print(f"{size:>9} {r['database']:>10} {r['p50_ms']:>8} {r['p99_ms']:>8} {r['max_ms']:>8} "
          f"{r['candidates_read_mean']:>9} {r['candidates_read_max']:>8} {r['category_scan_ms']:>11} "
          f"{r['p50_to_category_scan']:>8}", flush=True)


def run(sizes: list[int], database_url: str | None = None, decisions: int = 300) -> dict[str, Any]:
    """Measure each size in turn; prints a table and returns the figures."""
    print_header()
    if database_url:
        return asyncio.run(_run(sizes, database_url, decisions))
    from tests.servers import PostgresProcess

    pg = PostgresProcess(durable=True).start()
    try:
        return asyncio.run(_run(sizes, pg.create_database("matching_latency"), decisions))
    finally:
        pg.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--database-url", default=None)
    ap.add_argument("--decisions", type=int, default=300)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    result = run([int(x) for x in args.sizes.split(",")], args.database_url, args.decisions)
    print(f"p50 grew x{result['p50_growth']} while the directory grew x{result['size_growth']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
