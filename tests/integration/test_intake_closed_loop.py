"""Intake's side of the closed loop, against real Redis and a real database: every step
matching applied reaches the timeline with who and why, and the agency's cancellation
(its own status at once, an event without personal data for matching and notify)."""

from __future__ import annotations

import json
from typing import Any

from intake.bootstrap import create_app
from shared.events import Envelope, ReferralResponseRefused, ReferralStatusChanged, ReferralWaitlisted, utcnow
from shared.streams.topology import CANCELLATIONS, CANCELLATIONS_URGENT, publish
from tests.apps import eventually, running
from tests.integration.test_intake import AUTH, body, matched, settings


def changed(rid: str, status: str, **kw: Any) -> Envelope:
    data = dict(referral_id=rid, decision_id="D1", service_id="svc-1", service_name="Kelompok A",
                organization_name="Org", status=status, actor="receiver:c1", at=utcnow(), urgency="routine")
    data.update(kw)
    return Envelope.wrap(ReferralStatusChanged.model_validate(data), source="rujukan/matching", subject=rid)


async def test_every_step_of_the_loop_reaches_the_timeline_with_who_and_why(
    database_url: str, redis_url: str, redis: Any
) -> None:
    async with running(create_app(settings(database_url, redis_url))) as client:
        rid = (await client.post("/v1/referrals", json=body(), headers=AUTH)).json()["id"]
        first, declined = matched(rid), changed(rid, "declined", reason_code="outside_mandate")
        second = matched(rid)  # matching's next decision, published with the decline
        second = second.model_copy(update={"data": {**second.data, "decision_id": "D2", "service_name": "Kelompok B"}})
        steps = [
            first, declined, second,
            changed(rid, "accepted", decision_id="D2", service_name="Kelompok B"),
            changed(rid, "in_progress", decision_id="D2", service_name="Kelompok B"),
            changed(rid, "completed", decision_id="D2", service_name="Kelompok B", outcome_code="goals_met"),
        ]
        await publish(redis, steps)

        async def done() -> dict[str, Any] | None:
            view = (await client.get(f"/v1/referrals/{rid}", headers=AUTH)).json()
            return view if view["status"] == "completed" else None

        view = await eventually(done)
        tl = view["timeline"]
        assert [(t["kind"], t["status"]) for t in tl] == [
            ("submitted", "submitted"), ("proposed", "proposed"), ("declined", "declined"), ("proposed", "proposed"),
            ("accepted", "accepted"), ("in_progress", "in_progress"), ("completed", "completed")]
        assert tl[2]["actor"] == "receiver:c1"
        assert tl[2]["reason"]["id"] == "Ditolak oleh Kelompok A (Org): di luar kewenangan layanan"
        assert tl[2]["reason"]["en"] == "Declined by Kelompok A (Org): outside the service's mandate"
        assert tl[-1]["reason"]["id"] == "Selesai di Kelompok B (Org): tujuan layanan tercapai"
        assert view["match"]["decision_id"] == "D2"

        # Completed is closed: no cancelling it, and a late step changes nothing.
        r = await client.post(f"/v1/referrals/{rid}/cancel", json={"reason_code": "duplicate"}, headers=AUTH)
        assert r.status_code == 409
        assert r.json()["errors"][0]["field"] == "status"


