"""Notify's delivery worker alone: CPU of notify's process per delivery, a delivery round
of this tree against the one of an earlier commit (``--before``, default the commit before
rounds were batched), measured in the same run, alternating, on PostgreSQL (own durable
cluster) with an SMTP sink in its own process.

Each sample queues N routine proposals (one recipient each, outside the measurement), then
drains them with `deliver_due` until nothing is due; CPU is the driver's process time (the
sink and PostgreSQL run in their own processes; PostgreSQL's CPU is not counted). The
outbox relay is left out of both (a no-op kick): the earlier worker kicked it per mail,
this one per chunk, so the relay's share only widens the gap.

The earlier worker runs in its own process on that commit's whole tree (``git archive``),
with its own schema: its code does not import against this tree's.

    uv run python -m bench.notify_rounds [--deliveries 300] [--samples 3] [--before REV]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The delivery worker's module, by its name at the time (renamed in a542e9a).
WORKER_PATHS = ("services/notify/notify/service_layer/deliveries.py",
                "services/notify/notify/service_layer/services.py")


def checkout(rev: str) -> Path:
    """The tree of ``rev`` in a temporary directory (the shared checkout is left alone)."""
    out = Path(tempfile.mkdtemp(prefix="notify-before-"))
    archive = subprocess.run(["git", "archive", "--format=tar", rev, "services", "shared"], cwd=ROOT,
                             check=True, capture_output=True).stdout
    tar = out / "tree.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(out, filter="data")
    return out


def worker_module(tree: Path) -> str:
    for path in WORKER_PATHS:
        if (tree / path).exists():
            return path.removeprefix("services/notify/").removesuffix(".py").replace("/", ".")
    raise FileNotFoundError(f"no delivery worker in {tree} (looked for {', '.join(WORKER_PATHS)})")


def sample_in(tree: Path, options: dict[str, Any], database_url: str, smtp_url: str, n: int) -> tuple[float, float]:
    """One sample in a child process importing ``tree``'s notify and shared packages."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), str(tree / "services" / "notify")])}
    args = {"module": worker_module(tree), "options": options, "database_url": database_url,
            "smtp_url": smtp_url, "n": n}
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--sample", json.dumps(args)],
                         env=env, cwd=tree, check=True, capture_output=True, text=True).stdout
    cpu, wall = json.loads(out.strip().splitlines()[-1])
    return cpu, wall


class _Relay:
    def kick(self) -> None:
        pass


def _matched(i: int) -> Any:
    from shared.events import Envelope, Recipient, ReferralMatched, new_id, utcnow

    try:
        from shared.streams.consumer import Message
    except ImportError:  # before shared/streams/ was a package
        from shared.streams import Message  # type: ignore[no-redef]
    e = ReferralMatched(
        referral_id=new_id(), decision_id=new_id(), service_id="svc-bench", service_name="Layanan",
        organization_name="Yayasan", resource_kind="peer_support", pmks_category="korban_tindak_kekerasan",
        region_code="12.71", urgency="routine", reasons_id=["cocok"], reasons_en=["fits"],
        hold_expires_at=utcnow(), recipients=[Recipient(receiver_id=f"bench-rcv-{i}", contact_id=f"ct-{i}",
                                                        email=f"ct-{i}@example.org")])
    env = Envelope.wrap(e, source="rujukan/matching", subject=e.referral_id)
    return Message(stream="bench", entry_id=f"{i}-0", envelope=env, data=e)


async def _sample(module_name: str, options: dict[str, Any], database_url: str, smtp_url: str,
                  n: int) -> tuple[float, float]:
    """Runs in the child process, against the tree on its PYTHONPATH."""
    import importlib

    from notify.adapters.mailer import Mailer
    from notify.bootstrap import MIGRATIONS
    from shared.db import make_engine, sessions, upgrade
    from shared.events import new_id

    module = importlib.import_module(module_name)
    await upgrade(database_url, MIGRATIONS)
    engine = make_engine(database_url)
    notify = module.Notify(sessions(engine), _Relay(), Mailer(smtp_url, "Rujukan <noreply@rujukan.example>"),
                           **options)
    try:
        for start in range(0, n, 50):
            await notify.handle([_matched(i) for i in range(start, min(start + 50, n))])
        await notify.mailer.send(message_id=new_id(), to="warm@example.org", subject="x", body="x", urgent=False)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        sent = 0
        while (k := await notify.deliver_due()):
            sent += k
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        assert sent == n, (sent, n)
        return cpu / n * 1e3, wall / n * 1e3
    finally:
        await notify.mailer.close()
        await engine.dispose()


async def _run(pg: Any, smtp_url: str, n: int, samples: int, rev: str) -> dict[str, Any]:
    # "after_record_every_1": this worker recording each mail in its own transaction, the
    # duplicate-on-crash window of the earlier one (one mail).
    variants: dict[str, tuple[Path, dict[str, Any]]] = {
        "before": (checkout(rev), {}), "after": (ROOT, {}), "after_record_every_1": (ROOT, {"record_every": 1})}
    figures: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    for i in range(samples):
        for name, (tree, options) in variants.items():
            url = pg.create_database(f"notify_{name}_{i}")
            figures[name].append(sample_in(tree, options, url, smtp_url, n))
    result: dict[str, Any] = {"deliveries_per_sample": n, "samples": samples, "before_rev": rev}
    for name, runs in figures.items():
        result[name] = {"cpu_ms_per_delivery": sorted(c for c, _ in runs)[len(runs) // 2],
                        "wall_ms_per_delivery": sorted(w for _, w in runs)[len(runs) // 2],
                        "runs": runs}
    for name in variants:
        result[name]["cpu_ratio_to_before"] = (result[name]["cpu_ms_per_delivery"]
                                               / result["before"]["cpu_ms_per_delivery"])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--deliveries", type=int, default=300)
    ap.add_argument("--samples", type=int, default=3)
    ap.add_argument("--before", default="47f032e^")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--sample", help=argparse.SUPPRESS)  # the child process of one sample
    args = ap.parse_args()
    if args.sample:
        a = json.loads(args.sample)
        print(json.dumps(asyncio.run(_sample(a["module"], a["options"], a["database_url"], a["smtp_url"], a["n"]))))
        return
    sys.path.insert(0, str(ROOT))
    from bench.smtp_sink import SmtpSink
    from tests.servers import PostgresProcess

    pg = PostgresProcess(durable=True).start()
    sink = SmtpSink().start()
    try:
        r = asyncio.run(_run(pg, sink.url, args.deliveries, args.samples, args.before))
    finally:
        sink.stop()
        pg.cleanup()
    print(f"notify delivery worker, PostgreSQL, {r['deliveries_per_sample']} deliveries x {r['samples']} samples"
          f" (median), before = {r['before_rev']}")
    for name in ("before", "after", "after_record_every_1"):
        print(f"  {name:21}  CPU {r[name]['cpu_ms_per_delivery']:.2f} ms/delivery"
              f"  wall {r[name]['wall_ms_per_delivery']:.2f} ms/delivery"
              f"  CPU ratio to before {r[name]['cpu_ratio_to_before']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
