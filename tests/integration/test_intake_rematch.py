"""Match again, against real Redis, a real database and the real SMTP catcher: the agency asks
matching to try an unmatched or waitlisted referral again (POST /v1/referrals/{id}/rematch,
or the button on its referral page with the form token); the timeline step and
`referral.rematch_requested` leave in one transaction, through the outbox, in the
submissions' lane for the referral's urgency, with ids and codes only. Anything else is
refused (409 naming the status), another agency's referral is not told apart (404)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from devtools.mailcatcher import MailCatcher
from intake.bootstrap import DEMO_STAFF_EMAIL, create_app
from shared.events import (
    Envelope,
    HandoverContact,
    ReferralEscalated,
    ReferralProposalWithdrawn,
    ReferralUnmatched,
    ReferralWaitlisted,
    utcnow,
)
from shared.streams.topology import SUBMITTED, SUBMITTED_URGENT, publish
from shared.web.csrf import CSRF_COOKIE, CSRF_FIELD
from tests.apps import DEMO_KEY, ONBOARDING_KEY, bearer, eventually, running
from tests.integration import test_agency_pages as pages
from tests.integration.test_intake import AUTH, body, matched, settings
from tests.integration.test_intake_handover import CASEWORKER, HANDOVER, changed
from tests.integration.test_intake_webhooks import Receiver, register
from tests.integration.test_intake_webhooks import settings as webhook_settings

PERSONAL = ("Siti", "3456", "s@example.org", "cerita", '"SN"')


def no_match(rid: str, kind: type[ReferralUnmatched] | type[ReferralWaitlisted] = ReferralUnmatched,
             urgency: str = "routine") -> Envelope:
    return Envelope.wrap(kind(
        referral_id=rid, decision_id="D0", pmks_category="korban_tindak_kekerasan", region_code="12.71",
        urgency=urgency, reasons_id=["tidak ada layanan di wilayah ini"], reasons_en=["no service in this area"]),  # type: ignore[arg-type]
        source="rujukan/matching", subject=rid)


async def rematches(redis: Any, stream: str) -> list[dict[str, Any]]:
    events = [json.loads(f[b"event"]) for _, f in await redis.xrange(stream)]
    return [e for e in events if e["type"] == "referral.rematch_requested.v1"]


async def status_of(client: httpx.AsyncClient, rid: str, want: str) -> dict[str, Any] | None:
    view = (await client.get(f"/v1/referrals/{rid}", headers=AUTH)).json()
    return view if view["status"] == want else None


async def test_match_again_through_the_api(database_url: str, redis_url: str, redis: Any) -> None:
    app = create_app(settings(database_url, redis_url))
    async with running(app) as client:
        rid = (await client.post("/v1/referrals", json=body("PPA-RM-1"), headers=AUTH)).json()["id"]
        url = f"/v1/referrals/{rid}/rematch"
        # Submitted, not yet decided: nothing to match again.
        early = await client.post(url, headers=AUTH)
        assert early.status_code == 409
        assert early.headers["content-type"] == "application/problem+json"
        assert early.json()["errors"][0]["field"] == "status"
        assert early.json()["errors"][0]["status"] == "submitted"
        assert "submitted" in early.json()["detail"]

        await publish(redis, [no_match(rid)])
        await eventually(lambda: status_of(client, rid, "unmatched"))

        # Another agency's referral, an unknown one, no key, a wrong key: refused, nothing sent.
        await app.state.intake.ensure_agency("other", "Dinas Lain", "other-key")
        assert (await client.post(url, headers={"Authorization": "Bearer other-key"})).status_code == 404
        assert (await client.post("/v1/referrals/01NOSUCHREFERRAL000000000/rematch", headers=AUTH)).status_code == 404
        assert (await client.post(url)).status_code == 401
        assert (await client.post(url, headers={"Authorization": "Bearer rja_guess"})).status_code == 401
        assert await rematches(redis, SUBMITTED) == []

        r = await client.post(url, headers=AUTH)
        assert r.status_code == 202, r.text
        view = r.json()
        assert view["status"] == "unmatched"  # until matching answers
        last = view["timeline"][-1]
        assert (last["kind"], last["status"], last["actor"]) == ("rematch_requested", None, "agency:demo")
        assert last["reason"]["id"].startswith("Lembaga perujuk meminta pencocokan ulang")

        events = await eventually(lambda: rematches(redis, SUBMITTED))
        assert len(events) == 1
        assert events[0]["subject"] == rid
        data = events[0]["data"]
        assert set(data) == {"referral_id", "agency_id", "requested_at", "urgency", "risk_flags"}
        assert (data["referral_id"], data["agency_id"], data["urgency"]) == (rid, "demo", "routine")
        for secret in PERSONAL:
            assert secret not in json.dumps(events), secret
        assert await rematches(redis, SUBMITTED_URGENT) == []

        # Matching's answer: an unmatched referral may be proposed now.
        await publish(redis, [matched(rid)])
        await eventually(lambda: status_of(client, rid, "proposed"))
        refused = await client.post(url, headers=AUTH)
        assert refused.status_code == 409
        assert refused.json()["errors"][0]["status"] == "proposed"
        assert len(await rematches(redis, SUBMITTED)) == 1

        # A waitlisted crisis goes in the urgent lane, as its submission did.
        crisis = body("PPA-RM-2", urgency="crisis", risk_flags=["child_at_risk"])
        urgent = (await client.post("/v1/referrals", json=crisis, headers=AUTH)).json()["id"]
        await publish(redis, [no_match(urgent, ReferralWaitlisted, urgency="crisis")])
        await eventually(lambda: status_of(client, urgent, "waitlisted"))
        assert (await client.post(f"/v1/referrals/{urgent}/rematch", headers=AUTH)).status_code == 202
        events = await eventually(lambda: rematches(redis, SUBMITTED_URGENT))
        assert [(e["data"]["referral_id"], e["data"]["risk_flags"]) for e in events] == [(urgent, ["child_at_risk"])]

        # An unmatched referral may be cancelled (else a change in the directory could still match
        # it), and a cancelled one is not matched again.
        lone = (await client.post("/v1/referrals", json=body("PPA-RM-3"), headers=AUTH)).json()["id"]
        await publish(redis, [no_match(lone)])
        await eventually(lambda: status_of(client, lone, "unmatched"))
        cancelled = await client.post(f"/v1/referrals/{lone}/cancel", json={"reason_code": "needs_met_elsewhere"},
                                      headers=AUTH)
        assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
        gone = await client.post(f"/v1/referrals/{lone}/rematch", headers=AUTH)
        assert (gone.status_code, gone.json()["errors"][0]["status"]) == (409, "cancelled")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_page_offers_match_again_with_its_form_token_and_shows_the_handover_once_accepted(
        database_url: str, redis_url: str, redis: Any, mailbox: MailCatcher) -> None:
    app = create_app(pages.settings(database_url, redis_url, mailbox))
    async with running(app) as client:
        onboarding = bearer(ONBOARDING_KEY)
        assert (await client.post("/v1/agencies", json={"id": "dinsos-kupang", "name": "Dinas Sosial Kupang"},
                                  headers=onboarding)).status_code == 201
        assert (await client.post("/v1/agencies/dinsos-kupang/staff", json={"email": "budi@dinsos-kupang.example"},
                                  headers=onboarding)).status_code == 201
        await pages.sign_in(client, mailbox, DEMO_STAFF_EMAIL)

        # The form's caseworker fields: a phone without a name is refused next to its field.
        values = {**pages.FORM, "caseworker_name": "", "caseworker_phone": "telepon saya", "caseworker_email": ""}
        refused = await pages.submit(client, values)
        assert refused.status_code == 422
        assert "Pendamping kasus: tulis nama pendamping kasus" in refused.text
        assert "Telepon pendamping kasus: angka" in refused.text
        assert 'value="telepon saya"' in refused.text  # what was typed stays
        values = {**pages.FORM, "caseworker_name": "Rina Hutapea", "caseworker_phone": "+62 61 455 0123",
                  "caseworker_email": "rina@ppa-medan.go.id"}
        sent = await pages.submit(client, values)
        assert sent.status_code == 303, sent.text
        path = sent.headers["location"]
        rid = path.rsplit("/", 1)[1]
        referral, _timeline = await app.state.intake.get("demo", rid)
        assert app.state.intake.caseworker(referral) == {
            "name": "Rina Hutapea", "phone": "+62 61 455 0123", "email": "rina@ppa-medan.go.id"}

        page = (await client.get(path)).text
        assert "Cocokkan ulang" not in page  # submitted: nothing to match again
        await publish(redis, [no_match(rid)])
        await eventually(lambda: status_of_page(client, path, "Tidak ada layanan yang cocok"))
        page = (await client.get(path)).text
        assert f'action="/agency/referrals/{rid}/rematch"' in page
        assert "Cocokkan ulang" in page
        assert "Batalkan rujukan" in page  # or stop it from being matched again

        # Without the form token, or from another site: refused, nothing sent.
        token = client.cookies[CSRF_COOKIE]
        forged = [await client.post(f"{path}/rematch", data={}),
                  await client.post(f"{path}/rematch", data={CSRF_FIELD: "forged"}),
                  await client.post(f"{path}/rematch", data={CSRF_FIELD: token},
                                    headers={"Origin": "https://evil.example"})]
        assert [r.status_code for r in forged] == [403, 403, 403]
        # Another agency's staff: not told apart from no referral.
        async with httpx.AsyncClient(transport=client._transport, base_url="http://test") as kupang:
            await pages.sign_in(kupang, mailbox, "budi@dinsos-kupang.example")
            theirs = await kupang.post(f"{path}/rematch", data={CSRF_FIELD: kupang.cookies[CSRF_COOKIE]})
            assert theirs.status_code == 404
        assert await rematches(redis, SUBMITTED) == []

        done = await client.post(f"{path}/rematch", data={CSRF_FIELD: token})
        assert done.status_code == 303
        assert done.headers["location"] == path
        events = await eventually(lambda: rematches(redis, SUBMITTED))
        assert [e["data"]["referral_id"] for e in events] == [rid]
        page = (await client.get(path)).text
        assert "Diminta dicocokkan ulang" in page
        assert "Lembaga perujuk meminta pencocokan ulang" in page

        # Proposed: no button, no handover yet; accepted: whom to call.
        handover = HandoverContact(name="Bu Wati Kelompok", phone="+62 61 777 8899", email="wati@kelompok-a.example")
        await publish(redis, [matched(rid)])
        await eventually(lambda: status_of_page(client, path, "Diusulkan ke layanan"))
        page = (await client.get(path)).text
        assert "Cocokkan ulang" not in page
        assert "Wati" not in page
        assert "777 8899" not in page
        again = await client.post(f"{path}/rematch", data={CSRF_FIELD: token})
        assert again.status_code == 303  # matched meanwhile: the page shows what it is now
        assert len(await rematches(redis, SUBMITTED)) == 1

        await publish(redis, [changed(rid, "accepted", handover=handover)])
        await eventually(lambda: status_of_page(client, path, "Serah terima"))
        page = (await client.get(path)).text
        for fact in ("Bu Wati Kelompok", 'href="tel:+62617778899"', "wati@kelompok-a.example", "Kontak di layanan"):
            assert fact in page, fact
        assert "Rina" not in page  # the agency's own caseworker is not repeated to it
        api = (await client.get(f"/v1/referrals/{rid}", headers=bearer(DEMO_KEY))).json()
        assert api["handover"] == handover.model_dump()
        # A step that moves no status is named on the page (in the page's language).
        await publish(redis, [Envelope.wrap(ReferralProposalWithdrawn(
            referral_id=rid, decision_id="D9", service_id="svc-9", reason_code="accepted_elsewhere", at=utcnow(),
            urgency="routine"), source="rujukan/matching", subject=rid)])
        await eventually(lambda: status_of_page(client, path, "Usulan ditarik"))
        assert "rujukan sudah diterima layanan lain" in (await client.get(path)).text
        client.cookies.set("rujukan_lang", "en")
        english = (await client.get(path)).text
        assert "Proposal withdrawn" in english
        assert "Match again asked" in english
        assert "Handover" in english


async def status_of_page(client: httpx.AsyncClient, path: str, words: str) -> bool:
    return words in (await client.get(path)).text


async def test_the_agencys_webhook_is_told_of_a_rematch_an_escalation_and_a_withdrawal_without_contacts(
    database_url: str, redis_url: str, redis: Any
) -> None:
    receiver = Receiver()
    try:
        async with running(create_app(webhook_settings(database_url, redis_url))) as client:
            hook = await register(client, receiver.url)
            rid = (await client.post("/v1/referrals", json=body("PPA-RM-WH", caseworker=CASEWORKER),
                                     headers=AUTH)).json()["id"]
            await publish(redis, [no_match(rid)])
            await receiver.taken(1)
            assert (await client.post(f"/v1/referrals/{rid}/rematch", headers=AUTH)).status_code == 202
            await receiver.taken(2)
            escalated = Envelope.wrap(ReferralEscalated(
                referral_id=rid, decision_id="D2", previous_decision_id="D1", service_id="svc-2", level=1,
                reason_code="crisis_unanswered", minutes_waited=15, at=utcnow(), urgency="routine"),
                source="rujukan/matching", subject=rid)
            withdrawn = Envelope.wrap(ReferralProposalWithdrawn(
                referral_id=rid, decision_id="D2", service_id="svc-2", reason_code="accepted_elsewhere", at=utcnow(),
                urgency="routine"), source="rujukan/matching", subject=rid)
            await publish(redis, [matched(rid), escalated, changed(rid, "accepted", handover=HANDOVER), withdrawn])
            got = await receiver.taken(6)
            wh = Webhook(hook["secret"])
            # Deliveries go out side by side: each step once, in whatever order they arrive.
            bodies = {(b := wh.verify(data, headers))["type"]: b["data"] for headers, data, _ in got}
            assert sorted(bodies) == sorted([
                "referral.unmatched", "referral.rematch_requested", "referral.proposed", "referral.escalated",
                "referral.accepted", "referral.withdrawn"])
            assert len(got) == len(bodies)  # no step twice
            escalation = bodies["referral.escalated"]
            assert (escalation["level"], escalation["reason_code"]) == (1, "crisis_unanswered")
            assert bodies["referral.withdrawn"]["reason_code"] == "accepted_elsewhere"
            # Ids and codes only: neither the caseworker nor the receiving contact travels.
            raw = json.dumps([data for _, data, _ in got])
            for secret in (*CASEWORKER.values(), *HANDOVER.model_dump().values(), *PERSONAL):
                assert secret not in raw, secret
    finally:
        receiver.close()
