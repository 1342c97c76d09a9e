"""Rule 1 of the brief, proven under faults: every referral answered with 2xx reaches
exactly one decision and, when matched, exactly one email per recipient; no seat is
overbooked; the dead-letter streams hold exactly the poison injected and nothing else.

`make test` runs it with N=500 (`-m fault` selects it); `make soak` with SOAK_N=10000.
The counts are printed (run with -s to see them) and written to var/fault-report.json."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from shared.streams.dead_letters import dead_letters
from shared.streams.topology import stream_groups
from tests.fault.chaos import ChaosStack

N = int(os.environ.get("SOAK_N", "500"))
SEED = int(os.environ.get("FAULT_SEED", "20261124"))
ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.fault, pytest.mark.timeout(int(os.environ.get("FAULT_TIMEOUT", str(max(600, N // 5)))))]


async def test_nothing_accepted_is_lost_and_every_effect_happens_once(tmp_path: Path) -> None:
    started = time.monotonic()
    cs = ChaosStack(tmp_path, SEED)
    try:
        await asyncio.to_thread(cs.start)
        seats_before = await cs.roomy_directory()
        t_load = time.monotonic()
        faults, pause = max(7, N // 60), (1.5, 3.5)
        # Paced so that the load lasts about as long as the faults: each fault lands on it.
        rate = N / (faults * (sum(pause) / 2 + 1.5))
        load = asyncio.create_task(cs.submit_all(N, rate))

        async def poison_while_loading() -> None:
            for share in (0.3, 0.7):
                while len(cs.tally.referrals) < N * share and not load.done():
                    await asyncio.sleep(0.2)
                await cs.inject_poison()

        poison = asyncio.create_task(poison_while_loading())
        await cs.chaos(load, min_faults=faults, pause=pause)
        await poison
        load_s = time.monotonic() - t_load
        assert cs.stack is not None
        await asyncio.to_thread(cs.stack.wait_healthy, 120)
        state = await cs.wait_settled(timeout=max(240, N / 10))
        settle_s = time.monotonic() - t_load - load_s
        report = await check(cs, seats_before)
    finally:
        await cs.close()
    report.update(n=N, seed=SEED, load_s=round(load_s, 1), settle_s=round(settle_s, 1),
                  total_s=round(time.monotonic() - started, 1), settled_state=state)
    out = ROOT / "var" / "fault-report.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print("\nfault suite:", json.dumps(report, indent=2))
    assert report["lost"] == 0


async def check(cs: ChaosStack, seats_before: dict[str, int]) -> dict[str, Any]:
    accepted = cs.tally.referrals
    rids = set(accepted.values())
    assert len(rids) == len(accepted) == cs.tally.submitted  # one referral per external_ref

    # -- exactly one decision, and intake knows it --------------------------------------------
    decisions: dict[str, list[Any]] = {}
    for r in await cs.sql("matching", "SELECT id, referral_id, outcome FROM decision"):
        decisions.setdefault(r.referral_id, []).append(r)
    undecided = rids - set(decisions)
    assert not undecided, f"{len(undecided)} accepted referrals never decided"
    twice = {rid: d for rid, d in decisions.items() if len(d) > 1}
    assert not twice, f"decided more than once: {list(twice.items())[:3]}"
    assert set(decisions) == rids  # and no decision for anything not submitted
    statuses = {r.id: r.status for r in await cs.sql("intake", "SELECT id, status FROM referral")}
    outcome = {rid: d[0].outcome for rid, d in decisions.items()}
    assert {rid: statuses[rid] for rid in rids} == outcome, "intake's status differs from the decision"
    steps = Counter(r.referral_id for r in await cs.sql(
        "intake", "SELECT referral_id FROM timeline_entry WHERE kind IN ('proposed', 'waitlisted', 'unmatched')"))
    assert all(steps[rid] == 1 for rid in rids), "a decision recorded twice (or never) on a timeline"

    # -- one delivery and one email per recipient --------------------------------------------
    proposed = {d[0].id for d in decisions.values() if d[0].outcome == "proposed"}
    deliveries = await cs.sql("notify", "SELECT id, decision_id, receiver_id, state FROM delivery")
    assert {d.decision_id for d in deliveries} == proposed, "a matched referral without delivery (or the reverse)"
    assert len({(d.decision_id, d.receiver_id) for d in deliveries}) == len(deliveries)
    assert all(d.state == "sent" for d in deliveries)
    mails = Counter(m["Message-ID"] for m in cs.mail.messages())
    expected_ids = {f"<{d.id}@rujukan>" for d in deliveries}
    assert set(mails) == expected_ids, "an email missing, or one that no delivery asked for"
    duplicate_mails = sum(n - 1 for n in mails.values())
    # SMTP has no transaction: a notify killed between the server's OK and its commit sends
    # that one mail again (same Message-ID, so the receiving side can tell). At most one
    # mail is in that window per kill.
    assert duplicate_mails <= cs.tally.faults["kill -9 notify"] + cs.tally.faults["kill -9 postgres"]
    notified = Counter(r.event_id for r in await cs.sql(
        "intake", "SELECT event_id FROM timeline_entry WHERE kind = 'notified'"))
    assert len(notified) == len(deliveries)
    assert all(n == 1 for n in notified.values())

    # -- no seat overbooked ------------------------------------------------------------------
    seats_after = {r.id: r.seats_available for r in await cs.sql("matching", "SELECT id, seats_available FROM service")}
    holds = Counter(r.service_id for r in await cs.sql(
        "matching", "SELECT service_id FROM seat_hold WHERE state <> 'released'"))
    for svc, before in seats_before.items():
        assert seats_after[svc] >= 0, f"{svc} overbooked"
        assert seats_after[svc] == before - holds[svc], f"{svc}: seats and holds disagree"
    live_per_referral = Counter(r.referral_id for r in await cs.sql(
        "matching", "SELECT referral_id FROM seat_hold WHERE state <> 'released'"))
    assert all(n == 1 for n in live_per_referral.values())

    # -- the dead letters are the poison, all of it, once ---------------------------------------
    client = aioredis.Redis.from_url(cs.redis.url, decode_responses=True)
    try:
        letters = {g: await dead_letters(client, g, 10_000) for g in ("matching", "notify", "intake")}
        pending = 0
        for stream, groups in stream_groups().items():
            for g in groups:
                with contextlib.suppress(Exception):
                    pending += int((await client.xpending(stream, g))["pending"])
    finally:
        await client.aclose()
    for g in ("matching", "notify", "intake"):
        got = sorted(d["entry_id"] for d in letters[g])
        assert got == sorted(cs.tally.poison.get(g, [])), \
            f"dead letters of {g}: {[(d['entry_id'], d.get('type'), d.get('error')) for d in letters[g]]}"
        assert all(d["error"] for d in letters[g])
    # -- outbox: everything published ----------------------------------------------------------
    for svc in ("intake", "matching", "notify"):
        unpublished = (await cs.sql(svc, "SELECT count(*) FROM outbox WHERE published_at IS NULL"))[0][0]
        assert unpublished == 0, f"{svc} has unpublished outbox rows"

    counters = await cs.counters()
    processed = 0
    for svc in ("intake", "matching", "notify"):
        processed += (await cs.sql(svc, "SELECT count(*) FROM processed_event"))[0][0]
    logs = cs.log_counts()
    outcomes = Counter(outcome.values())
    lost = len(undecided) + len(proposed - {d.decision_id for d in deliveries}) + len(expected_ids - set(mails))
    return {
        "submitted": len(rids), "http_retries": cs.tally.retries, "decided": len(decisions),
        "outcomes": dict(outcomes), "emails_distinct": len(mails), "emails_duplicate": duplicate_mails,
        "deliveries_acknowledged": counters.get("handled", 0), "events_with_effect": processed,
        "duplicates_suppressed": counters.get("handled", 0) - processed,
        "reclaimed": logs.get("reclaimed", 0), "handed_back": logs.get("handed_back", 0),
        "outbox_recoveries": logs.get("outbox_recoveries", 0),
        "outbox_republished": logs.get("outbox_republished", 0),
        "groups_reprovisioned": logs.get("groups_reprovisioned", 0),
        "dead_lettered": sum(len(v) for v in letters.values()),
        "poison_injected": sum(len(v) for v in cs.tally.poison.values()),
        "pending_at_end": pending, "faults": dict(cs.tally.faults), "aof_bytes_lost": cs.tally.aof_bytes_lost,
        "fault_timeline": [f"{t}s {f} ({n} accepted)" for t, f, n in cs.tally.timeline], "lost": lost,
    }
