"""Notify's other channels and crisis loops, with a real database, the real SMTP catcher, a
real HTTP receiver of the tests' own and the fake SMS/WhatsApp gateway, on free ports:
a proposal reaches the contact's webhook signed per Standard Webhooks (verified with the
`standardwebhooks` package, with the secret the receiver got by mail), SMS and WhatsApp
carry only the category, the area and the sign-in link, a withdrawn receiver is told, an
escalation alerts the operators by mail and signed webhook, a routine proposal gets one
reminder and none after an answer, and private addresses are refused outside development."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from standardwebhooks import Webhook, WebhookVerificationError

from devtools.fake_gateway import FakeGateway
from devtools.mailcatcher import MailCatcher
from notify.adapters.channels import GatewayChannel, Refused, WebhookChannel, check_url, receiver_secret
from notify.adapters.mailer import Mailer
from notify.bootstrap import MIGRATIONS, create_app
from notify.service_layer.channels import ChannelRounds
from notify.service_layer.deliveries import Notify
from notify.settings import Settings
from shared.db import make_engine, sessions, upgrade
from shared.events import (
    Recipient,
    ReferralEscalated,
    ReferralMatched,
    ReferralProposalWithdrawn,
    new_id,
    utcnow,
)
from shared.streams.topology import publish
from tests.apps import OPERATIONS_KEY, bearer, eventually, running
from tests.integration.test_notify_inbox import matched, receiver_of, settings, wrap
from tests.mails import text_of
from tests.matching_kit import message

FROM = "Rujukan <noreply@rujukan.example>"
KEY = "test-receiver-webhook-key-0123456789abcdef"
OPERATOR_SECRET = "whsec_" + "b3BlcmF0b3JzLXNlY3JldC0wMTIzNDU2Nzg5YWJjZGVm"
PHONE = "+6281234567890"
PERSONAL = ("Polrestabes", "Unit PPA", "@example.org", PHONE)  # what a channel message must not carry


class Relay:
    def kick(self) -> None:
        pass


class Receiver:
    """A real HTTP receiver on a free port: keeps each POST (headers, body); answers 500
    `fail_first` times, then 200."""

    def __init__(self, fail_first: int = 0) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.fail_first = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                outer.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = 500 if outer.fail_first > 0 else 200
                outer.fail_first -= 1
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks/rujukan"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[FakeGateway]:
    g = FakeGateway(tmp_path / "messages").start()
    yield g
    g.stop()


class Parts:
    def __init__(self, database_url: str, mailbox: MailCatcher, channels: dict[str, Any], **kw: Any) -> None:
        self.engine = make_engine(database_url)
        self.rounds = ChannelRounds(sessions(self.engine), channels, public_url="https://rujukan.example",
                                    max_attempts=3)
        self.notify = Notify(sessions(self.engine), Relay(), Mailer(mailbox.url, FROM),  # type: ignore[arg-type]
                             public_url="https://rujukan.example", webhook_key=KEY, channel_rounds=self.rounds, **kw)

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.notify.sessions() as s:
            return (await s.execute(text(sql), params)).scalar()

    async def execute(self, sql: str, **params: Any) -> None:
        async with self.notify.sessions() as s, s.begin():
            await s.execute(text(sql), params)

    async def close(self) -> None:
        await self.notify.mailer.close()
        for c in self.rounds.channels.values():
            await c.close()
        await self.engine.dispose()


async def parts(database_url: str, mailbox: MailCatcher, channels: dict[str, Any], **kw: Any) -> Parts:
    await upgrade(database_url, MIGRATIONS)
    return Parts(database_url, mailbox, channels, **kw)


def reaching(contact: str, url: str, **kw: Any) -> ReferralMatched:
    """A proposal to a contact that prefers its webhook, then SMS, then WhatsApp."""
    return matched(contact, recipients=[Recipient(
        receiver_id=receiver_of(contact), contact_id=contact, email=f"{contact}@example.org", phone=PHONE,
        webhook_url=url, channels=["webhook", "sms", "whatsapp", "email"])], **kw)


def dev_channels(gateway: FakeGateway) -> dict[str, Any]:
    return {"webhook": WebhookChannel(lambda p: receiver_secret(KEY, p["data"]["receiver_id"]), allow_private=True),
            "sms": GatewayChannel("sms", f"{gateway.url}/sms", "sms-key", allow_private=True),
            "whatsapp": GatewayChannel("whatsapp", f"{gateway.url}/wa", "wa-key", allow_private=True)}


async def test_a_proposal_reaches_the_contacts_webhook_signed_and_sms_whatsapp_carry_no_personal_data(
    database_url: str, mailbox: MailCatcher, receiver: Receiver, gateway: FakeGateway,
) -> None:
    p = await parts(database_url, mailbox, dev_channels(gateway))
    try:
        e = reaching("ct-hook", receiver.url, urgency="routine")
        await p.notify.handle([message(e)])
        await p.notify.handle([message(e)])  # redelivered: nothing twice
        assert await p.notify.deliver_due() == 2  # the proposal's mail and the webhook secret's, once
        assert await p.rounds.deliver_due() == 3
        assert await p.rounds.deliver_due() == 0

        # The secret arrives by mail, once, to the contact's address; it verifies the webhook.
        mail = await mailbox.wait_for_async(lambda m: "webhook" in str(m["Subject"]).lower())
        assert mail["To"] == "ct-hook@example.org"
        found = re.search(r"(whsec_[A-Za-z0-9+/=]+)", text_of(mail))
        assert found is not None
        assert found.group(1) == receiver_secret(KEY, receiver_of("ct-hook"))
        assert len(receiver.posts) == 1
        headers, body = receiver.posts[0]
        verified = Webhook(found.group(1)).verify(body, headers)
        assert verified["type"] == "referral.proposed"
        data = verified["data"]
        assert (data["referral_id"], data["decision_id"]) == (e.referral_id, e.decision_id)
        assert data["signin_url"].startswith("https://rujukan.example/signin/")
        assert not any(word in body.decode() for word in PERSONAL)
        # An attacker with another receiver's secret, or a changed body, does not pass.
        with pytest.raises(WebhookVerificationError):
            Webhook(receiver_secret(KEY, receiver_of("ct-other"))).verify(body, headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(found.group(1)).verify(body.replace(b"routine", b"crisis!"), headers)

        texts = {m["channel"]: m for m in gateway.messages()}
        assert set(texts) == {"sms", "whatsapp"}
        assert texts["sms"]["authorization"] == "Bearer sms-key"
        for m in texts.values():
            assert m["to"] == PHONE
            assert re.fullmatch(r"Rujukan: Rujukan baru [^.]+, Kota Medan\. https://rujukan\.example/signin/[\w-]+",
                                m["text"]), m["text"]
            assert not any(word in m["text"] for word in PERSONAL)
            assert e.referral_id not in m["text"]
        # Each message's link is its own single-use code (only its hash is kept).
        assert await p.scalar("SELECT count(*) FROM signin_code WHERE decision_id = :d", d=e.decision_id) == 4
        assert await p.scalar("SELECT count(*) FROM channel_delivery WHERE state = 'sent' AND attempts = 1") == 3

        # A second proposal to the same contact: no second secret mail.
        await p.notify.handle([message(reaching("ct-hook", receiver.url, urgency="routine"))])
        assert await p.notify.deliver_due() == 1
    finally:
        await p.close()


async def test_a_webhook_answering_500_is_retried_with_the_same_id_then_given_up(
    database_url: str, mailbox: MailCatcher, gateway: FakeGateway,
) -> None:
    flaky = Receiver(fail_first=2)
    p = await parts(database_url, mailbox, dev_channels(gateway))
    tallied: list[int] = []

    async def tally(count: int) -> None:  # `rujukan status`'s tally (shared/status.py in the app)
        tallied.append(count)

    p.rounds.tally_failed = tally
    try:
        e = matched("ct-flaky", recipients=[Recipient(receiver_id=receiver_of("ct-flaky"), email="f@example.org",
                                                      webhook_url=flaky.url, channels=["webhook"])])
        await p.notify.handle([message(e)])
        for _ in range(3):
            await p.rounds.deliver_due()
            await p.execute("UPDATE channel_delivery SET next_attempt_at = :t", t=utcnow() - timedelta(seconds=1))
        assert len(flaky.posts) == 3
        assert len({h["webhook-id"] for h, _ in flaky.posts}) == 1
        assert await p.scalar("SELECT state FROM channel_delivery") == "sent"
        assert await p.scalar("SELECT attempts FROM channel_delivery") == 3
        assert tallied == []  # failed twice, then sent: nothing given up

        # Always 500: after max_attempts it is failed for good, with why.
        flaky.fail_first = 99
        e2 = matched("ct-flaky2", recipients=[Recipient(receiver_id=receiver_of("ct-flaky2"), email="g@example.org",
                                                        webhook_url=flaky.url, channels=["webhook"])])
        await p.notify.handle([message(e2)])
        for _ in range(4):
            await p.rounds.deliver_due()
            await p.execute("UPDATE channel_delivery SET next_attempt_at = :t", t=utcnow() - timedelta(seconds=1))
        assert await p.scalar("SELECT state FROM channel_delivery WHERE decision_id = :d", d=e2.decision_id) == "failed"
        assert "500" in await p.scalar("SELECT last_error FROM channel_delivery WHERE decision_id = :d",
                                       d=e2.decision_id)
        assert tallied == [1]
    finally:
        flaky.stop()
        await p.close()


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/x", "https://127.0.0.1/x", "https://localhost/x", "https://10.1.2.3/x",
    "https://192.168.0.10/x", "https://169.254.169.254/latest/meta-data", "https://[::1]/x",
    "https://[fd00::1]/x", "ftp://example.org/x", "https:///nohost",
])
async def test_private_and_odd_addresses_are_refused_outside_development(url: str) -> None:
    with pytest.raises(Refused):
        await check_url(url, allow_private=False)


async def test_ssrf_refusal_when_called_outside_development(
    database_url: str, mailbox: MailCatcher, receiver: Receiver, gateway: FakeGateway,
) -> None:
    production = {
        "webhook": WebhookChannel(lambda p: receiver_secret(KEY, p["data"]["receiver_id"]), allow_private=False),
        "sms": GatewayChannel("sms", f"{gateway.url}/sms", "k", allow_private=False)}
    p = await parts(database_url, mailbox, production)
    try:
        await p.notify.handle([message(reaching("ct-ssrf", receiver.url))])
        await p.rounds.deliver_due()
        assert receiver.posts == []
        assert gateway.messages() == []
        errors = {r[1]: r[0] for r in await _rows(p, "SELECT last_error, channel FROM channel_delivery")}
        assert "Refused" in errors["webhook"], errors
        assert "Refused" in errors["sms"], errors
        # WhatsApp has no gateway here: dropped, not retried.
        assert await p.scalar("SELECT state FROM channel_delivery WHERE channel = 'whatsapp'") == "dropped"
    finally:
        await p.close()


async def _rows(p: Parts, sql: str) -> list[Any]:
    async with p.notify.sessions() as s:
        return list((await s.execute(text(sql))).all())


async def test_a_withdrawn_receiver_gets_the_notice_and_its_proposal_shows_closed(
    database_url: str, mailbox: MailCatcher,
) -> None:
    p = await parts(database_url, mailbox, {})
    try:
        first = matched("ct-first")
        second = matched("ct-second", referral_id=first.referral_id)
        await p.notify.handle([message(first), message(second)])
        await p.notify.deliver_due()
        # The second receiver accepted first; the first one's proposal is withdrawn.
        await p.execute("UPDATE proposal SET status = 'accepted' WHERE decision_id = :d", d=second.decision_id)
        gone = ReferralProposalWithdrawn(referral_id=first.referral_id, decision_id=first.decision_id,
                                         service_id=first.service_id, receiver_ids=[receiver_of("ct-first")],
                                         reason_code="accepted_elsewhere", at=utcnow(), urgency="crisis")
        await p.notify.handle([message(gone)])
        await p.notify.handle([message(gone)])  # redelivered under a new envelope: one notice
        # Withdrawing the accepted one (a stray event) changes nothing.
        await p.notify.handle([message(gone.model_copy(update={"decision_id": second.decision_id,
                                                               "receiver_ids": []}))])
        assert await p.notify.deliver_due() == 1
        notice = await mailbox.wait_for_async(lambda m: "Usulan ditutup" in str(m["Subject"]))
        assert notice["To"] == "ct-first@example.org"
        assert "another service accepted it first" in text_of(notice)
        assert await p.scalar("SELECT status FROM proposal WHERE decision_id = :d", d=first.decision_id) == "withdrawn"
        assert await p.scalar("SELECT status FROM proposal WHERE decision_id = :d", d=second.decision_id) == "accepted"
        assert await p.scalar("SELECT count(*) FROM delivery WHERE kind = 'withdrawn'") == 1
    finally:
        await p.close()


async def test_an_escalation_alerts_the_operators_by_mail_and_signed_webhook(
    database_url: str, mailbox: MailCatcher, receiver: Receiver,
) -> None:
    operators = {"operator_webhook": WebhookChannel(lambda _: OPERATOR_SECRET, allow_private=True, url=receiver.url)}
    p = await parts(database_url, mailbox, operators, operator_emails=("duty1@ops.example", "duty2@ops.example"))
    try:
        first = matched("ct-crisis")
        await p.notify.handle([message(first)])
        up = ReferralEscalated(referral_id=first.referral_id, decision_id=new_id(),
                               previous_decision_id=first.decision_id, service_id="svc-next", level=1,
                               reason_code="crisis_unanswered", minutes_waited=15.2, at=utcnow(), urgency="crisis",
                               risk_flags=["ongoing_violence"])
        await p.notify.handle([message(up)])
        await p.notify.handle([message(up)])  # redelivered: one alert
        await p.notify.deliver_due()
        await p.rounds.deliver_due()
        alert = await mailbox.wait_for_async(lambda m: "ESKALASI" in str(m["Subject"]))
        caught = next(c for c in mailbox.received() if c.message is alert)
        assert sorted(caught.rcpt_tos) == ["duty1@ops.example", "duty2@ops.example"]
        body = text_of(alert)
        for shown in (first.referral_id, up.decision_id, "crisis_unanswered", "Kota Medan", "12.71.05"):
            assert shown in body
        assert not any(word in body for word in PERSONAL)
        assert sum("ESKALASI" in str(m["Subject"]) for m in mailbox.messages()) == 1

        assert len(receiver.posts) == 1
        headers, raw = receiver.posts[0]
        verified = Webhook(OPERATOR_SECRET).verify(raw, headers)
        assert verified["type"] == "referral.escalated"
        assert verified["data"]["previous_decision_id"] == first.decision_id
        assert verified["data"]["region_code"] == "12.71.05"
        assert not any(word in raw.decode() for word in PERSONAL)
        # No operator event goes on the referral's timeline (only the receiver's mails do).
        assert await p.scalar("SELECT count(*) FROM outbox WHERE envelope LIKE '%operator_alert%'") == 0
    finally:
        await p.close()


async def test_no_operator_address_drops_the_alert(database_url: str, mailbox: MailCatcher) -> None:
    p = await parts(database_url, mailbox, {})
    try:
        first = matched("ct-alone")
        await p.notify.handle([message(first)])
        await p.notify.handle([message(ReferralEscalated(
            referral_id=first.referral_id, decision_id="", previous_decision_id=first.decision_id, service_id="",
            level=2, reason_code="crisis_unanswered", minutes_waited=30, at=utcnow(), urgency="crisis"))])
        await p.notify.deliver_due()
        await p.rounds.deliver_due()
        assert await p.scalar("SELECT state FROM delivery WHERE kind = 'operator_alert'") == "dropped"
        assert await p.scalar("SELECT state FROM channel_delivery WHERE kind = 'operator_alert'") == "dropped"
    finally:
        await p.close()


async def test_a_routine_proposal_gets_one_reminder_and_none_after_an_answer(
    database_url: str, mailbox: MailCatcher,
) -> None:
    before = timedelta(seconds=2)
    p = await parts(database_url, mailbox, {}, reminder_before=before)
    second = Notify(p.notify.sessions, Relay(), Mailer(mailbox.url, FROM),  # type: ignore[arg-type]
                    public_url="https://rujukan.example", reminder_before=before)  # another replica
    try:
        waiting = matched("ct-slow", urgency="routine", risk_flags=[], expires_in=timedelta(seconds=4))
        answered = matched("ct-quick", urgency="routine", risk_flags=[], expires_in=timedelta(seconds=4))
        crisis = matched("ct-crisis", expires_in=timedelta(seconds=4))  # keeps no reminder: it escalates
        short = matched("ct-short", urgency="routine", risk_flags=[], expires_in=timedelta(seconds=1))
        await p.notify.handle([message(e) for e in (waiting, answered, crisis, short)])
        await p.notify.deliver_due()
        assert await p.notify.queue_reminders() == 0  # not yet within the window
        await p.execute("UPDATE proposal SET status = 'accepted' WHERE decision_id = :d", d=answered.decision_id)
        await asyncio.sleep(2.3)
        counts = await asyncio.gather(p.notify.queue_reminders(), second.queue_reminders(),
                                      p.notify.queue_reminders())
        assert sum(counts) == 1, counts
        assert await p.notify.queue_reminders() == 0
        assert await p.notify.deliver_due() == 1
        reminder = await mailbox.wait_for_async(lambda m: str(m["Subject"]).startswith("Pengingat"))
        assert reminder["To"] == "ct-slow@example.org"
        assert "https://rujukan.example/signin/" in text_of(reminder)
        assert sum(str(m["Subject"]).startswith("Pengingat") for m in mailbox.messages()) == 1
        assert await p.scalar("SELECT count(*) FROM delivery WHERE kind = 'reminder'") == 1
    finally:
        await second.mailer.close()
        await p.close()


async def test_a_reminder_queued_then_answered_is_dropped(database_url: str, mailbox: MailCatcher) -> None:
    p = await parts(database_url, mailbox, {}, reminder_before=timedelta(seconds=2))
    try:
        e = matched("ct-late", urgency="routine", risk_flags=[], expires_in=timedelta(seconds=3))
        await p.notify.handle([message(e)])
        await p.notify.deliver_due()
        await asyncio.sleep(1.2)
        assert await p.notify.queue_reminders() == 1
        await p.execute("UPDATE proposal SET status = 'declined' WHERE decision_id = :d", d=e.decision_id)
        assert await p.notify.deliver_due() == 0
        assert await p.scalar("SELECT state FROM delivery WHERE kind = 'reminder'") == "dropped"
        assert not any(str(m["Subject"]).startswith("Pengingat") for m in mailbox.messages())
    finally:
        await p.close()


async def test_the_service_sends_a_proposal_on_the_contacts_channels_and_operators_see_the_attempts(
    database_url: str, redis_url: str, redis: Any, mailbox: MailCatcher, receiver: Receiver, gateway: FakeGateway,
) -> None:
    """Through notify as it runs (settings, streams, workers): a proposal from the stream
    reaches the contact's webhook, SMS and WhatsApp; the webhook's secret is mailed to the
    contact; GET /v1/deliveries shows each channel's attempts, never its address."""
    app = create_app(settings(database_url, redis_url, mailbox.url, sms_gateway_url=f"{gateway.url}/sms",
                              sms_gateway_key="k1", whatsapp_gateway_url=f"{gateway.url}/wa",
                              whatsapp_gateway_key="k2", receiver_webhook_key=KEY))
    async with running(app) as client:
        e = reaching("ct-live", receiver.url)
        await publish(redis, [wrap(e)])
        secret_mail = await mailbox.wait_for_async(lambda m: "webhook" in str(m["Subject"]).lower(), timeout=20)
        found = re.search(r"(whsec_[A-Za-z0-9+/=]+)", text_of(secret_mail))
        assert found is not None

        async def all_sent() -> bool:
            r = await client.get("/v1/deliveries", params={"referral_id": e.referral_id},
                                 headers=bearer(OPERATIONS_KEY))
            assert r.status_code == 200
            channels = r.json()["channels"]
            assert sorted(c["channel"] for c in channels) == ["sms", "webhook", "whatsapp"]
            assert PHONE not in r.text
            assert receiver.url not in r.text
            return all(c["state"] == "sent" for c in channels)

        await eventually(all_sent, timeout=20)
        headers, body = receiver.posts[0]
        assert Webhook(found.group(1)).verify(body, headers)["data"]["decision_id"] == e.decision_id
        assert {m["channel"] for m in gateway.messages()} == {"sms", "whatsapp"}


