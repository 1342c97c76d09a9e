"""Never more seats held than exist, with several matching processes at once: four OS
processes (tests.integration.matching_worker) decide, answer, cancel, expire holds and
retry the waitlist on one PostgreSQL database, racing on the same services' seats, the
same holds and the same cases. Afterwards every invariant holds."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select

from matching.adapters.orm import Decision, SeatHold
from tests.matching_kit import DIRECTORY, World

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 4
REFERRALS_EACH = 60

pytestmark = pytest.mark.slow


async def test_several_matching_processes_never_overbook(postgres_server: object, tmp_path: Path) -> None:
    url = postgres_server.create_database(f"conc_{uuid.uuid4().hex[:10]}")  # type: ignore[attr-defined]
    world = await World(url).start()  # migrated, with the directory: 7 seats for violence in Medan
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-m", "tests.integration.matching_worker", url, str(seed),
                               str(REFERRALS_EACH), str(go)], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
             for seed in range(PROCESSES)]
    try:
        go.touch()  # they all wait for this, then start at once
        results = []
        for p in procs:
            out, err = p.communicate(timeout=240)
            assert p.returncode == 0, err.decode()[-3000:]
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    try:
        # They really raced: referrals beyond the seats, holds taken and released many times.
        assert sum(r["handled"] for r in results) >= PROCESSES * REFERRALS_EACH
        async with world.sessions() as s:
            holds = await s.scalar(select(func.count()).select_from(SeatHold))
            released = await s.scalar(select(func.count()).select_from(SeatHold).where(SeatHold.state == "released"))
            decisions = await s.scalar(select(func.count()).select_from(Decision))
        seats = sum(r.seats_available for r in DIRECTORY)
        assert holds is not None
        assert released is not None
        assert decisions is not None
        assert holds > 2 * seats, (holds, released, results)
        assert released > seats, (holds, released, results)
        assert sum(r["expired"] for r in results) > 0, results
        await world.check_invariants()
    finally:
        await world.close()
