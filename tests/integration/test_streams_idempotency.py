"""Exactly-once effect on at-least-once delivery, per service, on SQLite and PostgreSQL with
a real Redis: the same event handled again (redelivered, replayed, published twice by the
outbox, or by two replicas at once) has the effect of once — one decision and one seat
hold, one timeline entry, one delivery and one email per recipient."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from sqlalchemy import text

from devtools.mailcatcher import MailCatcher
from devtools.redis_server import RedisProcess, free_port
from intake.bootstrap import create_app as intake_app
from intake.settings import Settings as IntakeSettings
from matching.bootstrap import create_app as matching_app
from matching.settings import Settings as MatchingSettings
from notify.bootstrap import create_app as notify_app
from notify.settings import Settings as NotifySettings
from shared.events import Envelope, EventData, NotificationSent, Recipient, ReferralMatched, new_id, parse_entry
from shared.streams.consumer import Message
from shared.streams.topology import publish
from tests.apps import DEMO_KEY, OPERATOR_KEYS, TEST_KEYS, eventually, running
from tests.integration.test_streams import submitted
from tests.unit.test_referral_request import VALID


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(free_port(), tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(own_redis: RedisProcess) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(own_redis.url)
    yield client
    await client.aclose()


def common(own_redis: RedisProcess, database_url: str) -> dict[str, Any]:
    return dict(redis_url=own_redis.url, database_url=database_url, operator_keys=OPERATOR_KEYS,
                outbox_poll_interval_s=0.2, stream_block_ms=100)


def message(env: Envelope, deliveries: int = 1) -> Message:
    e, data = parse_entry(env.to_fields())
    return Message("test", "0-1", e, data, deliveries)


async def count(app: Any, sql: str, **params: Any) -> int:
    async with app.state.runtime.sessions() as s:
        return int((await s.execute(text(sql), params)).scalar_one())


async def handle_racing(handler: Any, batches: list[list[Message]]) -> None:
    """As two replicas would: at the same time. The loser may fail on the inbox's unique
    key (its transaction rolled back); the consumer retries it, which then does nothing."""
    results = await asyncio.gather(*(handler(b) for b in batches), return_exceptions=True)
    for batch, res in zip(batches, results, strict=True):
        if isinstance(res, Exception):
            await handler(batch)


async def test_matching_decides_once_and_holds_one_seat(
    own_redis: RedisProcess, redis: aioredis.Redis, database_url: str
) -> None:
    app = matching_app(MatchingSettings(seed_demo=True, **common(own_redis, database_url)))
    async with running(app):
        matching = app.state.matching
        seats_before = await count(app, "SELECT sum(seats_available) FROM service")
        events = [submitted(), submitted(urgency="crisis", risk_flags=["ongoing_violence"])]
        first, second = events
        await matching.handle([message(first)])
        await matching.handle([message(first, 2)])  # redelivered
        await matching.handle([message(first, 3), message(first, 3)])  # twice in one batch
        await handle_racing(matching.handle, [[message(second)], [message(second)]])
        # A duplicate from an outbox relay: the same envelope on the stream twice.
        third = submitted()
        await publish(redis, [third, third])
        events.append(third)

        async def decided() -> bool:
            return await count(app, "SELECT count(*) FROM decision WHERE referral_id = :r",
                               r=third.data["referral_id"]) >= 1

        await eventually(decided)
        await asyncio.sleep(0.5)  # the duplicate's turn; it must change nothing

        for e in events:
            rid = e.data["referral_id"]
            assert await count(app, "SELECT count(*) FROM decision WHERE referral_id = :r", r=rid) == 1
            assert await count(app, "SELECT count(*) FROM seat_hold WHERE referral_id = :r", r=rid) <= 1
            assert await count(app, "SELECT count(*) FROM processed_event WHERE event_id = :e", e=e.id) == 1
        holds = await count(app, "SELECT count(*) FROM seat_hold")
        assert holds >= 1  # the demo directory has seats for these referrals
        assert await count(app, "SELECT sum(seats_available) FROM service") == seats_before - holds
        decision_events = await count(app, "SELECT count(*) FROM outbox WHERE event_type LIKE 'referral.%'")
        assert decision_events == len(events)


async def test_intake_records_one_timeline_entry_per_event(
    own_redis: RedisProcess, database_url: str
) -> None:
    app = intake_app(IntakeSettings(encryption_keys=TEST_KEYS, demo_api_key=DEMO_KEY,
                                    **common(own_redis, database_url)))
    async with running(app) as client:
        r = await client.post("/v1/referrals", json=VALID, headers={"Authorization": f"Bearer {DEMO_KEY}"})
        rid = r.json()["id"]
        intake = app.state.intake
        decision_id = new_id()
        matched = wrap(ReferralMatched(
            referral_id=rid, decision_id=decision_id, service_id="svc-x", service_name="Unit PPA",
            organization_name="Polrestabes", resource_kind="police_ppa", pmks_category="korban_tindak_kekerasan",
            region_code="12.71", urgency="routine", reasons_id=["cocok"], reasons_en=["fits"],  # type: ignore[arg-type]
            recipients=[Recipient(receiver_id="01RCV1", contact_id="ct-1", email="a@example.org")],
        ))
        sent = wrap(NotificationSent(referral_id=rid, delivery_id=new_id(), decision_id=decision_id,
                                     receiver_id="01RCV1"))
        await intake.handle([message(matched)])
        await intake.handle([message(matched, 2), message(sent)])
        await handle_racing(intake.handle, [[message(sent, 2)], [message(matched, 3), message(sent, 3)]])

        view = (await client.get(f"/v1/referrals/{rid}", headers={"Authorization": f"Bearer {DEMO_KEY}"})).json()
        kinds = [t["kind"] for t in view["timeline"]]
        assert kinds.count("proposed") == 1
        assert kinds.count("notified") == 1
        assert view["status"] == "proposed"
        assert await count(app, "SELECT count(*) FROM timeline_entry WHERE event_id IN (:a, :b)",
                           a=matched.id, b=sent.id) == 2


async def test_notify_mails_each_recipient_once(
    own_redis: RedisProcess, database_url: str, mailbox: MailCatcher
) -> None:
    app = notify_app(NotifySettings(smtp_url=mailbox.url, mail_poll_interval_s=0.1,
                                    **common(own_redis, database_url)))
    async with running(app):
        notify = app.state.notify
        recipients = [Recipient(receiver_id="01RCV1", contact_id="ct-1", email="fasilitator@example.org"),
                      Recipient(receiver_id="01RCV2", contact_id="ct-2", email="koordinator@example.org")]
        decisions = [wrap(ReferralMatched(
            referral_id=new_id(), decision_id=new_id(), service_id="svc-x", service_name="Kelompok Sebaya",
            organization_name="Yayasan", resource_kind="peer_support", pmks_category="korban_tindak_kekerasan",
            region_code="12.71", urgency="routine", reasons_id=["cocok"], reasons_en=["fits"],  # type: ignore[arg-type]
            recipients=recipients,
        )) for _ in range(3)]
        first, second, third = decisions
        await notify.handle([message(first)])
        await notify.handle([message(first, 2), message(first, 2)])
        await handle_racing(notify.handle, [[message(second)], [message(second), message(first, 3)]])
        # Senders racing (replicas, or rounds of the worker): each delivery is sent once.
        await notify.handle([message(third)])
        await asyncio.gather(*(notify.deliver_due() for _ in range(4)))

        expected = {(d.data["decision_id"], r.receiver_id) for d in decisions for r in recipients}

        async def all_sent() -> bool:
            return await count(app, "SELECT count(*) FROM delivery WHERE state = 'sent'") == len(expected)

        await eventually(all_sent, timeout=20)
        await asyncio.sleep(0.5)  # a late duplicate would arrive now
        async with app.state.runtime.sessions() as s:
            rows = (await s.execute(text("SELECT id, decision_id, receiver_id FROM delivery"))).all()
        assert {(r.decision_id, r.receiver_id) for r in rows} == expected
        assert len(rows) == len(expected)
        message_ids = [m["Message-ID"] for m in mailbox.messages()]
        assert sorted(message_ids) == sorted(f"<{r.id}@rujukan>" for r in rows)  # one mail each, no duplicate


def wrap(data: EventData) -> Envelope:
    return Envelope.wrap(data, source="test", subject=str(getattr(data, "referral_id", "x")))
