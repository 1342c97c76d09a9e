"""The recipients' inbox on notify, with real Redis, a real database and a real SMTP server:
a proposal mail carries a personal token; with it a receiver sees only its own proposals
and answers them (checked, recorded, published to matching without personal data);
closing notices reach the receiver; urgent mail is never queued behind routine mail."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from datetime import timedelta
from typing import Any

from notify.adapters.mailer import Mailer
from notify.bootstrap import create_app
from notify.service_layer.services import Notify
from notify.settings import Settings
from shared.db import make_engine, sessions, upgrade
from shared.events import (
    Envelope,
    EventData,
    Recipient,
    ReferralCancelled,
    ReferralMatched,
    ReferralResponseRefused,
    ReferralStatusChanged,
    new_id,
    utcnow,
)
from shared.mailcatcher import MailCatcher
from shared.streams import RESPONSES, RESPONSES_URGENT, publish
from tests.apps import ADMIN_KEY, eventually, running
from tests.matching_kit import message

TOKEN = re.compile(r"Authorization: Bearer (rjk_[A-Za-z0-9_\-]+)")


def matched(contact: str = "ct-ppa", urgency: str = "crisis", expires_in: timedelta = timedelta(hours=4),
            **kw: Any) -> ReferralMatched:
    data: dict[str, Any] = dict(
        referral_id=new_id(), decision_id=new_id(), service_id="svc-ppa-medan", service_name="Unit PPA",
        organization_name="Polrestabes Medan", resource_kind="police_ppa", pmks_category="korban_tindak_kekerasan",
        region_code="12.71.05", urgency=urgency, risk_flags=["ongoing_violence"] if urgency == "crisis" else [],
        hold_expires_at=utcnow() + expires_in, reasons_id=["wilayah Kota Medan"], reasons_en=["area Kota Medan"],
        recipients=[Recipient(contact_id=contact, email=f"{contact}@example.org")])
    data.update(kw)
    return ReferralMatched(**data)


def wrap(data: EventData) -> Envelope:
    return Envelope.wrap(data, source="rujukan/matching", subject=str(getattr(data, "referral_id", "x")))


def settings(database_url: str, redis_url: str, smtp_url: str) -> Settings:
    return Settings(database_url=database_url, redis_url=redis_url, smtp_url=smtp_url, admin_api_key=ADMIN_KEY,
                    outbox_poll_interval_s=0.2, stream_block_ms=100, mail_poll_interval_s=0.1,
                    public_url="https://rujukan.example")


async def test_a_receiver_answers_from_the_mail_and_sees_only_its_own(
    database_url: str, redis_url: str, redis: Any, mailbox: MailCatcher
) -> None:
    app = create_app(settings(database_url, redis_url, mailbox.url))
    async with running(app) as client:
        mine, theirs = matched("ct-ppa"), matched("ct-other")
        await publish(redis, [wrap(mine), wrap(theirs)])
        mail = await mailbox.wait_for_async(lambda m: mine.referral_id in m.get_content(), timeout=20)
        text = mail.get_content()
        assert f"https://rujukan.example/v1/inbox/{mine.decision_id}" in text
        found = TOKEN.search(text)
        assert found is not None
        auth = {"Authorization": f"Bearer {found.group(1)}"}

        listed = (await client.get("/v1/inbox", headers=auth)).json()
        assert [i["id"] for i in listed["items"]] == [mine.decision_id] and listed["contact_id"] == "ct-ppa"
        assert (await client.get(f"/v1/inbox/{theirs.decision_id}", headers=auth)).status_code == 404
        r = await client.post(f"/v1/inbox/{theirs.decision_id}/responses", json={"response": "accepted"},
                              headers=auth)
        assert r.status_code == 404
        assert (await client.get("/v1/inbox")).status_code == 401
        assert (await client.get("/v1/inbox", headers={"Authorization": "Bearer rjk_forged"})).status_code == 401
        # The admin key is an operator's, not a receiver's.
        assert (await client.get("/v1/inbox", headers={"Authorization": f"Bearer {ADMIN_KEY}"})).status_code == 401

        url = f"/v1/inbox/{mine.decision_id}/responses"
        r = await client.post(url, json={"response": "declined"}, headers=auth)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "reason_code"
        r = await client.post(url, json={"response": "completed", "outcome_code": "goals_met"}, headers=auth)
        assert r.status_code == 409 and r.json()["errors"][0]["field"] == "response"
        r = await client.post(url, json={"response": "accepted"}, headers=auth)
        assert r.status_code == 202 and r.json()["status"] == "accepted"
        again = await client.post(url, json={"response": "accepted"}, headers=auth)
        assert again.status_code == 200  # the same answer twice: one event

        async def responses() -> list[dict[str, Any]]:
            return [json.loads(f[b"event"]) for _, f in await redis.xrange(RESPONSES_URGENT)]

        events = await eventually(responses)
        await asyncio.sleep(0.3)
        assert len(await responses()) == 1 and await redis.xlen(RESPONSES) == 0  # a crisis: the urgent lane
        data = events[0]["data"]
        assert events[0]["type"] == "referral.response.v1"
        assert {k: data[k] for k in ("referral_id", "decision_id", "service_id", "response",
                                     "responder_contact_id", "urgency", "risk_flags")} == {
            "referral_id": mine.referral_id, "decision_id": mine.decision_id, "service_id": "svc-ppa-medan",
            "response": "accepted", "responder_contact_id": "ct-ppa", "urgency": "crisis",
            "risk_flags": ["ongoing_violence"]}

        # Matching confirms; then the receiver starts and completes, with an outcome.
        await publish(redis, [wrap(ReferralStatusChanged(
            referral_id=mine.referral_id, decision_id=mine.decision_id, service_id="svc-ppa-medan",
            status="accepted", actor="receiver:ct-ppa", at=utcnow(), urgency="crisis"))])
        assert (await client.post(url, json={"response": "in_progress"}, headers=auth)).status_code == 202
        r = await client.post(url, json={"response": "completed", "outcome_code": "referred_onward"}, headers=auth)
        assert r.status_code == 202
        item = (await client.get(f"/v1/inbox/{mine.decision_id}", headers=auth)).json()
        assert item["status"] == "completed"
        assert [x["response"] for x in item["responses"]] == ["accepted", "in_progress", "completed"]


async def test_late_answers_are_refused_and_closing_notices_reach_the_receiver(
    database_url: str, redis_url: str, redis: Any, mailbox: MailCatcher
) -> None:
    app = create_app(settings(database_url, redis_url, mailbox.url))
    async with running(app) as client:
        issued = await client.post("/v1/recipients/ct-prse/tokens", json={"valid_days": 7},
                                   headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        assert issued.status_code == 201
        auth = {"Authorization": f"Bearer {issued.json()['token']}"}
        late = matched("ct-prse", urgency="routine", expires_in=timedelta(seconds=-1))
        live = matched("ct-prse", urgency="routine")
        cancelled_one = matched("ct-prse", urgency="routine")
        await publish(redis, [wrap(late), wrap(live), wrap(cancelled_one)])

        async def inbox_size() -> bool:
            return len((await client.get("/v1/inbox", headers=auth)).json()["items"]) == 3

        await eventually(inbox_size)
        r = await client.post(f"/v1/inbox/{late.decision_id}/responses", json={"response": "accepted"}, headers=auth)
        assert r.status_code == 409 and "run out" in r.json()["errors"][0]["reason"]

        await publish(redis, [
            wrap(ReferralStatusChanged(referral_id=late.referral_id, decision_id=late.decision_id,
                                       service_id=late.service_id, status="hold_expired", actor="matching",
                                       at=utcnow(), urgency="routine")),
            wrap(ReferralCancelled(referral_id=cancelled_one.referral_id, agency_id="demo",
                                   reason_code="client_withdrew", urgency="routine")),
            wrap(ReferralResponseRefused(referral_id=live.referral_id, decision_id=live.decision_id,
                                         service_id=live.service_id, response="accepted",
                                         responder_contact_id="ct-prse", reason_code="not_current",
                                         urgency="routine")),
        ])
        expired = await mailbox.wait_for_async(lambda m: m["Subject"].startswith("Batas waktu habis"), timeout=20)
        assert late.referral_id in expired["Subject"] and "dialihkan" in expired.get_content()
        cancelled = await mailbox.wait_for_async(lambda m: m["Subject"].startswith("Rujukan dibatalkan"),
                                                 timeout=20)
        assert "klien mengundurkan diri" in cancelled.get_content()
        refused = await mailbox.wait_for_async(lambda m: m["Subject"].startswith("Tanggapan tidak diterapkan"),
                                               timeout=20)
        assert "usulan tidak berlaku lagi" in refused.get_content()
        statuses = {i["id"]: i["status"] for i in (await client.get("/v1/inbox", headers=auth)).json()["items"]}
        assert statuses == {late.decision_id: "expired", cancelled_one.decision_id: "cancelled",
                            live.decision_id: "withdrawn"}
        for m in (expired, cancelled, refused):
            assert TOKEN.search(m.get_content()) is None  # only a proposal carries a token

        # A revoked token opens nothing.
        token_id = issued.json()["id"]
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        assert (await client.delete(f"/v1/recipients/ct-prse/tokens/{token_id}", headers=admin)).status_code == 204
        assert (await client.get("/v1/inbox", headers=auth)).status_code == 401
        assert (await client.delete(f"/v1/recipients/ct-prse/tokens/{token_id}", headers=admin)).status_code == 404
        assert (await client.post("/v1/recipients/ct-prse/tokens", json={}, headers=auth)).status_code == 401


async def test_a_crisis_mail_is_not_queued_behind_routine_mail(database_url: str, mailbox: MailCatcher) -> None:
    """Twenty routine proposals are being mailed when a crisis comes in: it goes next."""
    from notify.bootstrap import MIGRATIONS

    await upgrade(database_url, MIGRATIONS)
    engine = make_engine(database_url)
    db = sessions(engine)

    class Relay:
        def kick(self) -> None:
            pass

    notify = Notify(db, Relay(), Mailer(mailbox.url, "Rujukan <noreply@rujukan.example>"),  # type: ignore[arg-type]
                    poll_interval_s=0.05)
    first_arrived, release = threading.Event(), threading.Event()

    def slow_first(_: Any) -> None:
        # Runs inside the SMTP server before it answers: the sender waits here.
        if not first_arrived.is_set():
            first_arrived.set()
            release.wait(10)

    mailbox.on_message = slow_first
    worker = asyncio.create_task(notify.run())
    try:
        await notify.handle([message(matched(f"ct-{i}", urgency="routine")) for i in range(20)])
        assert await asyncio.to_thread(first_arrived.wait, 10)
        crisis = matched("ct-crisis", urgency="crisis")
        await notify.handle([message(crisis)])
        release.set()
        await eventually(lambda: asyncio.sleep(0, len(mailbox.messages()) == 21), timeout=30)
        order = [m["To"] for m in mailbox.messages()]
        assert order.index("ct-crisis@example.org") == 1, order  # right after the one being sent
    finally:
        mailbox.on_message = None
        release.set()
        notify.stop()
        await worker
        await engine.dispose()
