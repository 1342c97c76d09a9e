"""The person's details page on intake, with real Redis and a real database: the receiver's
proposal page posts the grant (never in a URL); intake checks it with the same use case as
GET /v1/receivers/referrals/{id}, shows only what the person consented to, with the
referring agency for handover, and records each view on the timeline. Every refusal is a
page without anything personal."""

from __future__ import annotations

import re
from typing import Any

import httpx

from intake.bootstrap import create_app
from shared.events import Envelope, ReferralStatusChanged, utcnow
from shared.grants import sign
from shared.streams.topology import publish
from tests.apps import GRANT_SECRET, eventually, running
from tests.integration.test_intake import AUTH, body, matched, settings

RECEIVER = "01RECEIVERC1"  # the receiver test_intake.matched proposes to
PERSONAL = ("Siti", "3456", "s@example.org", "cerita")


def grant_for(rid: str, receiver_id: str = RECEIVER, secret: str = GRANT_SECRET) -> str:
    token, _ = sign(secret, referral_id=rid, decision_id="D1", receiver_id=receiver_id, credential_id="01SESSION1")
    return token


def status(rid: str, to: str) -> Envelope:
    return Envelope.wrap(ReferralStatusChanged(
        referral_id=rid, decision_id="D1", service_id="svc-1", status=to, actor=f"receiver:{RECEIVER}",  # type: ignore[arg-type]
        at=utcnow(), urgency="routine"), source="rujukan/matching", subject=rid)


async def csrf(client: httpx.AsyncClient, rid: str) -> str:
    """A page visit gives the browser its form token (a cookie, the client keeps it)."""
    r = await client.get(f"/person/{rid}")
    assert r.status_code == 401
    return str(client.cookies["rujukan_csrf"])


def nothing_personal(r: httpx.Response) -> None:
    for secret in PERSONAL:
        assert secret not in r.text, secret


async def test_the_consented_details_with_a_posted_grant_and_every_refusal_without_them(
    database_url: str, redis_url: str, redis: Any
) -> None:
    app = create_app(settings(database_url, redis_url).model_copy(update={"receiver_grant_secret": GRANT_SECRET}))
    async with running(app) as client:
        referral = body("PPA-PAGE-1")
        referral["client"]["consent"]["contact_by_provider"] = True
        rid = (await client.post("/v1/referrals", json=referral, headers=AUTH)).json()["id"]
        await publish(redis, [matched(rid)])
        token = await csrf(client, rid)
        page = f"/person/{rid}"

        # Opened by address (a bookmark, the back button): nothing personal.
        r = await client.get(page)
        assert "Buka data orang ini lewat tombol" in r.text
        nothing_personal(r)

        # Proposed, not yet accepted: refused, nothing personal.
        async def proposed() -> bool:
            r = await client.post(page, data={"grant": grant_for(rid), "csrf_token": token})
            return r.status_code == 403 and "tidak (lagi) pada Anda" in r.text

        await eventually(proposed)

        await publish(redis, [status(rid, "accepted")])

        async def shown() -> httpx.Response | None:
            r = await client.post(page, data={"grant": grant_for(rid), "csrf_token": token})
            return r if r.status_code == 200 else None

        r = await eventually(shown)
        assert r.headers["cache-control"] == "no-store"
        assert "unsafe-inline" not in r.headers["content-security-policy"]
        for fact in ("Siti", "+62 812 3456 7890", "s@example.org", "cerita", "SN", "Lembaga perujuk"):
            assert fact in r.text, fact
        assert "Data orang yang dirujuk" in r.text

        # Every view is on the agency's timeline.
        view = (await client.get(f"/v1/referrals/{rid}", headers=AUTH)).json()
        seen = [t for t in view["timeline"] if t["kind"] == "personal_data_viewed"]
        assert len(seen) == 1
        assert seen[0]["actor"] == f"receiver:{RECEIVER}"

        # Refusals: no form token, a forged grant, another receiver's, another referral's.
        r = await client.post(page, data={"grant": grant_for(rid)})
        assert r.status_code == 403
        nothing_personal(r)
        r = await client.post(page, data={"grant": grant_for(rid, secret="not-the-secret"), "csrf_token": token})
        assert r.status_code == 401
        assert "tidak sah atau sudah kedaluwarsa" in r.text
        nothing_personal(r)
        r = await client.post(page, data={"grant": grant_for(rid, receiver_id="01RECEIVEROTHER"),
                                          "csrf_token": token})
        assert r.status_code == 403
        nothing_personal(r)
        other = (await client.post("/v1/referrals", json=body("PPA-PAGE-2"), headers=AUTH)).json()["id"]
        r = await client.post(f"/person/{other}", data={"grant": grant_for(rid), "csrf_token": token})
        assert r.status_code == 403
        nothing_personal(r)
        r = await client.post(page, data={"csrf_token": token})
        assert r.status_code == 401
        nothing_personal(r)
        view = (await client.get(f"/v1/referrals/{rid}", headers=AUTH)).json()
        assert len([t for t in view["timeline"] if t["kind"] == "personal_data_viewed"]) == 1  # refusals: none

        # Completed: no longer held, nothing shown.
        await publish(redis, [status(rid, "completed")])

        async def closed() -> bool:
            r = await client.post(page, data={"grant": grant_for(rid), "csrf_token": token})
            nothing_personal(r)
            return r.status_code == 403

        await eventually(closed)


async def test_without_consent_to_be_contacted_the_page_sends_the_receiver_to_the_agency(
    database_url: str, redis_url: str, redis: Any
) -> None:
    app = create_app(settings(database_url, redis_url).model_copy(update={"receiver_grant_secret": GRANT_SECRET}))
    async with running(app) as client:
        rid = (await client.post("/v1/referrals", json=body("PPA-PAGE-3"), headers=AUTH)).json()["id"]
        await publish(redis, [matched(rid), status(rid, "accepted")])
        token = await csrf(client, rid)

        async def shown() -> httpx.Response | None:
            r = await client.post(f"/person/{rid}", data={"grant": grant_for(rid), "csrf_token": token})
            return r if r.status_code == 200 else None

        r = await eventually(shown)
        assert "tidak mengizinkan dihubungi langsung" in r.text
        for secret in ("Siti", "3456", "s@example.org"):
            assert secret not in r.text
        assert re.search(r"Lembaga perujuk", r.text)
