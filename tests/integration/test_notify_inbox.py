"""The receivers' inbox on notify, with real Redis, a real database and a real SMTP server:
a proposal mail carries one single-use sign-in link that opens that proposal only, in a
session; an operator's token opens a system's whole inbox; every credential can be listed
and revoked, and a revocation is published for intake. Responses are checked, recorded,
published to matching without personal data; closing notices reach the receiver; urgent
mail is never queued behind routine mail."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import socket
import threading
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import text

from devtools.mailcatcher import MailCatcher
from notify.adapters.mailer import Mailer
from notify.bootstrap import create_app
from notify.service_layer.credentials import Credentials
from notify.service_layer.deliveries import Notify
from notify.settings import Settings
from shared.db import make_engine, sessions, upgrade
from shared.events import (
    Envelope,
    EventData,
    ReceiverRegistered,
    Recipient,
    ReferralCancelled,
    ReferralMatched,
    ReferralResponseRefused,
    ReferralStatusChanged,
    new_id,
    utcnow,
)
from shared.grants import verify
from shared.streams.topology import CREDENTIALS, RESPONSES, RESPONSES_URGENT, publish
from tests.apps import GRANT_SECRET, ONBOARDING_KEY, OPERATIONS_KEY, OPERATOR_KEYS, bearer, eventually, running
from tests.mails import text_of
from tests.matching_kit import message

LINK = re.compile(r"https?://\S+/signin/([A-Za-z0-9_\-]+)")
TOKEN = re.compile(r"Authorization: Bearer (rjk_[A-Za-z0-9_\-]+)")
COOKIE = "rujukan_session"
ONBOARDING = bearer(ONBOARDING_KEY)


def receiver_of(contact: str) -> str:
    """A stand-in for the receiver id matching issues (a ULID in real life)."""
    return f"rcv-{contact}"[:32]


def matched(contact: str = "ct-ppa", urgency: str = "crisis", expires_in: timedelta = timedelta(hours=4),
            **kw: Any) -> ReferralMatched:
    data: dict[str, Any] = dict(
        referral_id=new_id(), decision_id=new_id(), service_id="svc-ppa-medan", service_name="Unit PPA",
        organization_name="Polrestabes Medan", resource_kind="police_ppa", pmks_category="korban_tindak_kekerasan",
        region_code="12.71.05", urgency=urgency, risk_flags=["ongoing_violence"] if urgency == "crisis" else [],
        hold_expires_at=utcnow() + expires_in, reasons_id=["wilayah Kota Medan"], reasons_en=["area Kota Medan"],
        recipients=[Recipient(receiver_id=receiver_of(contact), contact_id=contact, email=f"{contact}@example.org")])
    data.update(kw)
    return ReferralMatched(**data)


def wrap(data: EventData) -> Envelope:
    return Envelope.wrap(data, source="rujukan/matching", subject=str(getattr(data, "referral_id", "x")))


def settings(database_url: str, redis_url: str, smtp_url: str, **kw: Any) -> Settings:
    return Settings(database_url=database_url, redis_url=redis_url, smtp_url=smtp_url, operator_keys=OPERATOR_KEYS,
                    outbox_poll_interval_s=0.2, stream_block_ms=100, mail_poll_interval_s=0.1,
                    public_url="https://rujukan.example", receiver_grant_secret=GRANT_SECRET, **kw)


async def link_of(mailbox: MailCatcher, proposal: ReferralMatched) -> str:
    """The sign-in code in the proposal's mail (the mail's one link)."""
    mail = await mailbox.wait_for_async(lambda m: proposal.referral_id in text_of(m), timeout=20)
    found = LINK.search(text_of(mail))
    assert found is not None, text_of(mail)
    assert "Authorization" not in text_of(mail)  # no other secret in the mail
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, code: str, session: str | None = None) -> httpx.Response:
    return await client.get(f"/v1/signin/{code}", headers={"Cookie": f"{COOKIE}={session}"} if session else {})


async def mailed_token(mailbox: MailCatcher, to: str, token_id: str) -> str:
    """The system token in the mail that brought it to the receiver's address."""
    mail = await mailbox.wait_for_async(lambda m: m["To"] == to and token_id in text_of(m), timeout=20)
    found = TOKEN.search(text_of(mail))
    assert found is not None, text_of(mail)
    assert mail["Subject"].startswith("Token sistem Rujukan")
    assert text_of(mail).index("Jaga kerahasiaan") < text_of(mail).index("Keep this token secret")
    return found.group(1)


