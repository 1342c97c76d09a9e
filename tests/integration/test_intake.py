"""Intake against real Redis and a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from sqlalchemy import text

from intake.adapters.crypto import FieldCipher
from intake.adapters.orm import Outbox
from intake.bootstrap import create_app
from intake.domain.model import ReferralRequest
from intake.service_layer.agencies import Agencies
from intake.service_layer.referrals import Intake
from intake.settings import Settings
from shared.db import make_engine, sessions, upgrade
from shared.events import Envelope, NotificationSent, Recipient, ReferralMatched
from shared.outbox import OutboxRelay
from shared.streams.topology import DECISIONS, NOTIFICATIONS, SUBMITTED, SUBMITTED_URGENT, connect, provision, publish
from tests.apps import DEMO_KEY, TEST_KEYS, eventually, running
from tests.unit.test_referral_request import VALID

AUTH = {"Authorization": f"Bearer {DEMO_KEY}"}


def settings(database_url: str, redis_url: str) -> Settings:
    return Settings(database_url=database_url, redis_url=redis_url, encryption_keys=TEST_KEYS,
                    demo_api_key=DEMO_KEY, outbox_poll_interval_s=0.2, stream_block_ms=100)


def body(ref: str = "PPA-MDN-1", **over: Any) -> dict[str, Any]:
    b = copy.deepcopy(VALID)
    b["external_ref"] = ref
    b.update(over)
    return b


async def stream_events(redis: Any, stream: str) -> list[dict[str, Any]]:
    return [json.loads(f[b"event"]) for _, f in await redis.xrange(stream)]


async def test_submit_publishes_an_event_without_personal_data_and_encrypts_at_rest(
    database_url: str, redis_url: str, redis: Any
) -> None:
    app = create_app(settings(database_url, redis_url))
    async with running(app) as client:
        r = await client.post("/v1/referrals", json=body(), headers=AUTH)
        assert r.status_code == 202, r.text
        rid = r.json()["id"]
        assert r.headers["location"] == f"/v1/referrals/{rid}"
        assert r.json()["status"] == "submitted"

        events = await eventually(lambda: stream_events(redis, SUBMITTED))
        assert len(events) == 1
        assert events[0]["subject"] == rid
        assert events[0]["data"]["age_band"] == "30-34"
        assert events[0]["data"]["region_code"] == "12.71.05"
        raw = json.dumps(events)
        for secret in ("Siti", "3456", "s@example.org", "cerita", '"SN"'):
            assert secret not in raw

    engine = make_engine(database_url)
    async with engine.connect() as conn:
        row = (await conn.execute(text("SELECT * FROM referral"))).mappings().one()
        published = (await conn.execute(text("SELECT published_at FROM outbox"))).scalar_one()
    await engine.dispose()
    dump = json.dumps({k: str(v) for k, v in row.items()})
    for secret in ("Siti", "3456", "s@example.org", "cerita"):
        assert secret not in dump
    assert row["contact_enc"].startswith("v1:test1:")
    assert published is not None
    cipher = FieldCipher(TEST_KEYS)
    assert json.loads(cipher.open(row["contact_enc"], f"{rid}:contact"))["name"] == "Siti"


async def test_crisis_goes_to_the_urgent_lane(database_url: str, redis_url: str, redis: Any) -> None:
    async with running(create_app(settings(database_url, redis_url))) as client:
        r = await client.post("/v1/referrals", json=body(urgency="crisis", risk_flags=["ongoing_violence"]),
                              headers=AUTH)
        assert r.status_code == 202
        await eventually(lambda: stream_events(redis, SUBMITTED_URGENT))
        assert await redis.xlen(SUBMITTED) == 0


async def test_same_external_ref_gives_the_same_referral_never_a_second(
    database_url: str, redis_url: str, redis: Any
) -> None:
    async with running(create_app(settings(database_url, redis_url))) as client:
        first = await client.post("/v1/referrals", json=body("K-1"), headers=AUTH)
        again = await client.post("/v1/referrals", json=body("K-1"), headers=AUTH)
        assert first.status_code == 202
        assert again.status_code == 200
        assert again.json()["id"] == first.json()["id"]
        changed = await client.post("/v1/referrals", json=body("K-1", urgency="priority"), headers=AUTH)
        assert changed.status_code == 409
        assert changed.json()["errors"][0]["field"] == "external_ref"
        listed = await client.get("/v1/referrals", headers=AUTH)
        assert [x["id"] for x in listed.json()["items"]] == [first.json()["id"]]
        await eventually(lambda: stream_events(redis, SUBMITTED))
        assert await redis.xlen(SUBMITTED) == 1


async def test_credentials_and_validation(database_url: str, redis_url: str, redis: Any) -> None:
    async with running(create_app(settings(database_url, redis_url))) as client:
        assert (await client.post("/v1/referrals", json=body())).status_code == 401
        bad = {"Authorization": "Bearer nope"}
        assert (await client.post("/v1/referrals", json=body(), headers=bad)).status_code == 401
        assert (await client.get("/v1/referrals/x", headers=bad)).status_code == 401
        b = body()
        b["client"]["age"] = 130
        b["pmks_category"] = "unknown"
        r = await client.post("/v1/referrals", json=b, headers=AUTH)
        assert r.status_code == 422
        detail = {d["field"]: d["reason"] for d in r.json()["errors"]}
        assert "client.age" in detail
        assert "120" in detail["client.age"]
        assert "unknown PMKS category" in detail["pmks_category"]
        assert "Siti" not in r.text  # the input is not echoed back
        json_headers = {**AUTH, "content-type": "application/json"}
        r = await client.post("/v1/referrals", content=b"{not json", headers=json_headers)
        assert r.status_code == 422
        health = await client.get("/health")
        assert health.json().get("checks") == {"redis": "ok", "database": "ok"}, health.text


async def test_an_agency_sees_only_its_own_referrals(database_url: str, redis_url: str, redis: Any) -> None:
    app = create_app(settings(database_url, redis_url))
    async with running(app) as client:
        rid = (await client.post("/v1/referrals", json=body(), headers=AUTH)).json()["id"]
        await app.state.intake.ensure_agency("other", "Dinas Sosial Lain", "other-key")
        other = {"Authorization": "Bearer other-key"}
        assert (await client.get(f"/v1/referrals/{rid}", headers=other)).status_code == 404
        assert (await client.get("/v1/referrals", headers=other)).json()["items"] == []
        # the same external_ref at another agency is another referral
        r = await client.post("/v1/referrals", json=body(), headers=other)
        assert r.status_code == 202
        assert r.json()["id"] != rid


def matched(rid: str, urgency: str = "routine") -> Envelope:
    return Envelope.wrap(ReferralMatched(
        referral_id=rid, decision_id="D1", service_id="svc-1", service_name="Kelompok A", organization_name="Org",
        resource_kind="peer_support", pmks_category="korban_tindak_kekerasan", region_code="12.71",
        urgency=urgency,  # type: ignore[arg-type]
        reasons_id=["wilayah Kota Medan"], reasons_en=["area Kota Medan"],
        recipients=[Recipient(receiver_id="01RECEIVERC1", contact_id="c1", email="f@example.org")],
    ), source="rujukan/matching", subject=rid)


async def test_decisions_and_notifications_reach_the_timeline_once(
    database_url: str, redis_url: str, redis: Any
) -> None:
    async with running(create_app(settings(database_url, redis_url))) as client:
        rid = (await client.post("/v1/referrals", json=body(), headers=AUTH)).json()["id"]
        env = matched(rid)
        sent = Envelope.wrap(NotificationSent(referral_id=rid, delivery_id="DL1", decision_id="D1",
                                              receiver_id="01RECEIVERC1"), source="rujukan/notify", subject=rid)
        # Each event delivered twice (a relay retry, a replay): one effect each.
        await publish(redis, [env, env])
        await publish(redis, [sent, sent])

        async def timeline() -> list[dict[str, Any]]:
            view = (await client.get(f"/v1/referrals/{rid}", headers=AUTH)).json()
            return view["timeline"] if len(view["timeline"]) >= 3 else []

        tl = await eventually(timeline)
        assert [t["kind"] for t in tl] == ["submitted", "proposed", "notified"]
        view = (await client.get(f"/v1/referrals/{rid}", headers=AUTH)).json()
        assert view["status"] == "proposed"
        assert view["match"]["service_name"] == "Kelompok A"
        assert "wilayah Kota Medan" in tl[1]["reason"]["id"]
        assert await redis.xlen(DECISIONS) == 2
        assert await redis.xlen(NOTIFICATIONS) == 2
        pending = await redis.xpending(DECISIONS, "intake")
        assert pending["pending"] == 0


async def test_a_referral_committed_while_redis_is_down_is_published_later(
    database_url: str, redis_url: str, redis: Any
) -> None:
    await upgrade(database_url, __import__("intake.bootstrap", fromlist=["MIGRATIONS"]).MIGRATIONS)
    engine = make_engine(database_url)
    factory = sessions(engine)
    dead = connect("redis://127.0.0.1:1/0")  # nothing listens there
    intake = Intake(factory, FieldCipher(TEST_KEYS), OutboxRelay(factory, Outbox, dead), Agencies(factory, pepper=""))
    await intake.ensure_agency("demo", "Demo", DEMO_KEY)
    referral, created = await intake.submit("demo", ReferralRequest.model_validate(body("OFFLINE-1")))
    assert created
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the connection error, the row must stay
        await intake.relay.publish_pending()
    async with factory() as s:
        assert (await s.execute(text("SELECT count(*) FROM outbox WHERE published_at IS NULL"))).scalar_one() == 1
    # A relay with Redis back (after a restart of the service, say) publishes what was left.
    live = connect(redis_url)
    await provision(live)
    assert await OutboxRelay(factory, Outbox, live).publish_pending() == 1
    assert [e["subject"] for e in await stream_events(redis, SUBMITTED)] == [referral.id]
    assert await OutboxRelay(factory, Outbox, live).publish_pending() == 0
    await live.aclose()
    await dead.aclose()
    await engine.dispose()


async def test_database_away_answers_503_with_retry_after_and_no_traceback(
    redis_url: str, redis: Any, postgres_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    url = postgres_server.create_database("t_unavailable")
    app = create_app(settings(url, redis_url))
    async with running(app) as client:
        assert (await client.post("/v1/referrals", json=body("UP-1"), headers=AUTH)).status_code == 202
        # The database goes away under the running service (a failover, a restart):
        # the service layer's sessions now lead to a port where nothing listens.
        from sqlalchemy.engine import make_url

        dead = make_engine(make_url(url).set(port=1).render_as_string(hide_password=False))
        app.state.intake.sessions = sessions(dead)
        r = await client.post("/v1/referrals", json=body("DOWN-1"), headers=AUTH)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "2"
        assert "Siti" not in caplog.text
        assert "Traceback" not in caplog.text
        await dead.dispose()
