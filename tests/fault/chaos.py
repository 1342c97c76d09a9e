"""The fault-injection harness: the whole stack as real processes (three services started
from compose.yaml by devtools.devstack, its own redis-server, its own durable PostgreSQL
cluster, an SMTP catcher), a load of referrals over HTTP, faults at random moments
(SIGKILL of each service, Redis crashes with and without losing its unsynced tail,
PostgreSQL crashes), poison entries injected on purpose, and the checks of rule 1 of the
brief: nothing accepted is lost, and every effect happens once.

`appendfsync everysec` loses nothing when only the redis-server process dies (its writes
are in the kernel's page cache); it loses up to about a second when the machine loses
power. The harness simulates the latter by cutting the tail off the append-only file after
the crash: the restarted Redis then misses entries the relays saw XADD return for.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from devtools.devstack import APP_SERVICES, Stack
from devtools.mailcatcher import MailCatcher
from devtools.redis_server import RedisProcess, free_port
from shared.events import Envelope
from shared.streams.topology import DECISIONS, SUBMITTED, dead_letter_stream, stats_key
from tests.apps import DEMO_KEY, OPERATOR_KEYS, TEST_KEYS
from tests.servers import PostgresProcess

AGENCY = {"Authorization": f"Bearer {DEMO_KEY}"}
# A seat count no load here reaches, for the services most referrals go to; the others
# keep the demo's few seats, so that some referrals compete for the last seat.
PLENTY = 1_000_000
ROOMY_SERVICES = ("svc-ppa-polrestabes-medan",)


@dataclass
class Tally:
    submitted: int = 0
    retries: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    poison: dict[str, list[str]] = field(default_factory=dict)  # group -> original entry ids
    referrals: dict[str, str] = field(default_factory=dict)  # external_ref -> referral id
    timeline: list[tuple[float, str, int]] = field(default_factory=list)  # (s, fault, accepted so far)
    aof_bytes_lost: int = 0


def referral(ref: str, rng: random.Random) -> dict[str, Any]:
    """A referral body: mostly cases for Medan's PPA unit, some crises (urgent lane), some
    for the online peer group with three seats (the last seats are fought over)."""
    kind = rng.random()
    body: dict[str, Any] = {
        "external_ref": ref, "pmks_category": "korban_tindak_kekerasan", "needs": ["informational"],
        "urgency": rng.choice(["routine", "priority"]), "risk_flags": [],
        "client": {"initials": "XX", "age": rng.randint(18, 60), "gender": "female",
                   "region_code": rng.choice(["12.71", "12.71.05", "12.71.01"]), "languages": ["id"],
                   "modality": "any", "contact": {"name": "Nama Samaran", "phone": "+62 811 0000 0000"},
                   "consent": {"share_with_provider": True, "contact_by_provider": rng.random() < 0.5}},
        "narrative": "Kronologi singkat.",
    }
    if kind < 0.15:
        body["urgency"], body["risk_flags"] = "crisis", ["ongoing_violence"]
    elif kind < 0.30:
        body["pmks_category"] = "perempuan_rawan_sosial_ekonomi"
        body["needs"] = ["emotional", "network"]
        body["client"]["modality"] = "online"
    return body


class ChaosStack:
    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        self.rng = random.Random(seed)
        self.redis = RedisProcess(free_port(), root / "redis", appendfsync="everysec")
        self.pg = PostgresProcess(durable=True)
        self.mail = MailCatcher()
        self.stack: Stack | None = None
        self.urls: dict[str, str] = {}
        self.engines: dict[str, AsyncEngine] = {}
        # (AOF file name, size) after each poison injection: a simulated power cut never
        # takes those (the point is to check that each one is dead-lettered exactly once).
        self.protected: dict[str, int] = {}
        self.tally = Tally()
        # Faults and poison injections take turns (a power cut must not take poison with it).
        self.lock = asyncio.Lock()

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        self.redis.start()
        self.pg.start()
        self.mail.start()
        env: dict[str, str] = {
            "PATH": os.environ["PATH"], "REDIS_URL": self.redis.url, "SMTP_URL": self.mail.url,
            "DEMO_API_KEY": DEMO_KEY, "OPERATOR_KEYS": OPERATOR_KEYS, "ENCRYPTION_KEYS": TEST_KEYS,
            "RUJUKAN_ENV": "development",
            "SEED_DEMO": "true", "LOG_LEVEL": "INFO", "OUTBOX_POLL_INTERVAL_S": "0.5",
            "MAIL_POLL_INTERVAL_S": "0.5", "RECLAIM_IDLE_MS": "3000", "STREAM_TRIM_INTERVAL_S": "2",
        }
        for name in APP_SERVICES:
            env[f"RUJUKAN_{name.upper()}_PORT"] = str(free_port())
            self.urls[name] = self.pg.create_database(f"{name}_{uuid.uuid4().hex[:6]}")
            env[f"{name.upper()}_DATABASE_URL"] = self.urls[name]
            self.engines[name] = create_async_engine(self.urls[name], pool_pre_ping=True)
        self.stack = Stack(self.root / "var", env=env, log_dir=self.root / "logs")
        self.stack.start()
        self.stack.wait_healthy(timeout=120)

    async def close(self) -> None:
        for e in self.engines.values():
            await e.dispose()
        if self.stack is not None:
            self.stack.stop()
        self.mail.stop()
        self.redis.stop()
        self.pg.cleanup()

    def base(self, name: str) -> str:
        assert self.stack is not None
        return f"http://127.0.0.1:{self.stack.port(name)}"

    async def sql(self, service: str, query: str, **params: Any) -> list[Any]:
        """Query a service's database, riding out a PostgreSQL restart."""
        for attempt in range(60):
            try:
                async with self.engines[service].connect() as conn:
                    return list((await conn.execute(text(query), params)).all())
            except Exception:
                if attempt == 59:
                    raise
                await asyncio.sleep(1)
        raise AssertionError("unreachable")

    async def roomy_directory(self) -> dict[str, int]:
        """Give the busiest service plenty of seats; returns every service's seats now."""
        for _ in range(120):
            rows = await self.sql("matching", "SELECT id FROM service")
            if rows:
                break
            await asyncio.sleep(0.5)
        async with self.engines["matching"].begin() as conn:
            for svc in ROOMY_SERVICES:
                await conn.execute(text("UPDATE service SET seats_available = :n, seats_max = :n WHERE id = :i"),
                                   {"n": PLENTY, "i": svc})
        return {r.id: r.seats_available for r in await self.sql("matching", "SELECT id, seats_available FROM service")}

    # -- load --------------------------------------------------------------------------------

    async def submit_all(self, n: int, rate: float, concurrency: int = 8) -> None:
        """POST n referrals, paced at `rate` a second (so that the faults fall during the
        load); each is retried (same external_ref: idempotent) until a 2xx answer, so every
        one counted was accepted and its id is known."""
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            queue.put_nowait(i)
        run = uuid.uuid4().hex[:6]
        start = time.monotonic()

        async def worker() -> None:
            async with httpx.AsyncClient(base_url=self.base("intake"), headers=AGENCY, timeout=15) as client:
                while True:
                    try:
                        i = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    ref = f"fault-{run}-{i}"
                    await asyncio.sleep(max(start + i / rate - time.monotonic(), 0))
                    body = referral(ref, self.rng)
                    while True:
                        try:
                            r = await client.post("/v1/referrals", json=body)
                            if r.status_code in (200, 202):
                                self.tally.referrals[ref] = r.json()["id"]
                                break
                            assert r.status_code >= 500, r.text  # a 4xx would be our bug
                        except httpx.TransportError:
                            pass
                        self.tally.retries += 1
                        await asyncio.sleep(0.2)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        self.tally.submitted = len(self.tally.referrals)

    # -- poison ------------------------------------------------------------------------------

    async def inject_poison(self) -> None:
        """Malformed JSON, an unknown event version and schema-invalid data, on the stream
        matching reads and on the one notify and intake both read."""
        async with self.lock:
            await self._inject_poison()

    async def _inject_poison(self) -> None:
        client = aioredis.Redis.from_url(self.redis.url, decode_responses=True)
        try:
            for stream, etype, groups in ((SUBMITTED, "referral.submitted", ["matching"]),
                                          (DECISIONS, "referral.matched", ["notify", "intake"])):
                rid = uuid.uuid4().hex[:26]
                valid_shape = {"specversion": "1.0", "id": uuid.uuid4().hex[:26], "source": "chaos",
                               "subject": rid, "time": "2026-01-01T00:00:00Z", "data": {"referral_id": rid}}
                entries = [
                    {"type": f"{etype}.v1", "event": '{"id": "poison", "type": '},
                    {"type": f"{etype}.v9", "event": json.dumps({**valid_shape, "type": f"{etype}.v9"})},
                    {"type": f"{etype}.v1", "event": json.dumps({**valid_shape, "type": f"{etype}.v1"})},
                ]
                for fields in entries:
                    entry_id = await client.xadd(stream, fields)  # type: ignore[arg-type]
                    for g in groups:
                        self.tally.poison.setdefault(g, []).append(str(entry_id))
        finally:
            await client.aclose()
        name, size = self._aof_tail()
        self.protected[name] = max(self.protected.get(name, 0), size)

    # -- faults ------------------------------------------------------------------------------

    def kill_service(self, name: str) -> None:
        assert self.stack is not None
        proc = self.stack.procs[name]
        proc.kill()
        proc.wait()
        self.tally.faults[f"kill -9 {name}"] += 1

    def start_service(self, name: str) -> None:
        assert self.stack is not None
        self.stack._spawn(name)

    def crash_redis(self, power_loss: bool) -> int:
        """SIGKILL redis-server; with `power_loss`, also cut off the end of its append-only
        file (what everysec leaves after a power cut: the writes of the last second).
        Returns the bytes lost."""
        self.redis.kill()
        lost = 0
        if power_loss:
            name, size = self._aof_tail()
            keep = max(self.protected.get(name, 0), size - self.rng.randint(4_000, 64_000))
            lost = size - keep
            self.tally.aof_bytes_lost += lost
            with open(name, "r+b") as f:
                f.truncate(keep)
            self.tally.faults["redis power loss (everysec)"] += 1
        else:
            self.tally.faults[f"kill -9 redis (appendfsync {self.redis.appendfsync})"] += 1
        return lost

    def start_redis(self, appendfsync: str) -> None:
        self.redis.appendfsync = appendfsync
        self.redis.start(timeout=30)

    def crash_postgres(self) -> None:
        self.pg.kill()
        self.tally.faults["kill -9 postgres"] += 1

    def start_postgres(self) -> None:
        self.pg.start(timeout=60)

    def _aof_tail(self) -> tuple[str, int]:
        """The append-only file written to now (Redis 7: the last incremental file of the
        manifest; 6.2: the one file) and its size."""
        path = aof_tail(self.redis.data_dir)
        return str(path), path.stat().st_size

    async def chaos(self, load: asyncio.Task[None], min_faults: int, pause: tuple[float, float]) -> None:
        """Faults one after another at random moments while the load runs (and until every
        kind has happened at least once): each service killed, Redis crashed with a power
        loss under everysec then restarted with always, PostgreSQL crashed; the rest random."""
        must: list[str] = ["intake", "matching", "notify", "postgres"]
        self.rng.shuffle(must)
        # Redis runs with everysec (and loses its tail on a power cut) until it is restarted
        # with always, whose crash loses nothing acknowledged; in that order, at random
        # places among the others. Further Redis crashes alternate between the two.
        for i, fault in enumerate(["redis-power-loss", "redis-switch-to-always", "redis"]):
            lo = must.index(["redis-power-loss", "redis-switch-to-always"][i - 1]) + 1 if i else 0
            must.insert(self.rng.randint(lo, len(must)), fault)
        plan = must + [self.rng.choice(["intake", "matching", "notify", "redis", "postgres"])
                       for _ in range(max(min_faults - len(must), 0))]
        mode = "everysec"
        t0 = time.monotonic()
        for i, fault in enumerate(plan):
            if load.done() and i >= len(must):
                break
            await asyncio.sleep(self.rng.uniform(*pause))
            async with self.lock:
                self.tally.timeline.append((round(time.monotonic() - t0, 1), fault, len(self.tally.referrals)))
                mode = await self._fault(fault, mode)
        # Whatever the load was doing, let it finish on a healthy stack.
        await load

    async def _fault(self, fault: str, mode: str) -> str:
        down = self.rng.uniform(0.2, 1.5)
        if fault in APP_SERVICES:
            self.kill_service(fault)
            await asyncio.sleep(down)
            self.start_service(fault)
        elif fault.startswith("redis"):
            self.crash_redis(power_loss=mode == "everysec")
            if fault == "redis-switch-to-always":
                mode = "always"
            elif fault == "redis":  # later crashes alternate: a long soak sees both, many times
                mode = "everysec" if mode == "always" else "always"
            await asyncio.sleep(down)
            self.start_redis(mode)
        else:
            self.crash_postgres()
            await asyncio.sleep(down)
            self.start_postgres()
        return mode

    # -- convergence and checks --------------------------------------------------------------

    async def settled(self) -> dict[str, int]:
        rid_list = list(self.tally.referrals.values())
        undecided = (await self.sql("intake", "SELECT count(*) FROM referral WHERE status = 'submitted'"))[0][0]
        proposed = (await self.sql("matching", "SELECT count(*) FROM decision WHERE outcome = 'proposed'"))[0][0]
        sent = (await self.sql("notify", "SELECT count(*) FROM delivery WHERE state = 'sent'"))[0][0]
        deliveries = (await self.sql("notify", "SELECT count(*) FROM delivery"))[0][0]
        notified = (await self.sql("intake", "SELECT count(*) FROM timeline_entry WHERE kind = 'notified'"))[0][0]
        client = aioredis.Redis.from_url(self.redis.url)
        try:
            letters = {g: int(await client.xlen(dead_letter_stream(g))) for g in ("matching", "notify", "intake")}
        finally:
            await client.aclose()
        return {"referrals": len(rid_list), "undecided": undecided, "proposed": proposed, "deliveries": deliveries,
                "sent": sent, "notified": notified, **{f"dl_{g}": n for g, n in letters.items()}}

    async def wait_settled(self, timeout: float) -> dict[str, int]:
        """Liveness bound: the stack must get to a state where everything accepted was decided
        and mailed (fails the test otherwise, with where it got stuck)."""
        expected_dl = {g: len(ids) for g, ids in self.tally.poison.items()}
        deadline = time.monotonic() + timeout
        state: dict[str, int] = {}
        while time.monotonic() < deadline:
            state = await self.settled()
            if (state["undecided"] == 0 and state["deliveries"] == state["proposed"] == state["sent"]
                    == state["notified"] and all(state[f"dl_{g}"] >= n for g, n in expected_dl.items())):
                return state
            await asyncio.sleep(1)
        raise AssertionError(f"the stack did not settle: {state}")

    async def counters(self) -> dict[str, int]:
        client = aioredis.Redis.from_url(self.redis.url, decode_responses=True)
        out: Counter[str] = Counter()
        try:
            for g in ("matching", "notify", "intake"):
                for k, v in (await client.hgetall(stats_key(g))).items():
                    out[str(k)] += int(v)
        finally:
            await client.aclose()
        return dict(out)

    def log_counts(self) -> dict[str, int]:
        """What the services said they did, from their logs (which survive their kills)."""
        out: Counter[str] = Counter()
        for log in (self.root / "logs").glob("*.log"):
            for line in log.read_text(errors="replace").splitlines():
                if m := re.search(r"reclaimed (\d+) entries", line):
                    out["reclaimed"] += int(m.group(1))
                elif m := re.search(r"publishing again (\d+) events", line):
                    out["outbox_republished"] += int(m.group(1))
                    out["outbox_recoveries"] += 1
                elif m := re.search(r"handed back (\d+) entries", line):
                    out["handed_back"] += int(m.group(1))
                elif "missing on Redis; provisioning" in line:
                    out["groups_reprovisioned"] += 1
        return dict(out)


def event_of(fields: dict[bytes, bytes]) -> Envelope:
    return Envelope.model_validate_json(fields[b"event"])


def aof_tail(data_dir: Path) -> Path:
    d = data_dir / "appendonlydir"
    if not d.is_dir():
        return data_dir / "appendonly.aof"
    manifest = next(d.glob("*.manifest")).read_text()
    incr = [m.group(1) for m in re.finditer(r"file (\S+) seq \d+ type i", manifest)]
    return d / incr[-1]

