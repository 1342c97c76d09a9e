"""Notify's delivery rounds with a real database and a real (or absent) SMTP server: a
round claims its deliveries and mints their sign-in codes in one transaction and records its sends
in chunks; SMTP being down costs a retry with backoff, and after the last attempt a
`notification.failed` event; a round that gives way to urgent mail gives back what it did
not send (due at once, no sign-in code left behind for a mail never sent)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from datetime import timedelta
from typing import Any

from sqlalchemy import text

from devtools.mailcatcher import MailCatcher
from notify.adapters.mailer import Mailer
from notify.bootstrap import MIGRATIONS
from notify.service_layer.deliveries import Notify
from shared.db import make_engine, sessions, upgrade
from shared.events import utcnow
from tests.apps import eventually
from tests.integration.test_notify_inbox import matched
from tests.matching_kit import message

FROM = "Rujukan <noreply@rujukan.example>"


class Relay:
    def __init__(self) -> None:
        self.kicks = 0

    def kick(self) -> None:
        self.kicks += 1


def nobody_listening() -> str:
    """An SMTP URL where nothing listens: the port was free a moment ago and is closed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"smtp://127.0.0.1:{port}"


async def scalar(notify: Notify, sql: str) -> Any:
    async with notify.sessions() as s:
        return (await s.execute(text(sql))).scalar()


async def make_due(notify: Notify) -> None:
    async with notify.sessions() as s, s.begin():
        await s.execute(text("UPDATE delivery SET next_attempt_at = :t"), {"t": utcnow() - timedelta(seconds=1)})


async def test_smtp_down_backs_off_then_gives_up_with_notification_failed(database_url: str) -> None:
    await upgrade(database_url, MIGRATIONS)
    engine = make_engine(database_url)
    relay = Relay()
    tallied: list[int] = []

    async def tally(count: int) -> None:  # `rujukan status`'s tally (shared/status.py in the app)
        tallied.append(count)

    notify = Notify(sessions(engine), relay, Mailer(nobody_listening(), FROM, timeout=2),  # type: ignore[arg-type]
                    max_attempts=2, record_every=2, tally_failed=tally)
    try:
        await notify.handle([message(matched(f"ct-{i}", urgency="routine")) for i in range(3)])
        assert await notify.deliver_due() == 3
        assert tallied == []  # a first attempt failing is not given up
        assert await scalar(notify, "SELECT count(*) FROM delivery WHERE state = 'pending' AND attempts = 1"
                                    " AND last_error IS NOT NULL") == 3
        assert await notify.deliver_due() == 0  # backed off: nothing due
        assert await scalar(notify, "SELECT count(*) FROM outbox") == 0
        assert relay.kicks == 0

        await make_due(notify)
        assert await notify.deliver_due() == 3
        assert await scalar(notify, "SELECT count(*) FROM delivery WHERE state = 'failed' AND attempts = 2") == 3
        assert await scalar(notify, "SELECT count(*) FROM outbox WHERE event_type = 'notification.failed.v2'") == 3
        assert relay.kicks >= 1
        assert sum(tallied) == 3  # told once recorded, each once
    finally:
        await notify.mailer.close()
        await engine.dispose()


async def test_a_failed_send_is_retried_and_sent_once_smtp_is_back(database_url: str, mailbox: MailCatcher) -> None:
    await upgrade(database_url, MIGRATIONS)
    engine = make_engine(database_url)
    notify = Notify(sessions(engine), Relay(), Mailer(nobody_listening(), FROM, timeout=2),  # type: ignore[arg-type]
                    max_attempts=3)
    try:
        await notify.handle([message(matched("ct-a", urgency="routine")), message(matched("ct-b"))])
        assert await notify.deliver_due() == 2
        notify.mailer = Mailer(mailbox.url, FROM)
        await make_due(notify)
        assert await notify.deliver_due() == 2
        assert await scalar(notify, "SELECT count(*) FROM delivery WHERE state = 'sent' AND attempts = 2") == 2
        assert await scalar(notify, "SELECT count(*) FROM outbox WHERE event_type = 'notification.sent.v2'") == 2
        assert [m["To"] for m in mailbox.messages()] == ["ct-b@example.org", "ct-a@example.org"]  # crisis first
        # Each mail's sign-in code was minted with its claim; the failed attempt's too (never mailed).
        assert await scalar(notify, "SELECT count(*) FROM signin_code") == 4
    finally:
        await notify.mailer.close()
        await engine.dispose()


