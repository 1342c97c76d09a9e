"""The bench's workload: every generated referral must have an eligible service (else it
never reaches a delivery, the end point the pipeline bench times), and the helpers that
turn samples into figures must be right."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.profile import summarise
from bench.stats import latency_summary, percentile
from bench.workload import envelopes, make_directory, service_rows
from matching.domain.decision import ServiceView, rank
from matching.service_layer.deciding import facts_of
from shared.events import ReferralSubmitted
from shared.streams.topology import SUBMITTED, SUBMITTED_URGENT, stream_for


def _views(directory):  # type: ignore[no-untyped-def]
    return [
        ServiceView(
            id=s.id, name=s.name, organization_name=s.organization_name, resource_kind=s.resource_kind,
            active=s.active, online=s.online, pmks=frozenset(s.pmks), support_types=frozenset(s.support_types),
            areas=s.areas, languages=frozenset(s.languages), policies=frozenset(s.policies),
            minimum_age=s.minimum_age, maximum_age=s.maximum_age, seats_available=s.seats_available,
            seats_max=s.seats_max,
        )
        for s in directory.services
    ]


def test_every_referral_has_an_eligible_service() -> None:
    directory = make_directory(600, seed=3)
    views = _views(directory)
    lanes = set()
    for env in envelopes(directory, 150, seed=4):
        data = ReferralSubmitted.model_validate(env.data)
        ranking = rank(facts_of(data), views)
        assert ranking.chosen, f"no eligible service for {data.model_dump()}"
        lanes.add(stream_for(env))
    assert lanes == {SUBMITTED, SUBMITTED_URGENT}  # both lanes are exercised


def test_workload_is_reproducible_and_carries_no_personal_data() -> None:
    a = [e.data for e in envelopes(make_directory(100, seed=1), 20, seed=2)]
    b = [e.data for e in envelopes(make_directory(100, seed=1), 20, seed=2)]
    strip = [{k: v for k, v in d.items() if k != "referral_id"} for d in a]
    assert strip == [{k: v for k, v in d.items() if k != "referral_id"} for d in b]
    assert not {"name", "phone", "initials", "narrative", "contact", "age"} & set(a[0])


def test_service_rows_fill_every_directory_table() -> None:
    rows = service_rows(make_directory(50, seed=1))
    assert len(rows["service"]) == 50
    assert {r["service_id"] for r in rows["service_category"]} == {r["id"] for r in rows["service"]}
    assert all(r["seats_declared"] == r["seats_available"] for r in rows["service"])


def test_percentile_is_nearest_rank() -> None:
    values = [float(x) for x in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(list(reversed(values)), 100) == 100
    assert percentile([], 50) is None
    assert latency_summary([0.001, 0.002]) == {"count": 2, "p50_ms": 1.0, "p99_ms": 2.0, "max_ms": 2.0}


def test_profile_summary_counts_inclusive_and_own_time(tmp_path: Path) -> None:
    path = tmp_path / "p.collapsed"
    path.write_text(
        "main (intake/bootstrap.py:1);handle (intake/svc.py:10);query (sqlalchemy/orm/session.py:5) 30\n"
        "main (intake/bootstrap.py:1);handle (intake/svc.py:10);rank (matching/decision.py:7) 10\n"
        "main (intake/bootstrap.py:1);idle (asyncio/base_events.py:2) 10\n"
    )
    s = summarise(path, duration=1.0)
    assert s["samples"] == 50
    assert s["busy_pct"] == 50.0
    assert "main (intake/bootstrap.py)" not in s["project_inclusive_pct"]  # in every stack: says nothing
    assert s["project_inclusive_pct"]["handle (intake/svc.py)"] == pytest.approx(80.0)
    assert s["project_inclusive_pct"]["rank (matching/decision.py)"] == pytest.approx(20.0)
    assert s["own_pct"]["query (sqlalchemy/orm/session.py)"] == pytest.approx(60.0)
    assert s["own_by_package_pct"] == {"sqlalchemy": 60.0, "rujukan": 20.0, "python": 20.0}


def test_cpu_of_children_counts_those_that_exited() -> None:
    import os
    import subprocess
    import sys

    from bench.stats import cpu_seconds

    before = cpu_seconds(os.getpid(), with_children=True)
    # A child that works, exits and is reaped (as a closed connection's backend is).
    subprocess.run([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"], check=True)
    assert cpu_seconds(os.getpid(), with_children=True) - before > 0.05
    assert cpu_seconds(os.getpid()) <= cpu_seconds(os.getpid(), with_children=True)