async def test_the_reminder_and_the_closing_notice_follow_the_proposal_on_its_channels(
    database_url: str, mailbox: MailCatcher, receiver: Receiver, gateway: FakeGateway,
) -> None:
    """A contact reached by webhook and SMS gets its reminder there too (once), and its system
    is told, signed, when the proposal closes (here: withdrawn); SMS gets no closing notice."""
    p = await parts(database_url, mailbox, dev_channels(gateway), reminder_before=timedelta(seconds=2))
    try:
        e = reaching("ct-follow", receiver.url, urgency="routine", risk_flags=[], expires_in=timedelta(seconds=3))
        e = e.model_copy(update={"recipients": [e.recipients[0].model_copy(update={"channels": ["webhook", "sms"]})]})
        await p.notify.handle([message(e)])
        await p.notify.deliver_due()
        await p.rounds.deliver_due()
        await asyncio.sleep(1.2)
        assert await p.notify.queue_reminders() == 1
        assert await p.notify.queue_reminders() == 0
        await p.notify.deliver_due()
        assert await p.rounds.deliver_due() == 2
        texts = [m["text"] for m in gateway.messages()]
        assert len(texts) == 2
        assert texts[1].startswith("Rujukan: Pengingat rujukan ")
        assert not any(word in texts[1] for word in PERSONAL)
        secret = receiver_secret(KEY, receiver_of("ct-follow"))
        kinds = [Webhook(secret).verify(b, h)["type"] for h, b in receiver.posts]
        assert kinds == ["referral.proposed", "referral.reminder"]

        await p.notify.handle([message(ReferralProposalWithdrawn(
            referral_id=e.referral_id, decision_id=e.decision_id, service_id=e.service_id,
            receiver_ids=[receiver_of("ct-follow")], reason_code="accepted_elsewhere", at=utcnow(),
            urgency="routine"))])
        assert await p.rounds.deliver_due() == 1
        closed = Webhook(secret).verify(receiver.posts[-1][1], receiver.posts[-1][0])
        assert closed["type"] == "referral.proposal_closed"
        assert closed["data"]["status"] == "withdrawn"
        assert closed["data"]["decision_id"] == e.decision_id
        assert "signin_url" not in closed["data"]
        assert len(gateway.messages()) == 2  # no SMS for a closing notice
    finally:
        await p.close()


