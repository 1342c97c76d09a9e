"""/metrics on the three services: open without a credential, counts only (no id, nothing
personal), route templates rather than paths, the streams' figures and the domain's counts
read at scrape time; every metric the dashboard and the alert rules use is exported."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import bindparam, text

from shared.db import UTCDateTime
from shared.events import utcnow
from shared.streams.topology import SUBMITTED
from tests.apps import eventually
from tests.integration.test_http_boundary import AGENCY, client, make, sqlite, started
from tests.integration.test_intake import body as referral

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboards/rujukan.json"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
PROMETHEUS = ROOT / "deploy/prometheus/prometheus.yml"
OURS = re.compile(r"\brujukan_[a-z_]+\b")


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        out.setdefault(family.name, [])  # a family with no row yet (no delivery so far) is still exported
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for ls, v in found.get(name, []) if all(ls.get(k) == w for k, w in labels.items()))


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert exprs
    assert all(p["datasource"]["uid"] == "prometheus" for p in dash["panels"])
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["alert"], rule
        assert rule["expr"], rule
        assert rule["labels"]["severity"] in {"page", "warn"}, rule
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule
    return rules


async def test_metrics_are_open_count_only_and_cover_the_dashboard_and_the_alerts(
    tmp_path: Path, redis_url: str, redis: Any
) -> None:
    apps = [make(name, sqlite(tmp_path, name), redis_url) for name in ("intake", "matching", "notify")]
    async with started(*apps) as asgis:
        intake, matching, notify = (client(a) for a in asgis)
        async with intake, matching, notify:
            r = await intake.post("/v1/referrals", json=referral("PPA-MET-1"), headers=AGENCY)
            assert r.status_code in (200, 201, 202), r.text
            rid = r.json()["id"]
            assert (await intake.get(f"/v1/referrals/{rid}", headers=AGENCY)).status_code == 200
            await intake.get("/v1/referrals/nope", headers=AGENCY)
            await redis.xadd(SUBMITTED, {"type": "referral.submitted", "event": "{\"id\": "})  # a poison entry

            async def scrape(c: httpx.AsyncClient) -> tuple[str, dict[str, list[tuple[dict[str, str], float]]]]:
                r = await c.get("/metrics")  # no credential: Prometheus scrapes without one
                assert r.status_code == 200, r.text
                assert r.headers["content-type"].startswith("text/plain")
                return r.text, samples(r.text)

            async def decided() -> Any:
                _, m = await scrape(matching)
                _, n = await scrape(notify)
                ok = value(m, "rujukan_decisions") >= 1 and value(m, "rujukan_dead_letters", group="matching") == 1
                return (m, n) if ok else None

            m, n = await eventually(decided, timeout=30)
            text_i, i = await scrape(intake)
            # A crisis still undecided after a minute (made so in its row): counted, and only then.
            ninety_s_ago = utcnow() - timedelta(seconds=90)
            async with apps[0].state.runtime.engine.begin() as conn:
                await conn.execute(text("UPDATE referral SET status = 'submitted', urgency = 'crisis', "
                                        "created_at = :at WHERE id = :id").bindparams(
                    bindparam("at", type_=UTCDateTime)), {"at": ninety_s_ago, "id": rid})
            _, late = await scrape(intake)
            assert value(late, "rujukan_crisis_undecided") == 1

    # The request counter names route templates, never a path holding an id.
    assert value(i, "rujukan_http_requests_total", method="POST", route="/v1/referrals") == 1
    gets = {ls["route"] for ls, _ in i["rujukan_http_requests_total"] if ls["method"] == "GET"}
    assert any(route.startswith("/v1/referrals/{") for route in gets), gets
    assert rid not in text_i
    assert "PPA-MET-1" not in text_i
    assert value(i, "rujukan_http_request_duration_seconds_count", method="POST", route="/v1/referrals") == 1
    assert value(i, "rujukan_referrals") == 1  # one referral, whatever its status now
    # The poison entry: one dead letter in matching's group, none elsewhere.
    assert value(m, "rujukan_dead_letters", group="matching") == 1
    assert value(i, "rujukan_dead_letters", group="intake") == 0
    assert value(m, "rujukan_stream_length", group="matching", stream=SUBMITTED) >= 2
    assert {ls["stream"] for ls, _ in m["rujukan_stream_lag"]} >= {SUBMITTED}
    assert value(m, "rujukan_stream_pending", group="matching", stream=SUBMITTED) == 0
    assert "rujukan_deliveries" in n
    assert value(i, "rujukan_crisis_undecided") == 0  # none waited a minute
    assert value(m, "rujukan_holds_expiring") == 0
    assert "rujukan_webhook_endpoints" in i
    assert "rujukan_referrals" not in n
    for found in (i, m, n):
        assert value(found, "rujukan_dependency_up", dependency="redis") == 1
        assert value(found, "rujukan_dependency_up", dependency="database") == 1

    # Every metric a panel or an alert names is exported by some service.
    families = set(i) | set(m) | set(n)
    used = {name for expr in dashboard_exprs() + [r["expr"] for r in alert_rules()] for name in OURS.findall(expr)}
    assert used, "the dashboard and the alerts use no metric"
    assert used <= families, used - families


def test_prometheus_scrapes_each_service_at_its_port_with_the_alert_rules() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    ports = {job["job_name"]: job["dns_sd_configs"][0]["port"] for job in config["scrape_configs"]}
    assert ports == {"intake": 8001, "matching": 8002, "notify": 8003}
    names = {r["alert"] for r in alert_rules()}
    assert {"DeadLetter", "ConsumerLagGrowing", "DeliveriesFailing", "CrisisUndecided", "WebhooksFailing"} <= names
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    assert compose["prometheus"]["profiles"] == compose["grafana"]["profiles"] == ["monitoring"]
    mounted = " ".join(compose["prometheus"]["volumes"] + compose["grafana"]["volumes"])
    for path in ("./deploy/prometheus/prometheus.yml", "./deploy/prometheus/alerts.yml", "./deploy/grafana/dashboards"):
        assert path in mounted
        assert (ROOT / path).exists()
    assert all(p.startswith("127.0.0.1:") for p in compose["grafana"]["ports"])
    assert "ports" not in compose["prometheus"]