async def test_an_expiry_and_a_refused_response_are_recorded_without_moving_the_status(
    database_url: str, redis_url: str, redis: Any
) -> None:
    async with running(create_app(settings(database_url, redis_url))) as client:
        rid = (await client.post("/v1/referrals", json=body(), headers=AUTH)).json()["id"]
        proposed, expired = matched(rid), changed(rid, "hold_expired", actor="matching")
        waitlisted = Envelope.wrap(ReferralWaitlisted(
            referral_id=rid, decision_id="D2", pmks_category="korban_tindak_kekerasan", region_code="12.71",
            urgency="routine", reasons_id=["semua layanan yang sesuai penuh (1)"], reasons_en=["full"]),
            source="rujukan/matching", subject=rid)
        refused = Envelope.wrap(ReferralResponseRefused(
            referral_id=rid, decision_id="D1", service_id="svc-1", response="accepted", responder_receiver_id="c1",
            reason_code="hold_expired", urgency="routine"), source="rujukan/matching", subject=rid)
        await publish(redis, [proposed, expired, waitlisted, refused])

        async def timeline() -> list[dict[str, Any]]:
            tl = (await client.get(f"/v1/referrals/{rid}", headers=AUTH)).json()["timeline"]
            return tl if len(tl) >= 5 else []

        tl = await eventually(timeline)
        assert [(t["kind"], t["status"]) for t in tl] == [
            ("submitted", "submitted"), ("proposed", "proposed"), ("hold_expired", None),
            ("waitlisted", "waitlisted"), ("response_refused", None)]
        assert "tidak menanggapi dalam batas waktu" in tl[2]["reason"]["id"]
        assert tl[2]["actor"] == "matching"
        assert "batas waktu sudah habis" in tl[4]["reason"]["id"]


async def test_the_agency_cancels_an_open_referral(database_url: str, redis_url: str, redis: Any) -> None:
    app = create_app(settings(database_url, redis_url))
    async with running(app) as client:
        crisis = body("PPA-CRISIS", urgency="crisis", risk_flags=["ongoing_violence"])
        rid = (await client.post("/v1/referrals", json=crisis, headers=AUTH)).json()["id"]
        await publish(redis, [matched(rid, urgency="crisis")])

        async def proposed() -> bool:  # the proposal is on the timeline before the agency cancels
            view = (await client.get(f"/v1/referrals/{rid}", headers=AUTH)).json()
            return any(step["kind"] != "submitted" for step in view["timeline"])

        assert await eventually(proposed, timeout=20)

        r = await client.post(f"/v1/referrals/{rid}/cancel", json={"reason_code": "nope"}, headers=AUTH)
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "reason_code"
        await app.state.intake.ensure_agency("other", "Dinas Lain", "other-key")
        other = {"Authorization": "Bearer other-key"}
        r = await client.post(f"/v1/referrals/{rid}/cancel", json={"reason_code": "duplicate"}, headers=other)
        assert r.status_code == 404
        assert (await client.post(f"/v1/referrals/{rid}/cancel", json={"reason_code": "duplicate"})).status_code == 401

        r = await client.post(f"/v1/referrals/{rid}/cancel", json={"reason_code": "client_withdrew"}, headers=AUTH)
        assert r.status_code == 200, r.text
        view = r.json()
        assert view["status"] == "cancelled"
        last = view["timeline"][-1]
        assert (last["kind"], last["actor"]) == ("cancelled", "agency:demo")
        assert last["reason"]["id"] == "Dibatalkan oleh lembaga perujuk: klien mengundurkan diri"
        again = await client.post(f"/v1/referrals/{rid}/cancel", json={"reason_code": "client_withdrew"}, headers=AUTH)
        assert again.status_code == 200
        assert len(again.json()["timeline"]) == len(view["timeline"])

        # One event, in the urgent lane (a crisis), with no personal data.
        async def cancelled() -> list[dict[str, Any]]:
            return [json.loads(f[b"event"]) for _, f in await redis.xrange(CANCELLATIONS_URGENT)]

        events = await eventually(cancelled)
        assert len(events) == 1
        assert events[0]["type"] == "referral.cancelled.v1"
        assert events[0]["data"] == {"referral_id": rid, "agency_id": "demo", "reason_code": "client_withdrew",
                                     "urgency": "crisis", "risk_flags": ["ongoing_violence"]}
        assert await redis.xlen(CANCELLATIONS) == 0
        # A decision that comes after the cancellation never reopens it.
        await publish(redis, [matched(rid)])

        async def recorded() -> dict[str, Any] | None:
            v = (await client.get(f"/v1/referrals/{rid}", headers=AUTH)).json()
            return v if v["timeline"][-1]["kind"] == "proposed" else None

        view = await eventually(recorded)
        assert view["status"] == "cancelled"
        assert view["timeline"][-1]["status"] is None