async def test_a_channel_reminder_after_an_answer_is_dropped(
    database_url: str, mailbox: MailCatcher, gateway: FakeGateway,
) -> None:
    p = await parts(database_url, mailbox, dev_channels(gateway), reminder_before=timedelta(seconds=2))
    try:
        e = matched("ct-sms", urgency="routine", risk_flags=[], expires_in=timedelta(seconds=3),
                    recipients=[Recipient(receiver_id=receiver_of("ct-sms"), email="s@example.org", phone=PHONE,
                                          channels=["sms"])])
        await p.notify.handle([message(e)])
        await p.rounds.deliver_due()
        await asyncio.sleep(1.2)
        assert await p.notify.queue_reminders() == 1
        await p.execute("UPDATE proposal SET status = 'accepted' WHERE decision_id = :d", d=e.decision_id)
        await p.rounds.deliver_due()
        assert len(gateway.messages()) == 1
        assert await p.scalar("SELECT state FROM channel_delivery WHERE kind = 'reminder'") == "dropped"
    finally:
        await p.close()


def test_the_fake_gateway_refuses_what_is_not_a_message(gateway: FakeGateway) -> None:
    assert httpx.post(f"{gateway.url}/sms", content=b"not json").status_code == 400
    assert httpx.post(f"{gateway.url}/sms", json=["a list"]).status_code == 400
    assert httpx.post(f"{gateway.url}/sms", content=b"x" * (65 * 1024)).status_code == 413
    assert gateway.messages() == []
    assert httpx.post(f"{gateway.url}/sms", json={"to": PHONE, "text": "t"}).status_code == 200
    assert [m["path"] for m in gateway.messages()] == ["/sms"]


def test_production_refuses_an_operators_webhook_without_its_secret_and_a_short_receiver_key() -> None:
    base = {"rujukan_env": "production", "receiver_grant_secret": "g" * 40}
    problems = Settings(**base, operator_alert_webhook_url="https://ops.example/hook").development_values()
    assert any("OPERATOR_ALERT_WEBHOOK_SECRET" in p for p in problems)
    problems = Settings(**base, operator_alert_webhook_url="https://ops.example/hook",
                        operator_alert_webhook_secret=OPERATOR_SECRET,
                        receiver_webhook_key="short").development_values()
    assert not any("OPERATOR_ALERT_WEBHOOK_SECRET" in p for p in problems)
    assert any("RECEIVER_WEBHOOK_KEY" in p for p in problems)
    assert Settings(**base, operator_alert_emails=" a@x.example, ,b@y.example ").operator_emails == (
        "a@x.example", "b@y.example")
