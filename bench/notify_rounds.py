"""Notify's delivery worker alone: CPU of notify's process per delivery, a delivery round
of this tree against the one of an earlier commit (``--before``, default the commit before
rounds were batched), measured in the same run, alternating, on PostgreSQL (own durable
cluster) with an SMTP sink in its own process.

Each sample queues N routine proposals (one recipient each, outside the measurement), then
drains them with `deliver_due` until nothing is due; CPU is the driver's process time (the
sink and PostgreSQL run in their own processes; PostgreSQL's CPU is not counted). The
outbox relay is left out of both (a no-op kick): the earlier worker kicked it per mail,
this one per chunk, so the relay's share only widens the gap.

    uv run python -m bench.notify_rounds [--deliveries 300] [--samples 3] [--before REV]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

from bench.smtp_sink import SmtpSink
from notify.adapters.mailer import Mailer
from notify.bootstrap import MIGRATIONS
from notify.service_layer import deliveries as after
from shared.db import make_engine, sessions, upgrade
from shared.events import Envelope, Recipient, ReferralMatched, new_id, utcnow
from shared.streams.consumer import Message

ROOT = Path(__file__).resolve().parent.parent
SERVICES = "services/notify/notify/service_layer/services.py"


def before_module(rev: str) -> types.ModuleType:
    """The delivery worker as it was at ``rev`` (same ORM and adapters as this tree)."""
    source = subprocess.run(["git", "show", f"{rev}:{SERVICES}"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp(prefix="notify-before-")) / "notify_services_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module.__name__] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class _Relay:
    def kick(self) -> None:
        pass


def _matched(i: int) -> Message:
    e = ReferralMatched(
        referral_id=new_id(), decision_id=new_id(), service_id="svc-bench", service_name="Layanan",
        organization_name="Yayasan", resource_kind="peer_support", pmks_category="korban_tindak_kekerasan",
        region_code="12.71", urgency="routine", reasons_id=["cocok"], reasons_en=["fits"],
        hold_expires_at=utcnow(), recipients=[Recipient(receiver_id=f"bench-rcv-{i}", contact_id=f"ct-{i}",
                                                        email=f"ct-{i}@example.org")])
    env = Envelope.wrap(e, source="rujukan/matching", subject=e.referral_id)
    return Message(stream="bench", entry_id=f"{i}-0", envelope=env, data=e)


async def _sample(module: types.ModuleType, options: dict[str, Any], database_url: str, smtp_url: str,
                  n: int) -> tuple[float, float]:
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
    variants: dict[str, tuple[types.ModuleType, dict[str, Any]]] = {
        "before": (before_module(rev), {}), "after": (after, {}), "after_record_every_1": (after, {"record_every": 1})}
    figures: dict[str, list[tuple[float, float]]] = {k: [] for k in variants}
    for i in range(samples):
        for name, (module, options) in variants.items():
            url = pg.create_database(f"notify_{name}_{i}")
            await upgrade(url, MIGRATIONS)
            figures[name].append(await _sample(module, options, url, smtp_url, n))
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
    args = ap.parse_args()
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