async def test_a_round_giving_way_to_urgent_mail_gives_back_what_it_did_not_send(
    database_url: str, mailbox: MailCatcher,
) -> None:
    await upgrade(database_url, MIGRATIONS)
    engine = make_engine(database_url)
    notify = Notify(sessions(engine), Relay(), Mailer(mailbox.url, FROM))  # type: ignore[arg-type]
    first_arrived, release = threading.Event(), threading.Event()

    def slow_first(_: Any) -> None:
        if not first_arrived.is_set():
            first_arrived.set()
            release.wait(10)

    mailbox.on_message = slow_first
    try:
        await notify.handle([message(matched(f"ct-{i}", urgency="routine")) for i in range(5)])
        round_ = asyncio.create_task(notify.deliver_due())
        assert await asyncio.to_thread(first_arrived.wait, 10)
        await notify.handle([message(matched("ct-crisis", urgency="crisis"))])
        release.set()
        assert await round_ == 1  # sent the one in flight, then stopped
        # The four it claimed and did not send are due at once, not after the lease,
        # and their unmailed sign-in codes are gone.
        assert await scalar(notify, "SELECT count(*) FROM delivery WHERE state = 'pending'") == 5
        assert await scalar(notify, "SELECT count(*) FROM signin_code") == 1
        assert await notify.deliver_due() == 5
        await eventually(lambda: asyncio.sleep(0, len(mailbox.messages()) == 6), timeout=10)
        assert [m["To"] for m in mailbox.messages()][1] == "ct-crisis@example.org"
        assert await scalar(notify, "SELECT count(*) FROM delivery WHERE state = 'sent'") == 6
        assert await scalar(notify, "SELECT count(*) FROM signin_code") == 6
    finally:
        mailbox.on_message = None
        release.set()
        await notify.mailer.close()
        await engine.dispose()


async def test_a_round_outliving_half_its_lease_gives_back_the_rest(database_url: str, mailbox: MailCatcher) -> None:
    """A slow SMTP server: the round stops sending once half its lease is gone, so no mail
    goes out under a lease another replica could already have taken over."""
    await upgrade(database_url, MIGRATIONS)
    engine = make_engine(database_url)
    notify = Notify(sessions(engine), Relay(), Mailer(mailbox.url, FROM), claim_lease_s=1.0)  # type: ignore[arg-type]
    mailbox.on_message = lambda _: time.sleep(0.6)
    try:
        await notify.handle([message(matched(f"ct-{i}", urgency="routine")) for i in range(3)])
        assert await notify.deliver_due() == 1
        assert len(mailbox.messages()) == 1
        assert await scalar(notify, "SELECT count(*) FROM delivery WHERE state = 'sent'") == 1
        assert await notify.deliver_due() == 1  # the rest was given back: due at once
        assert await scalar(notify, "SELECT count(*) FROM delivery WHERE state = 'sent'") == 2
    finally:
        mailbox.on_message = None
        await notify.mailer.close()
        await engine.dispose()


async def test_a_round_stopped_between_send_and_record_mails_that_one_again_with_its_message_id(
    database_url: str, mailbox: MailCatcher,
) -> None:
    """The window the worker keeps: a mail accepted by the server whose sender stops before
    recording it is mailed again when the lease runs out, with the same Message-ID (the
    receiver's mail system can drop it); what was recorded is never mailed again."""
    await upgrade(database_url, MIGRATIONS)
    engine = make_engine(database_url)
    notify = Notify(sessions(engine), Relay(), Mailer(mailbox.url, FROM), claim_lease_s=2.0)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    round_: asyncio.Task[int] | None = None
    seen = 0

    def stop_on_the_third(_: Any) -> None:
        # In the server, after the mail is stored and before the sender hears "250".
        nonlocal seen
        seen += 1
        if seen == 3 and round_ is not None:
            loop.call_soon_threadsafe(round_.cancel)
            time.sleep(0.3)

    try:
        await notify.handle([message(matched(f"ct-{i}", urgency="routine")) for i in range(3)])
        mailbox.on_message = stop_on_the_third
        round_ = asyncio.create_task(notify.deliver_due())
        with contextlib.suppress(asyncio.CancelledError):
            await round_
        assert round_.cancelled()
        mailbox.on_message = None
        assert await scalar(notify, "SELECT count(*) FROM delivery WHERE state = 'sent'") == 2
        assert await notify.deliver_due() == 0  # the third is leased
        await asyncio.sleep(2.1)
        assert await notify.deliver_due() == 1
        assert await scalar(notify, "SELECT count(*) FROM delivery WHERE state = 'sent'") == 3
        ids = [m["Message-ID"] for m in mailbox.messages()]
        assert len(ids) == 4
        assert len(set(ids)) == 3
        assert ids[2] == ids[3]
        assert await scalar(notify, "SELECT count(*) FROM outbox") == 3
    finally:
        mailbox.on_message = None
        await notify.mailer.close()
        await engine.dispose()
