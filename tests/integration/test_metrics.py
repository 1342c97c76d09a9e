"""/metrics on the three services: open without a credential, counts only (no id, nothing
personal), route templates rather than paths, the streams' figures and the domain's counts
read at scrape time; the times from submission to decision and to the first proposal mail
(crisis apart) and FastStream's per-stream figures; every metric the dashboard and the
alert rules use is exported."""

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

from devtools.mailcatcher import MailCatcher
from shared.db import UTCDateTime
from shared.events import utcnow
from shared.streams.topology import SUBMITTED, TOPOLOGY, replay_stream
from tests.apps import eventually
from tests.integration.test_http_boundary import AGENCY, client, make, sqlite, started
from tests.integration.test_intake import body as referral

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboards/rujukan.json"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
PROMETHEUS = ROOT / "deploy/prometheus/prometheus.yml"
OURS = re.compile(r"\b(?:rujukan|faststream)_[a-z_]+\b")
DECISION = "rujukan_referral_decision_seconds"
NOTIFICATION = "rujukan_referral_notification_seconds"


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
    tmp_path: Path, redis_url: str, redis: Any, mailbox: MailCatcher
) -> None:
    # The demo directory, so that referrals are proposed, and notify mailing a real SMTP server.
    over: dict[str, dict[str, Any]] = {"matching": {"seed_demo": True}, "notify": {"smtp_url": mailbox.url}}
    apps = [make(name, sqlite(tmp_path, name), redis_url, **over.get(name, {}))
            for name in ("intake", "matching", "notify")]
    async with started(*apps) as asgis:
        intake, matching, notify = (client(a) for a in asgis)
        async with intake, matching, notify:
            m0 = samples((await matching.get("/metrics")).text)
            n0 = samples((await notify.get("/metrics")).text)
            r = await intake.post("/v1/referrals", json=referral("PPA-MET-1"), headers=AGENCY)
            assert r.status_code in (200, 201, 202), r.text
            rid = r.json()["id"]
            crisis = await intake.post("/v1/referrals", json=referral("PPA-MET-2", urgency="crisis",
                                                                      risk_flags=["ongoing_violence"]), headers=AGENCY)
            assert crisis.status_code == 202, crisis.text
            assert (await intake.get(f"/v1/referrals/{rid}", headers=AGENCY)).status_code == 200
            await intake.get("/v1/referrals/nope", headers=AGENCY)
            # A client's made-up methods and paths: one label each, whatever is sent.
            for n in range(5):
                await intake.request(f"BREW{n}", f"/made-up-{n}/x{n}")
            await redis.xadd(SUBMITTED, {"type": "referral.submitted", "event": "{\"id\": "})  # a poison entry

            async def scrape(c: httpx.AsyncClient) -> tuple[str, dict[str, list[tuple[dict[str, str], float]]]]:
                r = await c.get("/metrics")  # no credential: Prometheus scrapes without one
                assert r.status_code == 200, r.text
                assert r.headers["content-type"].startswith("text/plain")
                return r.text, samples(r.text)

            async def decided() -> Any:
                _, m = await scrape(matching)
                _, n = await scrape(notify)
                proposed = value(m, "rujukan_decisions", outcome="proposed")
                ok = (value(m, "rujukan_decisions") >= 2 and value(m, "rujukan_dead_letters", group="matching") == 1
                      and value(m, f"{DECISION}_count") >= 2  # observed once the batch committed
                      and value(n, f"{NOTIFICATION}_count") >= proposed
                      # FastStream counts a batch processed once its handler returned (after the commit)
                      and value(m, "faststream_received_processed_messages_total", handler=SUBMITTED) >= 2)
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
            # The crisis's mail waiting over a minute (its relay refusing: backed off), and only then.
            _, n_now = await scrape(notify)
            assert value(n_now, "rujukan_urgent_mail_waiting") == 0
            async with apps[2].state.runtime.engine.begin() as conn:
                waiting = (await conn.execute(text(
                    "UPDATE delivery SET state = 'pending', created_at = :at, next_attempt_at = :later "
                    "WHERE urgent").bindparams(bindparam("at", type_=UTCDateTime),
                                               bindparam("later", type_=UTCDateTime)),
                    {"at": ninety_s_ago, "later": utcnow() + timedelta(hours=1)})).rowcount
            assert waiting >= 1
            _, n_late = await scrape(notify)
            assert value(n_late, "rujukan_urgent_mail_waiting") == waiting

    # The request counter names route templates, never a path holding an id.
    assert value(i, "rujukan_http_requests_total", method="POST", route="/v1/referrals") == 2
    gets = {ls["route"] for ls, _ in i["rujukan_http_requests_total"] if ls["method"] == "GET"}
    assert any(route.startswith("/v1/referrals/{") for route in gets), gets
    assert rid not in text_i
    assert "PPA-MET-1" not in text_i
    assert value(i, "rujukan_http_request_duration_seconds_count", method="POST", route="/v1/referrals") == 2
    assert value(i, "rujukan_referrals") == 2  # two referrals, whatever their status now
    assert value(i, "rujukan_http_requests_total", method="other", route="unmatched") == 5
    assert "BREW" not in text_i
    assert "made-up" not in text_i
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

    # Each referral's first decision timed once, the crisis under its own label; nothing
    # before (every closed-set series is there from the start, at 0).
    routine = referral("PPA-MET-1")["urgency"]
    assert routine != "crisis"
    assert value(m0, f"{DECISION}_count") == 0
    assert {ls["urgency"] for ls, _ in m0[f"{DECISION}_count"]} == {"routine", "priority", "crisis"}
    assert {ls["outcome"] for ls, _ in m0[f"{DECISION}_count"]} == {"proposed", "waitlisted", "unmatched"}
    assert value(m, f"{DECISION}_count") == 2
    assert value(m, f"{DECISION}_count", urgency="crisis") == 1
    assert value(m, f"{DECISION}_count", urgency=routine) == 1
    for outcome in ("proposed", "waitlisted", "unmatched"):  # the outcome label says what the decision was
        assert value(m, f"{DECISION}_count", outcome=outcome) == value(m, "rujukan_decisions", outcome=outcome)
    assert value(m, f"{DECISION}_bucket", urgency="crisis", le="+Inf") == 1
    assert value(m, f"{DECISION}_sum", urgency="crisis") > 0
    # The crisis was proposed (the demo directory has a crisis service in its region) and its
    # receiver mailed through the real SMTP server: one first notification, under crisis.
    assert value(m, f"{DECISION}_count", urgency="crisis", outcome="proposed") == 1
    assert value(n0, f"{NOTIFICATION}_count") == 0
    proposed = {u: value(m, f"{DECISION}_count", urgency=u, outcome="proposed") for u in ("crisis", routine)}
    assert value(n, f"{NOTIFICATION}_count", urgency="crisis") == 1
    assert value(n, f"{NOTIFICATION}_count", urgency=routine) == proposed[routine]
    assert value(n, f"{NOTIFICATION}_count") == sum(proposed.values())
    assert len(mailbox.messages()) >= sum(proposed.values())
    assert NOTIFICATION not in m  # each service exports its own
    assert DECISION not in n

    # FastStream's middleware on each broker: entries received and processed per stream
    # (the poison entry and the referral on matching's routine lane), labelled by stream only.
    assert value(m, "faststream_received_messages_total", app_name="matching", handler=SUBMITTED) >= 2
    assert value(m, "faststream_received_processed_messages_total", app_name="matching", handler=SUBMITTED,
                 status="acked") >= 2
    assert value(m, "faststream_received_processed_messages_duration_seconds_count", app_name="matching",
                 handler=SUBMITTED) >= 1
    assert value(n, "faststream_received_messages_total", app_name="notify") >= 2
    for found, group in ((i, "intake"), (m, "matching"), (n, "notify")):
        handlers = {ls["handler"] for ls, _ in found["faststream_received_messages_total"]}
        assert handlers <= {*TOPOLOGY[group], replay_stream(group)}, handlers

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
