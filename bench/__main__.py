"""`make bench` (`uv run python -m bench [--quick] [--profile] [--baseline]`).

One run on this machine, against the bench's own PostgreSQL (durable, as in compose) and
redis-server (as in compose), of:
  1. reference  — a raw redis-py relay through two consumer-group hops: drain throughput,
                  and latency at fixed rates;
  2. pipeline   — referral.submitted envelopes through matching (10,000 services) and
                  notify (deliveries, mail to an SMTP sink): drain throughput, and
                  end-to-end latency at 100, 500 and 1,000 referrals/s;
  3. intake     — POST /v1/referrals under wrk: accepted referrals/s (durable commits), p99;
  4. matching   — decision latency at 1k, 10k and 100k services (bench.matching_latency);
  5. consumer   — the project's StreamConsumer (FastStream underneath) against a plain
                  XREADGROUP/XACK loop, and the takeover of a dead consumer's 700 pending
                  entries: FastStream's min_idle_time subscriber against StreamConsumer.reclaim
                  (bench.consumer; alone: --stages consumer, or python -m bench.consumer).
Every figure is printed beside the reference measured in the same run, as a ratio, and
written to bench/results/ as JSON (see bench/README.md for the method).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import consumer, flow, intake_http, pipeline, relay
from bench.infra import Infra
from bench.profile import Recording, py_spy
from bench.report import print_table, rows, targets
from bench.smtp_sink import SmtpSink
from bench.stack import DEMO_API_KEY, Services
from bench.stats import cpu_seconds, machine_cpu, machine_load
from bench.workload import load_directory, make_directory

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
RATES = (100, 500, 1000)
DIRECTORY_SIZE = 10_000


@dataclass(frozen=True)
class Plan:
    """How much of each stage: the full run aims at < 10 minutes, --quick at ~3."""

    reference_drain: int
    paced_seconds: float
    pipeline_drain_seconds: float
    intake_seconds: float
    intake_warmup: float
    matching_sizes: tuple[int, ...]
    matching_decisions: int


FULL = Plan(reference_drain=20_000, paced_seconds=10, pipeline_drain_seconds=20, intake_seconds=15,
            intake_warmup=3, matching_sizes=(1_000, 10_000, 100_000), matching_decisions=300)
QUICK = Plan(reference_drain=5_000, paced_seconds=4, pipeline_drain_seconds=8, intake_seconds=6,
             intake_warmup=2, matching_sizes=(1_000, 10_000, 100_000), matching_decisions=100)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- 1. reference -------------------------------------------------------------------------


async def reference(infra: Infra, plan: Plan, directory: Any) -> dict[str, Any]:
    import redis.asyncio as aioredis

    hops = relay.Relay(infra.redis_url)
    hops.start()
    client = aioredis.Redis.from_url(infra.redis_url)
    try:
        probe = relay.probe(directory)
        await flow.drain(client, probe, 1000, timeout=60, consumer_pids=hops.pids())  # warm-up
        cpu0 = sum(cpu_seconds(p) for p in hops.pids())
        drained = await flow.drain(client, probe, plan.reference_drain, timeout=120, consumer_pids=hops.pids())
        drained["cpu_ms_per_item"] = round(
            (sum(cpu_seconds(p) for p in hops.pids()) - cpu0) * 1000 / max(drained["completed"], 1), 3)
        log(f"reference drain: {drained['throughput_per_s']} msg/s")
        paced = {}
        for rate in RATES:
            paced[str(rate)] = await flow.paced(client, probe, rate, plan.paced_seconds,
                                                max_backlog=rate * 5, drain_timeout=60)
            log(f"reference at {rate}/s: p50 {paced[str(rate)]['p50_ms']} ms, p99 {paced[str(rate)]['p99_ms']} ms")
    finally:
        hops.stop()
        await client.aclose()
    return {"drain": drained, "paced": paced}


# --- 2. pipeline --------------------------------------------------------------------------


async def _pipeline_runs(infra: Infra, plan: Plan, directory: Any, svc: Services,
                         profile_dir: Path | None) -> dict[str, Any]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(infra.redis_url)
    pids = svc.pids()
    try:
        probe = pipeline.probe(directory, seed=7)
        warm = await flow.drain(client, probe, 100, timeout=120, consumer_pids=pids)
        # Size the drain to last about pipeline_drain_seconds at the warm-up's pace.
        count = int(min(max((warm["throughput_per_s"] or 50) * plan.pipeline_drain_seconds, 200), 20_000))
        cpu0 = {n: cpu_seconds(svc.pid(n)) for n in svc.names}
        pg0 = cpu_seconds(infra.pg.pid, with_children=True) if infra.pg and infra.pg.pid else 0.0
        drained = await flow.drain(client, probe, count, timeout=max(120, 4 * count / (warm["throughput_per_s"] or 10)),
                                   consumer_pids=pids)
        done = max(drained["completed"], 1)
        drained["cpu_ms_per_referral"] = {n: round((cpu_seconds(svc.pid(n)) - cpu0[n]) * 1000 / done, 2)
                                          for n in svc.names}
        if infra.pg and infra.pg.pid:
            drained["cpu_ms_per_referral"]["postgresql"] = round(
                (cpu_seconds(infra.pg.pid, with_children=True) - pg0) * 1000 / done, 2)
        log(f"pipeline drain: {drained['throughput_per_s']} referrals/s ({count} referrals)")
        capacity = drained["throughput_per_s"] or 10
        paced = {}
        for rate in RATES:
            # Stop feeding when the backlog is more than ~3 s of what the pipeline drains.
            out = await flow.paced(client, probe, rate, plan.paced_seconds, max_backlog=int(max(100, 3 * capacity)),
                                   drain_timeout=max(60, 2 * rate * plan.paced_seconds / capacity))
            paced[str(rate)] = out
            log(f"pipeline at {rate}/s: p50 {out['p50_ms']} ms, p99 {out['p99_ms']} ms"
                + ("" if out["sustained"] else f" (not sustained: {out['achieved_per_s']}/s came out)"))
        # Where the fixed rates are beyond the pipeline's capacity, their latency is queueing:
        # the latency of the pipeline itself shows at a rate it sustains, half its capacity.
        half = max(1.0, round(capacity / 2))
        at_half = await flow.paced(client, probe, half, max(plan.paced_seconds, 200 / half if half < 20 else 0),
                                   max_backlog=int(max(100, 3 * capacity)), drain_timeout=120)
        log(f"pipeline at {half:g}/s (half its drain throughput): p50 {at_half['p50_ms']} ms, "
            f"p99 {at_half['p99_ms']} ms")
        result: dict[str, Any] = {"warmup": warm, "drain": drained, "paced": paced, "paced_half_capacity": at_half}
        submitted = warm["count"] + drained["count"] + sum(p["sent"] for p in paced.values()) + at_half["sent"]
        if profile_dir is not None:
            seconds = min(20.0, plan.pipeline_drain_seconds)
            rec = Recording({n: svc.pid(n) for n in svc.names}, profile_dir, seconds, "pipeline")
            extra = await flow.drain(client, probe, int(capacity * seconds * 1.2), timeout=120, consumer_pids=pids)
            submitted += extra["count"]
            result["profile"] = await asyncio.to_thread(rec.wait)
        result["referrals_submitted"] = submitted
        return result
    finally:
        await client.aclose()


def run_pipeline(infra: Infra, plan: Plan, directory: Any, workdir: Path, profile_dir: Path | None) -> dict[str, Any]:
    urls = {n: infra.database(n) for n in ("matching", "notify")}
    t0 = time.monotonic()
    asyncio.run(load_directory(urls["matching"], directory))
    log(f"directory of {len(directory.services)} services loaded in {time.monotonic() - t0:.1f}s")
    sink = SmtpSink().start()
    svc = Services(["matching", "notify"], redis_url=infra.redis_url, smtp_url=sink.url, database_urls=urls,
                   var=workdir / "pipeline")
    mails = 0
    try:
        svc.start()
        result = _run_uvloop(_pipeline_runs(infra, plan, directory, svc, profile_dir))
    finally:
        svc.stop()
        mails = sink.stop()
    result["mails_received"] = mails
    result["directory_services"] = len(directory.services)
    return result


# --- 3. intake over HTTP ------------------------------------------------------------------


def run_intake(infra: Infra, plan: Plan, workdir: Path, profile_dir: Path | None, workers: int) -> dict[str, Any]:
    url = infra.database(f"intake_w{workers}")
    svc = Services(["intake"], redis_url=infra.redis_url, smtp_url="smtp://127.0.0.1:1", database_urls={"intake": url},
                   var=workdir / f"intake-w{workers}", extra_env={"WEB_CONCURRENCY": str(workers)})
    try:
        svc.start()
        pid = svc.pid("intake")
        pg_pid = infra.pg.pid if infra.pg else None
        intake_http.run_wrk(svc.url("intake"), DEMO_API_KEY, plan.intake_warmup, f"warm{workers}")
        cpu0 = cpu_seconds(pid, with_children=True)
        pg0 = cpu_seconds(pg_pid, with_children=True) if pg_pid else 0.0
        result = intake_http.measure(svc.url("intake"), DEMO_API_KEY, url, plan.intake_seconds)
        n = max(result["rows_committed"], 1)
        result["cpu_ms_per_referral"] = {"intake": round((cpu_seconds(pid, with_children=True) - cpu0) * 1000 / n, 2)}
        if pg_pid:
            result["cpu_ms_per_referral"]["postgresql"] = round(
                (cpu_seconds(pg_pid, with_children=True) - pg0) * 1000 / n, 2)
        result["workers"] = workers
        log(f"intake ({workers} worker{'s' if workers > 1 else ''}): {result['accepted_per_s']} accepted/s, "
            f"p99 {result['p99_ms']} ms")
        if profile_dir is not None:
            seconds = min(10.0, plan.intake_seconds)
            rec = Recording({"intake": pid}, profile_dir, seconds, f"intake-w{workers}", subprocesses=workers > 1)
            intake_http.run_wrk(svc.url("intake"), DEMO_API_KEY, seconds, f"prof{workers}")
            result["profile"] = rec.wait()
        return result
    finally:
        svc.stop()


# --- 4. matching --------------------------------------------------------------------------


def run_matching(infra: Infra, plan: Plan) -> dict[str, Any]:
    try:
        from bench import matching_latency
    except ImportError:  # the matching bench is not there: say so rather than guess
        return {"error": "bench.matching_latency is not available"}
    url = infra.database("matching_latency")
    result: dict[str, Any] = matching_latency.run(list(plan.matching_sizes), url, plan.matching_decisions)
    return result


# --- the run ------------------------------------------------------------------------------


def _run_uvloop(coro: Any) -> Any:
    import uvloop

    return uvloop.run(coro)


def git_commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True, check=False).stdout.strip()
    return out.stdout.strip() + ("+changes" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="shorter runs (~3 minutes): rougher figures")
    ap.add_argument("--profile", action="store_true",
                    help="after the measured runs, profile the services with py-spy (extra runs, not measured)")
    ap.add_argument("--stages", default="reference,pipeline,intake,matching,consumer",
                    help="comma-separated subset of reference,pipeline,intake,matching,consumer")
    ap.add_argument("--intake-workers", default="1,2", help="intake worker counts to measure, e.g. 1,2")
    ap.add_argument("--baseline", action="store_true",
                    help="write bench/results/baseline-<date>.json (the one kept in the repository)")
    ap.add_argument("--out", type=Path, help="where to write the JSON (default bench/results/bench-<time>.json)")
    args = ap.parse_args(argv)
    stages = {s.strip() for s in args.stages.split(",") if s.strip()}
    plan = QUICK if args.quick else FULL
    stamp = time.strftime("%Y%m%d-%H%M%S")
    workdir = ROOT / "var" / "bench" / stamp
    profile_dir = workdir / "profiles" if args.profile else None
    if args.profile and py_spy() is None:
        log("py-spy not found (uv sync --dev): profiles skipped")
        profile_dir = None

    def _term(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    started = time.monotonic()
    results: dict[str, Any] = {"mode": "quick" if args.quick else "full", "commit": git_commit()}
    directory = make_directory(DIRECTORY_SIZE)
    try:
        with Infra(workdir) as infra:
            results["machine"] = infra.describe()
            pg = results["machine"]["postgresql"]
            log(f"own PostgreSQL {pg['version'].split(' ')[0]} on port {pg['port']} (fsync={pg['fsync']}, "
                f"synchronous_commit={pg['synchronous_commit']}, as in compose); own redis-server on port "
                f"{results['machine']['redis']['port']} (appendonly, everysec, as in compose)")
            if "reference" in stages:
                results["reference"] = _stage("reference", lambda: _run_uvloop(reference(infra, plan, directory)))
                infra.flush_redis()
            if "pipeline" in stages:
                results["pipeline"] = _stage("pipeline", lambda: run_pipeline(infra, plan, directory, workdir,
                                                                              profile_dir))
                infra.flush_redis()
            if "intake" in stages:
                results["intake"] = {}
                for w in [int(x) for x in args.intake_workers.split(",") if x.strip()]:
                    results["intake"][f"workers_{w}"] = _stage(
                        f"intake ({w} worker{'s' if w > 1 else ''})",
                        lambda w=w: run_intake(infra, plan, workdir, profile_dir, w))
                    infra.flush_redis()
            if "matching" in stages:
                results["matching"] = _stage("matching", lambda: run_matching(infra, plan))
            if "consumer" in stages:
                results["consumer"] = _stage("consumer", lambda: consumer.run(
                    infra.redis_url, consumer.QUICK if args.quick else consumer.Plan()))
                infra.flush_redis()
            results["machine"]["load_average_at_end"] = [round(x, 2) for x in __import__("os").getloadavg()]
    except KeyboardInterrupt:
        log("interrupted: servers stopped")
        return 130
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    results["table"] = rows(results)
    results["targets"] = targets(results)
    print_table(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.out:
        out = args.out
    elif args.baseline:
        for old in RESULTS.glob("baseline-*.json"):
            old.unlink()  # one baseline in the repository: the newest
        out = RESULTS / f"baseline-{time.strftime('%Y-%m-%d')}.json"
    else:
        out = RESULTS / f"bench-{stamp}.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    log(f"results written to {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}; "
        f"service logs under {workdir.relative_to(ROOT)}")
    return 0


def _stage(name: str, fn: Any) -> dict[str, Any]:
    log(f"--- {name} ---")
    t0, cpu0 = time.monotonic(), machine_cpu()
    try:
        out: dict[str, Any] = fn()
    except KeyboardInterrupt:
        raise
    except Exception as e:  # one stage failing must not lose the others' figures
        traceback.print_exc()
        out = {"error": f"{type(e).__name__}: {e}"}
    out["stage_seconds"] = round(time.monotonic() - t0, 1)
    # Everyone's use of the machine during the stage: other people's tests show here.
    out["machine_cpu"] = machine_load(cpu0, machine_cpu())
    return out


if __name__ == "__main__":
    sys.exit(main())
