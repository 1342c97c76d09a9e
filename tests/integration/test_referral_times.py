"""The times from a referral's submission, as matching and notify observe them on a real
database (and a real SMTP server for notify): each referral's first decision once, from its
submitted event's time, by urgency and outcome; the submission time carried on every
proposal; each referral's first proposal mail once, whichever receiver or decision it was
for. /metrics exporting them is tests/integration/test_metrics.py's part."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from devtools.mailcatcher import MailCatcher
from notify.adapters.mailer import Mailer
from notify.bootstrap import MIGRATIONS as NOTIFY_MIGRATIONS
from notify.service_layer.deliveries import Notify
from shared.db import make_engine, sessions, upgrade
from shared.events import Envelope, Recipient, ReferralMatched, ReferralSubmitted, utcnow
from shared.metrics import DecisionTimes, NotificationTimes
from shared.streams.consumer import Message
from tests.integration.test_notify_delivery_rounds import FROM, Relay
from tests.integration.test_notify_inbox import matched, receiver_of
from tests.matching_kit import World, response, submitted

DECISION = "rujukan_referral_decision_seconds"
NOTIFICATION = "rujukan_referral_notification_seconds"


def submitted_at(e: ReferralSubmitted, ago: timedelta) -> Message:
    """The event as intake published it `ago`."""
    env = Envelope.wrap(e, source="rujukan/intake", subject=e.referral_id)
    return Message("test", "0-1", env.model_copy(update={"time": utcnow() - ago}), e)


def count(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(f"{name}_count", labels) or 0.0


async def test_a_first_decision_is_timed_once_from_submission_and_every_proposal_carries_it(world: World) -> None:
    registry = CollectorRegistry()
    world.matching.observe_decision = DecisionTimes(registry)
    crisis = submitted(urgency="crisis", risk_flags=["ongoing_violence"])
    first = submitted_at(crisis, timedelta(seconds=42))
    mark = await world.outbox_mark()
    await world.matching.handle([first])
    proposed = [e.payload() for e in await world.published_since(mark)]
    assert [type(p) for p in proposed] == [ReferralMatched]
    assert isinstance(proposed[0], ReferralMatched)
    assert proposed[0].submitted_at == first.envelope.time

    assert count(registry, DECISION, urgency="crisis", outcome="proposed") == 1
    waited = registry.get_sample_value(f"{DECISION}_sum", {"urgency": "crisis", "outcome": "proposed"})
    assert waited is not None
    assert waited >= 42  # from the submission, not from when matching read it
    assert registry.get_sample_value(f"{DECISION}_bucket", {"urgency": "crisis", "outcome": "proposed",
                                                            "le": "30.0"}) == 0

    # The same referral published again: decided already, not timed again. A decline: the
    # next proposal carries the same submission time, and is no first decision.
    await world.send(crisis)
    out = [e.payload() for e in await world.send(response(proposed[0], "declined"))]
    again = [p for p in out if isinstance(p, ReferralMatched)]
    assert len(again) == 1
    assert again[0].service_id != proposed[0].service_id
    assert again[0].submitted_at == first.envelope.time
    assert count(registry, DECISION, urgency="crisis", outcome="proposed") == 1

    # Nothing in the directory for it: unmatched, under its own urgency and outcome.
    await world.matching.handle([submitted_at(submitted(pmks_category="anak_terlantar"), timedelta(seconds=1))])
    assert count(registry, DECISION, urgency="routine", outcome="unmatched") == 1
    assert sum(count(registry, DECISION, urgency=u, outcome=o) for u in ("routine", "priority", "crisis")
               for o in ("proposed", "waitlisted", "unmatched")) == 2


def proposal_to(referral_id: str, contacts: list[str], urgency: str, at: datetime | None) -> ReferralMatched:
    p = matched(contacts[0], urgency=urgency, submitted_at=at)
    recipients = [Recipient(receiver_id=receiver_of(c), contact_id=c, email=f"{c}@example.org") for c in contacts]
    return p.model_copy(update={"referral_id": referral_id, "recipients": recipients})


async def test_a_referral_is_first_told_once_whichever_receiver_or_proposal_mail_comes_first(
    database_url: str, mailbox: MailCatcher
) -> None:
    await upgrade(database_url, NOTIFY_MIGRATIONS)
    engine = make_engine(database_url)
    registry = CollectorRegistry()
    told: list[tuple[str, Any]] = []
    times = NotificationTimes(registry)

    def observe(urgency: str, submitted: datetime | None, sent_at: datetime) -> None:
        told.append((urgency, submitted))
        times(urgency, submitted, sent_at)

    notify = Notify(sessions(engine), Relay(), Mailer(mailbox.url, FROM), record_every=1,  # type: ignore[arg-type]
                    observe_notification=observe)
    try:
        at = utcnow() - timedelta(seconds=20)
        crisis = proposal_to("ref-crisis-1", ["ct-a", "ct-b"], "crisis", at)
        unknown = proposal_to("ref-routine-1", ["ct-c"], "routine", None)  # from a matching before the field
        await notify.handle([Message("test", "0-1", Envelope.wrap(e, source="t", subject=e.referral_id), e)
                             for e in (crisis, unknown)])
        assert await notify.deliver_due() == 3
        assert len(mailbox.messages()) == 3
        # Two receivers of the crisis mailed: the referral was first told once.
        assert told == [("crisis", at), ("routine", None)]
        assert count(registry, NOTIFICATION, urgency="crisis") == 1
        assert count(registry, NOTIFICATION, urgency="routine") == 0  # its submission time unknown
        waited = registry.get_sample_value(f"{NOTIFICATION}_sum", {"urgency": "crisis"})
        assert waited is not None
        assert waited >= 20

        # The next proposal of the same referral (after a decline) is no first notification.
        later = proposal_to("ref-crisis-1", ["ct-d"], "crisis", at)
        await notify.handle([Message("test", "0-2", Envelope.wrap(later, source="t", subject="x"), later)])
        assert await notify.deliver_due() == 1
        assert len(mailbox.messages()) == 4
        assert len(told) == 2
        assert count(registry, NOTIFICATION, urgency="crisis") == 1
    finally:
        await notify.mailer.close()
        await engine.dispose()