def session_of(r: httpx.Response) -> str:
    """The session cookie the sign-in set (sent back by hand: the test client speaks http
    and the cookie is Secure, as the public address is https)."""
    found = re.search(rf"{COOKIE}=([^;]+)", r.headers["set-cookie"])
    assert found is not None
    return found.group(1)


def with_session(session: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={session}"}


async def test_a_mail_link_signs_in_once_to_that_proposal_only(
    database_url: str, redis_url: str, redis: Any, mailbox: MailCatcher
) -> None:
    app = create_app(settings(database_url, redis_url, mailbox.url))
    async with running(app) as client:
        mine, also_mine, theirs = matched("ct-ppa"), matched("ct-ppa"), matched("ct-other")
        await publish(redis, [wrap(mine), wrap(also_mine), wrap(theirs)])
        code = await link_of(mailbox, mine)

        r = await sign_in(client, code)
        assert r.status_code == 303
        assert r.headers["location"] == f"/v1/inbox/{mine.decision_id}"
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["referrer-policy"] == "no-referrer"
        cookie = r.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=lax" in cookie
        assert "secure" in cookie
        assert "path=/" in cookie
        session = session_of(r)
        auth = with_session(session)

        # The link works once: a second use (a forwarded mail, a replay) opens nothing.
        again = await sign_in(client, code)
        assert again.status_code == 410
        assert "already used or has expired" in again.json()["detail"]
        assert "set-cookie" not in again.headers
        assert mine.referral_id not in again.text

        # The session opens that proposal, and no other: not another of the same receiver's,
        # not another receiver's.
        assert (await client.get(f"/v1/inbox/{mine.decision_id}", headers=auth)).status_code == 200
        listed = (await client.get("/v1/inbox", headers=auth)).json()
        assert [i["id"] for i in listed["items"]] == [mine.decision_id]
        assert listed["receiver_id"] == receiver_of("ct-ppa")
        assert (await client.get(f"/v1/inbox/{also_mine.decision_id}", headers=auth)).status_code == 403
        assert (await client.get(f"/v1/inbox/{theirs.decision_id}", headers=auth)).status_code == 404
        for other in (also_mine, theirs):
            r = await client.post(f"/v1/inbox/{other.decision_id}/responses", json={"response": "accepted"},
                                  headers=auth)
            assert r.status_code in (403, 404)
        assert (await client.get("/v1/inbox")).status_code == 401
        assert (await client.get("/v1/inbox", headers=with_session("rjs_forged"))).status_code == 401
        assert (await client.get("/v1/inbox", headers=bearer("rjk_forged"))).status_code == 401
        # An operator's key is not a receiver's.
        assert (await client.get("/v1/inbox", headers=bearer(ONBOARDING_KEY))).status_code == 401

        # The same receiver's next mail, followed in the same browser, adds its proposal.
        r = await sign_in(client, await link_of(mailbox, also_mine), session)
        assert r.status_code == 303
        assert "set-cookie" not in r.headers
        listed = (await client.get("/v1/inbox", headers=auth)).json()
        assert {i["id"] for i in listed["items"]} == {mine.decision_id, also_mine.decision_id}
        # Another receiver's mail in this browser starts that receiver's own session.
        r = await sign_in(client, await link_of(mailbox, theirs), session)
        assert r.status_code == 303
        assert session_of(r) != session
        assert (await client.get(f"/v1/inbox/{theirs.decision_id}", headers=auth)).status_code == 404

        url = f"/v1/inbox/{mine.decision_id}/responses"
        r = await client.post(url, json={"response": "declined"}, headers=auth)
        assert r.status_code == 422
        assert r.json()["errors"][0]["field"] == "reason_code"
        r = await client.post(url, json={"response": "completed", "outcome_code": "goals_met"}, headers=auth)
        assert r.status_code == 409
        assert r.json()["errors"][0]["field"] == "response"
        r = await client.post(url, json={"response": "accepted"}, headers=auth)
        assert r.status_code == 202
        assert r.json()["status"] == "accepted"
        again = await client.post(url, json={"response": "accepted"}, headers=auth)
        assert again.status_code == 200  # the same answer twice: one event

        async def responses() -> list[dict[str, Any]]:
            return [json.loads(f[b"event"]) for _, f in await redis.xrange(RESPONSES_URGENT)]

        events = await eventually(responses)
        await asyncio.sleep(0.3)
        assert len(await responses()) == 1
        assert await redis.xlen(RESPONSES) == 0  # a crisis: the urgent lane
        data = events[0]["data"]
        assert events[0]["type"] == "referral.response.v2"
        assert {k: data[k] for k in ("referral_id", "decision_id", "service_id", "response",
                                     "responder_receiver_id", "urgency", "risk_flags")} == {
            "referral_id": mine.referral_id, "decision_id": mine.decision_id, "service_id": "svc-ppa-medan",
            "response": "accepted", "responder_receiver_id": receiver_of("ct-ppa"), "urgency": "crisis",
            "risk_flags": ["ongoing_violence"]}

        # Matching confirms: the proposal offers a grant for this receiver, bound to this session.
        await publish(redis, [wrap(ReferralStatusChanged(
            referral_id=mine.referral_id, decision_id=mine.decision_id, service_id="svc-ppa-medan",
            status="accepted", actor=f"receiver:{receiver_of('ct-ppa')}", at=utcnow(), urgency="crisis"))])

        async def offer() -> dict[str, Any] | None:
            return (await client.get(f"/v1/inbox/{mine.decision_id}", headers=auth)).json()["personal_data"]

        grant = verify(GRANT_SECRET, (await eventually(offer))["authorization"].removeprefix("Bearer "))
        assert (grant.receiver_id, grant.referral_id) == (receiver_of("ct-ppa"), mine.referral_id)
        assert grant.expires_at <= utcnow() + timedelta(minutes=10, seconds=1)
        assert (await client.post(url, json={"response": "in_progress"}, headers=auth)).status_code == 202
        r = await client.post(url, json={"response": "completed", "outcome_code": "referred_onward"}, headers=auth)
        assert r.status_code == 202
        item = (await client.get(f"/v1/inbox/{mine.decision_id}", headers=auth)).json()
        assert item["status"] == "completed"
        assert [x["response"] for x in item["responses"]] == ["accepted", "in_progress", "completed"]

        # Signing out revokes the session; its id (only) is published for intake.
        assert (await client.post("/v1/signout", headers=auth)).status_code == 204
        assert (await client.get("/v1/inbox", headers=auth)).status_code == 401

        async def revoked() -> list[dict[str, Any]]:
            return [json.loads(f[b"event"]) for _, f in await redis.xrange(CREDENTIALS)]

        events = await eventually(revoked)
        assert [(e["type"], e["data"]) for e in events] == [
            ("receiver.credential_revoked.v1", {"credential_id": grant.credential_id})]


async def test_an_expired_link_opens_nothing(database_url: str, redis_url: str, redis: Any,
                                             mailbox: MailCatcher) -> None:
    app = create_app(settings(database_url, redis_url, mailbox.url))
    async with running(app) as client:
        proposal = matched("ct-late", urgency="routine")
        await publish(redis, [wrap(proposal)])
        code = await link_of(mailbox, proposal)
        async with app.state.runtime.sessions() as s, s.begin():
            await s.execute(text("UPDATE signin_code SET expires_at = :t"), {"t": utcnow() - timedelta(seconds=1)})
        r = await sign_in(client, code)
        assert r.status_code == 410
        assert "set-cookie" not in r.headers
        assert "/renew" in r.json()["detail"]
        assert (await sign_in(client, "never-issued")).status_code == 410

        # Asking for a new one mails the proposal again, with a new link, to the same address
        # (the answer holds nothing); once per link.
        renew = await client.post(f"/v1/signin/{code}/renew")
        assert renew.status_code == 202
        assert proposal.referral_id not in renew.text
        assert (await client.post("/v1/signin/never-issued/renew")).status_code == 202

        async def mails() -> list[Any]:
            found = [m for m in mailbox.messages() if proposal.referral_id in text_of(m)]
            return found if len(found) == 2 else []

        first, second = await eventually(mails, timeout=20)
        assert second["To"] == first["To"] == "ct-late@example.org"
        fresh = LINK.search(text_of(second))
        assert fresh is not None
        assert fresh.group(1) != code
        assert (await sign_in(client, fresh.group(1))).status_code == 303
        assert (await client.post(f"/v1/signin/{code}/renew")).status_code == 202
        await asyncio.sleep(0.5)
        assert len([m for m in mailbox.messages() if proposal.referral_id in text_of(m)]) == 2


async def test_operators_issue_list_and_revoke_a_systems_token_mailed_to_the_receiver_only(
    database_url: str, redis_url: str, redis: Any, mailbox: MailCatcher
) -> None:
    app = create_app(settings(database_url, redis_url, mailbox.url))
    async with running(app) as client:
        receiver = "01PRSERECEIVER"
        r = await client.post(f"/v1/receivers/{receiver}/tokens", json={"valid_days": 7}, headers=ONBOARDING)
        assert r.status_code == 404  # notify knows the receivers matching issued, no other
        assert (await client.get(f"/v1/receivers/{receiver}/credentials", headers=ONBOARDING)).status_code == 404
        await publish(redis, [Envelope.wrap(ReceiverRegistered(
            receiver_id=receiver, organization_id="org-dinsos-kupang", service_id="svc-prse-kupang",
            contact_id="ct-prse", contact_email="prse@example.org"), source="rujukan/matching", subject=receiver)])

        async def issued() -> httpx.Response | None:
            r = await client.post(f"/v1/receivers/{receiver}/tokens", json={"valid_days": 7}, headers=ONBOARDING)
            return r if r.status_code == 202 else None

        answer = await eventually(issued)
        # The operator learns the token's id, expiry and where it went (masked): never the token.
        token = answer.json()
        assert set(token) == {"id", "receiver_id", "expires_at", "delivered_to"}
        assert token["receiver_id"] == receiver
        assert token["delivered_to"] == "p***@example.org"
        assert "rjk_" not in answer.text
        secret = await mailed_token(mailbox, "prse@example.org", token["id"])
        auth = bearer(secret)
        # The database keeps its hash only: not the token, not in the mail's delivery row either.
        async with app.state.runtime.sessions() as s:
            hashes = (await s.execute(text("SELECT token_sha256 FROM receiver_token WHERE id = :id"),
                                      {"id": token["id"]})).scalars().all()
            bodies = (await s.execute(text("SELECT body FROM delivery WHERE kind = 'system_token'"))).scalars().all()
        assert hashes == [hashlib.sha256(secret.encode()).hexdigest()]
        assert len(bodies) == 1
        assert secret not in bodies[0]
        assert "rjk_" not in bodies[0]
        # Only the onboarding role issues, lists and revokes; and never without a key.
        assert (await client.post(f"/v1/receivers/{receiver}/tokens", json={},
                                  headers=bearer(OPERATIONS_KEY))).status_code == 403
        assert (await client.get(f"/v1/receivers/{receiver}/credentials", headers=auth)).status_code == 401

        p = matched("ct-prse", urgency="routine", recipients=[Recipient(
            receiver_id=receiver, contact_id="ct-prse", email="prse@example.org")])
        other = matched("ct-prse", urgency="routine")  # the same HSDS contact id, another receiver
        await publish(redis, [wrap(p), wrap(other)])

        async def inbox() -> list[str]:
            return [i["id"] for i in (await client.get("/v1/inbox", headers=auth)).json()["items"]]

        await eventually(inbox)
        await asyncio.sleep(0.3)
        assert await inbox() == [p.decision_id]  # the whole inbox of this receiver, no other's
        assert (await client.get(f"/v1/inbox/{other.decision_id}", headers=auth)).status_code == 404

        listed = (await client.get(f"/v1/receivers/{receiver}/credentials", headers=ONBOARDING)).json()
        assert [(c["id"], c["kind"], c["source"]) for c in listed["items"]] == [
            (token["id"], "token", "operator:test-onboarding")]
        assert listed["items"][0]["last_used_at"] is not None
        assert listed["items"][0]["revoked_at"] is None
        assert secret not in json.dumps(listed)

        url = f"/v1/receivers/{receiver}/credentials/{token['id']}"
        assert (await client.delete(f"/v1/receivers/rcv-ct-prse/credentials/{token['id']}",
                                    headers=ONBOARDING)).status_code == 404  # another receiver's id
        assert (await client.delete(url, headers=ONBOARDING)).status_code == 204
        assert (await client.get("/v1/inbox", headers=auth)).status_code == 401
        assert (await client.delete(url, headers=ONBOARDING)).status_code == 404
        listed = (await client.get(f"/v1/receivers/{receiver}/credentials", headers=ONBOARDING)).json()
        assert listed["items"][0]["revoked_at"] is not None

        async def revoked() -> list[dict[str, Any]]:
            return [json.loads(f[b"event"])["data"] for _, f in await redis.xrange(CREDENTIALS)]

        assert await eventually(revoked) == [{"credential_id": token["id"]}]
        # A token's mail belongs to no referral: it never reaches the referral's timeline.
        async with app.state.runtime.sessions() as s:
            assert not (await s.execute(text("SELECT count(*) FROM outbox WHERE event_type LIKE 'notification.%'"
                                             " AND envelope LIKE :id"), {"id": f"%{token['id']}%"})).scalar()


async def test_a_systems_token_needs_an_address_the_directory_gave(
    database_url: str, redis_url: str, redis: Any, mailbox: MailCatcher
) -> None:
    """A receiver registered without an address (an event from before addresses were
    carried) gets no token: 409, naming the receiver and why. Its next proposal brings the
    directory's address, and from then on its token goes there."""
    app = create_app(settings(database_url, redis_url, mailbox.url))
    async with running(app) as client:
        receiver = receiver_of("ct-noaddr")
        await publish(redis, [Envelope.wrap(ReceiverRegistered(
            receiver_id=receiver, organization_id="org-x", service_id="svc-ppa-medan", contact_id="ct-noaddr"),
            source="rujukan/matching", subject=receiver)])

        async def refused() -> httpx.Response | None:
            r = await client.post(f"/v1/receivers/{receiver}/tokens", json={"valid_days": 1}, headers=ONBOARDING)
            return r if r.status_code == 409 else None

        r = await eventually(refused)
        assert r.headers["content-type"].startswith("application/problem+json")
        error = r.json()["errors"][0]
        assert error["field"] == "receiver_id"
        assert error["receiver_id"] == receiver
        assert error["reason"] == "no address on file to send the token to"
        async with app.state.runtime.sessions() as s:
            assert not (await s.execute(text("SELECT count(*) FROM receiver_token"))).scalar()

        proposal = matched("ct-noaddr", urgency="routine")
        await publish(redis, [wrap(proposal)])
        await link_of(mailbox, proposal)
        r = await client.post(f"/v1/receivers/{receiver}/tokens", json={"valid_days": 1}, headers=ONBOARDING)
        assert r.status_code == 202
        assert r.json()["delivered_to"] == "c***@example.org"
        assert "rjk_" not in r.text
        secret = await mailed_token(mailbox, "ct-noaddr@example.org", r.json()["id"])
        listed = (await client.get("/v1/inbox", headers=bearer(secret))).json()
        assert [i["id"] for i in listed["items"]] == [proposal.decision_id]


async def test_a_systems_token_not_mailed_opens_nothing(database_url: str, mailbox: MailCatcher) -> None:
    """Its token is minted only as its mail goes out: a send that failed, a round that gave
    it back, or a token revoked before its mail went out leave no usable hash behind."""
    from notify.bootstrap import MIGRATIONS

    await upgrade(database_url, MIGRATIONS)
    engine = make_engine(database_url)
    db = sessions(engine)

    class Relay:
        def kick(self) -> None:
            pass

    relay: Any = Relay()
    with socket.socket() as sock:  # where no SMTP server listens
        sock.bind(("127.0.0.1", 0))
        nobody = f"smtp://127.0.0.1:{sock.getsockname()[1]}"
    notify = Notify(db, relay, Mailer(nobody, "Rujukan <noreply@rujukan.example>", timeout=2))
    credentials = Credentials(db, relay)

    async def hashes() -> list[str | None]:
        async with db() as s:
            return list((await s.execute(text("SELECT token_sha256 FROM receiver_token ORDER BY id"))).scalars())

    first_arrived, release = threading.Event(), threading.Event()

    def slow_first(_: Any) -> None:
        if not first_arrived.is_set():
            first_arrived.set()
            release.wait(10)

    try:
        await notify.handle([message(matched("ct-sys", urgency="routine"))])
        issued = await credentials.issue_token(receiver_of("ct-sys"), timedelta(days=1), "operator:test")
        assert issued.delivered_to == "c***@example.org"
        assert await hashes() == [None]
        # SMTP down: the token minted for the attempt is discarded with it.
        assert await notify.deliver_due() == 2
        assert await hashes() == [None]

        # A round giving way to urgent mail gives the token's mail back, and forgets its token.
        notify.mailer = Mailer(mailbox.url, "Rujukan <noreply@rujukan.example>")
        mailbox.on_message = slow_first
        async with db() as s, s.begin():
            await s.execute(text("UPDATE delivery SET next_attempt_at = :t"), {"t": utcnow() - timedelta(seconds=1)})
        round_ = asyncio.create_task(notify.deliver_due())
        assert await asyncio.to_thread(first_arrived.wait, 10)
        await notify.handle([message(matched("ct-crisis", urgency="crisis"))])
        release.set()
        assert await round_ == 1
        assert await hashes() == [None]
        assert await notify.deliver_due() == 2  # the crisis, then the token
        secret = await mailed_token(mailbox, "ct-sys@example.org", issued.id)
        assert await hashes() == [hashlib.sha256(secret.encode()).hexdigest()]
        assert await credentials.by_token(secret) is not None

        # Revoked before its mail went out: no token is minted, no mail sent.
        again = await credentials.issue_token(receiver_of("ct-sys"), timedelta(days=1), "operator:test")
        assert await credentials.revoke(receiver_of("ct-sys"), again.id)
        mails = len(mailbox.messages())
        assert await notify.deliver_due() == 0
        assert len(mailbox.messages()) == mails
        async with db() as s:
            row = (await s.execute(text("SELECT token_sha256, revoked_at FROM receiver_token WHERE id = :id"),
                                   {"id": again.id})).one()
            state = (await s.execute(text("SELECT state FROM delivery WHERE decision_id = :id"),
                                     {"id": again.id})).scalar()
        assert row[0] is None
        assert row[1] is not None
        assert state == "failed"
    finally:
        mailbox.on_message = None
        release.set()
        await notify.mailer.close()
        await engine.dispose()


async def test_late_answers_are_refused_and_closing_notices_reach_the_receiver(
    database_url: str, redis_url: str, redis: Any, mailbox: MailCatcher
) -> None:
    app = create_app(settings(database_url, redis_url, mailbox.url))
    async with running(app) as client:
        late = matched("ct-prse", urgency="routine", expires_in=timedelta(seconds=-1))
        live = matched("ct-prse", urgency="routine")
        cancelled_one = matched("ct-prse", urgency="routine")
        await publish(redis, [wrap(late), wrap(live), wrap(cancelled_one)])

        async def issued() -> str | None:  # once notify has the proposals (and knows their receiver)
            r = await client.post(f"/v1/receivers/{receiver_of('ct-prse')}/tokens", json={"valid_days": 7},
                                  headers=ONBOARDING)
            return r.json()["id"] if r.status_code == 202 else None

        token = await mailed_token(mailbox, "ct-prse@example.org", await eventually(issued))

        async def all_three() -> bool:
            return len((await client.get("/v1/inbox", headers=bearer(token))).json()["items"]) == 3

        await eventually(all_three)
        auth = bearer(token)
        r = await client.post(f"/v1/inbox/{late.decision_id}/responses", json={"response": "accepted"}, headers=auth)
        assert r.status_code == 409
        assert "run out" in r.json()["errors"][0]["reason"]

        await publish(redis, [
            wrap(ReferralStatusChanged(referral_id=late.referral_id, decision_id=late.decision_id,
                                       service_id=late.service_id, status="hold_expired", actor="matching",
                                       at=utcnow(), urgency="routine")),
            wrap(ReferralCancelled(referral_id=cancelled_one.referral_id, agency_id="demo",
                                   reason_code="client_withdrew", urgency="routine")),
            wrap(ReferralResponseRefused(referral_id=live.referral_id, decision_id=live.decision_id,
                                         service_id=live.service_id, response="accepted",
                                         responder_receiver_id=receiver_of("ct-prse"), reason_code="not_current",
                                         urgency="routine")),
        ])
        expired = await mailbox.wait_for_async(lambda m: m["Subject"].startswith("Batas waktu habis"), timeout=20)
        assert late.referral_id in expired["Subject"]
        assert "dialihkan" in text_of(expired)
        cancelled = await mailbox.wait_for_async(lambda m: m["Subject"].startswith("Rujukan dibatalkan"),
                                                 timeout=20)
        assert "klien mengundurkan diri" in text_of(cancelled)
        refused = await mailbox.wait_for_async(lambda m: m["Subject"].startswith("Tanggapan tidak diterapkan"),
                                               timeout=20)
        assert "usulan tidak berlaku lagi" in text_of(refused)
        statuses = {i["id"]: i["status"] for i in (await client.get("/v1/inbox", headers=auth)).json()["items"]}
        assert statuses == {late.decision_id: "expired", cancelled_one.decision_id: "cancelled",
                            live.decision_id: "withdrawn"}
        for m in (expired, cancelled, refused):
            assert LINK.search(text_of(m)) is None  # only a proposal carries a sign-in link


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
