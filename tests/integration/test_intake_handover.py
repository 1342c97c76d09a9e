"""Issue 11 on intake, against real Redis and a real database: the agency's caseworker is
sealed at rest, never on a stream or in a log, and shown only to the receiver who accepted;
the accepting service's contact (matching's `handover`) reaches the agency once accepted and
not before; an escalation and a withdrawn proposal are on the timeline with why, once."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from sqlalchemy import text

from intake.bootstrap import create_app
from shared.db import make_engine
from shared.events import (
    Envelope,
    HandoverContact,
    ReferralEscalated,
    ReferralProposalWithdrawn,
    ReferralStatusChanged,
    utcnow,
)
from shared.grants import sign
from shared.streams.topology import publish
from tests.apps import GRANT_SECRET, eventually, running
from tests.integration.test_intake import AUTH, body, matched, settings

RECEIVER = "01RECEIVERC1"  # the receiver test_intake.matched proposes to
CASEWORKER = {"name": "Rina Hutapea", "phone": "+62 61 455 0123", "email": "rina@ppa-medan.go.id"}
HANDOVER = HandoverContact(name="Bu Wati Kelompok", phone="+62 61 777 8899", email="wati@kelompok-a.example")


def grant(rid: str, decision_id: str = "D1") -> dict[str, str]:
    token, _ = sign(GRANT_SECRET, referral_id=rid, decision_id=decision_id, receiver_id=RECEIVER,
                    credential_id="01SESSION1")
    return {"Authorization": f"Bearer {token}"}


def changed(rid: str, status: str, decision_id: str = "D1", urgency: str = "routine", **kw: Any) -> Envelope:
    data: dict[str, Any] = dict(referral_id=rid, decision_id=decision_id, service_id="svc-1",
                                service_name="Kelompok A", organization_name="Org", status=status,
                                actor=f"receiver:{RECEIVER}", at=utcnow(), urgency=urgency)
    data.update(kw)
    return Envelope.wrap(ReferralStatusChanged.model_validate(data), source="rujukan/matching", subject=rid)


def with_decision(env: Envelope, decision_id: str, service_name: str) -> Envelope:
    return env.model_copy(update={"data": {**env.data, "decision_id": decision_id, "service_id": "svc-2",
                                           "service_name": service_name}})


async def everything_stored(database_url: str) -> str:
    """Every row of the tables a referral touches, as text."""
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = []
            for table in ("referral", "timeline_entry", "outbox"):
                rows += [dict(r) for r in (await conn.execute(text(f"SELECT * FROM {table}"))).mappings()]
    finally:
        await engine.dispose()
    return json.dumps(rows, default=str)


async def everything_on_streams(redis: Any) -> str:
    found = []
    async for key in redis.scan_iter(match="rujukan:*"):
        if await redis.type(key) in (b"stream", "stream"):
            found += [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in await redis.xrange(key)]
    return json.dumps(found)


async def test_the_caseworker_is_sealed_at_rest_never_on_a_stream_or_in_a_log_and_shown_once_accepted(
    database_url: str, redis_url: str, redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(settings(database_url, redis_url).model_copy(update={"receiver_grant_secret": GRANT_SECRET}))
    async with running(app) as client:
        # Bad input: a caseworker without a name, a bad phone, a field the contract has not.
        for bad, field in (({"phone": "+62 61 455 0123"}, "caseworker.name"),
                           ({"name": "Rina", "phone": "call me"}, "caseworker.phone"),
                           ({**CASEWORKER, "nik": "1271"}, "caseworker.nik")):
            r = await client.post("/v1/referrals", json=body("PPA-CW-BAD", caseworker=bad), headers=AUTH)
            assert r.status_code == 422, r.text
            assert r.json()["errors"][0]["field"] == field, r.text

        submitted = await client.post("/v1/referrals", json=body("PPA-CW-1", caseworker=CASEWORKER), headers=AUTH)
        assert submitted.status_code == 202, submitted.text
        rid = submitted.json()["id"]
        assert "caseworker" not in submitted.json()  # the agency's view carries no personal data
        # The caseworker is part of the submission: the same again is a repeat, another one a conflict.
        again = await client.post("/v1/referrals", json=body("PPA-CW-1", caseworker=CASEWORKER), headers=AUTH)
        assert again.status_code == 200
        other = await client.post("/v1/referrals", json=body("PPA-CW-1", caseworker={"name": "Budi"}),
                                  headers=AUTH)
        assert other.status_code == 409
        plain = (await client.post("/v1/referrals", json=body("PPA-CW-2"), headers=AUTH)).json()["id"]

        url = f"/v1/receivers/referrals/{rid}"
        await publish(redis, [matched(rid), matched(plain)])

        async def proposed() -> bool:
            return (await client.get(f"/v1/referrals/{rid}", headers=AUTH)).json()["status"] == "proposed"

        await eventually(proposed)
        # Proposed, not accepted: the receiver sees neither the person nor the caseworker.
        before = await client.get(url, headers=grant(rid))
        assert before.status_code == 403
        assert "Rina" not in before.text

        await publish(redis, [changed(rid, "accepted", handover=HANDOVER), changed(plain, "accepted")])

        async def readable() -> dict[str, Any] | None:
            r = await client.get(url, headers=grant(rid))
            return r.json() if r.status_code == 200 else None

        shown = await eventually(readable)
        assert shown["caseworker"] == CASEWORKER
        assert (await eventually(lambda: _json_ok(client, plain)))["caseworker"] is None

        # The person's page shows the caseworker to call, in Bahasa Indonesia.
        token = await _csrf(client, rid)
        page = await client.post(f"/person/{rid}", data={"grant": grant(rid)["Authorization"][7:],
                                                          "csrf_token": token})
        assert page.status_code == 200, page.text
        for fact in ("Pendamping kasus di lembaga perujuk", "Rina Hutapea", 'href="tel:+62614550123"',
                     "rina@ppa-medan.go.id"):
            assert fact in page.text, fact
        page = await client.post(f"/person/{plain}", data={"grant": grant(plain)["Authorization"][7:],
                                                            "csrf_token": token})
        assert page.status_code == 200, page.text
        assert "Lembaga tidak menyebut pendamping kasus" in page.text
        assert "Rina" not in page.text

    stored = await everything_stored(database_url)
    streams = await everything_on_streams(redis)
    assert '"caseworker_enc": "v1:test1:' in stored
    for secret in CASEWORKER.values():
        assert secret not in stored, secret
        assert secret not in streams, secret
        assert secret not in caplog.text, secret


async def _json_ok(client: Any, rid: str) -> dict[str, Any] | None:
    r = await client.get(f"/v1/receivers/referrals/{rid}", headers=grant(rid))
    return r.json() if r.status_code == 200 else None


async def _csrf(client: Any, rid: str) -> str:
    assert (await client.get(f"/person/{rid}")).status_code == 401
    return str(client.cookies["rujukan_csrf"])


async def test_the_agency_sees_the_accepting_services_contact_once_accepted_and_not_before(
    database_url: str, redis_url: str, redis: Any
) -> None:
    async with running(create_app(settings(database_url, redis_url))) as client:
        rid = (await client.post("/v1/referrals", json=body("PPA-HO-1"), headers=AUTH)).json()["id"]
        late = (await client.post("/v1/referrals", json=body("PPA-HO-2"), headers=AUTH)).json()["id"]
        # A decline carrying a contact (not the contract, but never trusted): nothing kept.
        await publish(redis, [matched(rid), changed(rid, "declined", reason_code="no_capacity", handover=HANDOVER),
                              with_decision(matched(rid), "D2", "Kelompok B")])

        async def proposed_again() -> dict[str, Any] | None:
            view = (await client.get(f"/v1/referrals/{rid}", headers=AUTH)).json()
            return view if len(view["timeline"]) == 4 else None

        view = await eventually(proposed_again)
        assert view["status"] == "proposed"
        assert view["handover"] is None
        assert "wati" not in json.dumps(view).lower()

        await publish(redis, [changed(rid, "accepted", decision_id="D2", service_name="Kelompok B",
                                      handover=HANDOVER)])

        async def accepted() -> dict[str, Any] | None:
            view = (await client.get(f"/v1/referrals/{rid}", headers=AUTH)).json()
            return view if view["status"] == "accepted" else None

        view = await eventually(accepted)
        assert view["handover"] == HANDOVER.model_dump()
        assert view["match"]["decision_id"] == "D2"
        # It stays through the rest of the loop.
        await publish(redis, [changed(rid, "in_progress", decision_id="D2")])

        async def started() -> dict[str, Any] | None:
            view = (await client.get(f"/v1/referrals/{rid}", headers=AUTH)).json()
            return view if view["status"] == "in_progress" else None

        assert (await eventually(started))["handover"] == HANDOVER.model_dump()

        # Cancelled before the acceptance arrived: the late acceptance moves nothing, keeps nothing.
        await publish(redis, [matched(late)])

        async def proposed() -> bool:
            return (await client.get(f"/v1/referrals/{late}", headers=AUTH)).json()["status"] == "proposed"

        await eventually(proposed)
        cancelled = await client.post(f"/v1/referrals/{late}/cancel", json={"reason_code": "duplicate"}, headers=AUTH)
        assert cancelled.status_code == 200
        await publish(redis, [changed(late, "accepted", handover=HANDOVER)])

        async def recorded() -> dict[str, Any] | None:
            view = (await client.get(f"/v1/referrals/{late}", headers=AUTH)).json()
            return view if view["timeline"][-1]["kind"] == "accepted" else None

        view = await eventually(recorded)
        assert (view["status"], view["handover"]) == ("cancelled", None)


async def test_an_escalation_and_a_withdrawn_proposal_are_on_the_timeline_with_why_once(
    database_url: str, redis_url: str, redis: Any
) -> None:
    app = create_app(settings(database_url, redis_url).model_copy(update={"receiver_grant_secret": GRANT_SECRET}))
    async with running(app) as client:
        crisis = body("PPA-ESC-1", urgency="crisis", risk_flags=["ongoing_violence"])
        rid = (await client.post("/v1/referrals", json=crisis, headers=AUTH)).json()["id"]
        first = matched(rid, urgency="crisis")
        escalated = Envelope.wrap(ReferralEscalated(
            referral_id=rid, decision_id="D2", previous_decision_id="D1", service_id="svc-2", level=1,
            reason_code="crisis_unanswered", minutes_waited=15.4, at=utcnow(), urgency="crisis",
            risk_flags=["ongoing_violence"]), source="rujukan/matching", subject=rid)
        second = with_decision(matched(rid, urgency="crisis"), "D2", "Psikolog B")
        again = Envelope.wrap(ReferralEscalated(
            referral_id=rid, decision_id="", previous_decision_id="D2", service_id="", level=2,
            reason_code="crisis_unanswered", minutes_waited=30, at=utcnow(), urgency="crisis",
            risk_flags=["ongoing_violence"]), source="rujukan/matching", subject=rid)
        # The first proposal is accepted first: it keeps the referral, the other is withdrawn.
        accepted = changed(rid, "accepted", urgency="crisis", risk_flags=["ongoing_violence"], handover=HANDOVER)
        withdrawn = Envelope.wrap(ReferralProposalWithdrawn(
            referral_id=rid, decision_id="D2", service_id="svc-2", receiver_ids=["01RECEIVERB"],
            reason_code="accepted_elsewhere", at=utcnow(), urgency="crisis", risk_flags=["ongoing_violence"]),
            source="rujukan/matching", subject=rid)
        steps = [first, escalated, second, again, accepted, withdrawn]
        await publish(redis, steps)
        await publish(redis, steps)  # at-least-once delivery: every step applies once

        async def done() -> dict[str, Any] | None:
            view = (await client.get(f"/v1/referrals/{rid}", headers=AUTH)).json()
            return view if view["timeline"][-1]["kind"] == "withdrawn" else None

        view = await eventually(done)
        tl = view["timeline"]
        assert [(t["kind"], t["status"]) for t in tl] == [
            ("submitted", "submitted"), ("proposed", "proposed"), ("escalated", None), ("proposed", "proposed"),
            ("escalated", None), ("accepted", "accepted"), ("withdrawn", None)]
        assert tl[2]["actor"] == "matching"
        assert tl[2]["reason"]["id"] == ("Eskalasi tingkat 1: usulan krisis belum diterima setelah 15 menit; layanan "
                                         "lain yang menangani krisis juga diusulkan; yang pertama menerima mendapat "
                                         "rujukan")
        assert tl[2]["reason"]["en"].startswith("Escalation level 1: the crisis proposal was not accepted after "
                                                "15 minutes")
        assert "operator yang bertugas diberi tahu" in tl[4]["reason"]["id"]
        assert tl[4]["reason"]["en"].startswith("Escalation level 2")
        assert tl[6]["reason"]["id"].endswith("rujukan sudah diterima layanan lain")
        assert tl[6]["reason"]["en"].endswith("another service accepted the referral first")
        # The proposal accepted is the referral's service, though another was proposed since;
        # its receiver reads the person's details.
        assert view["match"]["decision_id"] == "D1"
        assert view["match"]["service_name"] == "Kelompok A"
        assert view["handover"] == HANDOVER.model_dump()
        r = await client.get(f"/v1/receivers/referrals/{rid}", headers=grant(rid, "D1"))
        assert r.status_code == 200, r.text
        assert (await client.get(f"/v1/receivers/referrals/{rid}", headers=grant(rid, "D2"))).status_code == 403
        assert len((await client.get(f"/v1/referrals/{rid}", headers=AUTH)).json()["timeline"]) == len(tl) + 1
