"""A receiver's registration and its first proposal reach notify at the same moment, on two
streams handled concurrently: both transactions learn the receiver. Before, the second to
commit failed on the primary key and its batch waited for the reclaim (30 s or more, a
crisis's proposal among them). On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from notify.adapters.orm import Receiver
from notify.bootstrap import MIGRATIONS
from notify.service_layer.credentials import learn_from_proposal, register
from shared.db import make_engine, sessions, upgrade
from shared.events import ReceiverRegistered


async def test_registration_and_first_proposal_at_once_both_commit(database_url: str) -> None:
    await upgrade(database_url, MIGRATIONS)
    engine = make_engine(database_url)
    made = sessions(engine)
    registration = ReceiverRegistered(receiver_id="RCV-RACE", organization_id="org-1", service_id="svc-1",
                                      contact_id="ct-1", contact_email="ppa@example.org")
    first_in = asyncio.Event()

    async def proposal_first() -> None:
        async with made() as s, s.begin():
            await learn_from_proposal(s, "RCV-RACE", "svc-1", "ct-1", "ppa-new@example.org")
            first_in.set()
            await asyncio.sleep(0.3)  # still open while the registration tries to insert

    async def registration_meanwhile() -> None:
        await first_in.wait()
        async with made() as s, s.begin():
            await register(s, registration)

    try:
        await asyncio.wait_for(asyncio.gather(proposal_first(), registration_meanwhile()), 30)
        async with made() as s:
            rows = (await s.execute(text("SELECT id, organization_id, email FROM receiver"))).all()
            assert [tuple(r) for r in rows] == [("RCV-RACE", "org-1", "ppa@example.org")]
            # And the other order: a registration known, a proposal's newer address kept.
        async with made() as s, s.begin():
            await learn_from_proposal(s, "RCV-RACE", "svc-1", "ct-1", "ppa-new@example.org")
        async with made() as s:
            known = await s.get(Receiver, "RCV-RACE")
            assert known is not None
            assert (known.organization_id, known.email) == ("org-1", "ppa-new@example.org")
    finally:
        await engine.dispose()


async def test_the_consumer_knows_a_real_unique_violation_as_a_clash_on_postgresql(database_url: str) -> None:
    # What the consumer handles again at once (shared.streams.consumer.is_conflict), as the
    # driver really raises it; on SQLite writers are serialized, so a duplicate is the entry's own.
    from sqlalchemy.exc import IntegrityError

    from shared.streams.consumer import is_conflict

    await upgrade(database_url, MIGRATIONS)
    engine = make_engine(database_url)
    try:
        async with sessions(engine)() as s, s.begin():
            s.add(Receiver(id="RCV-DUP", service_id="svc-1"))
        with pytest.raises(IntegrityError) as raised:
            async with sessions(engine)() as s, s.begin():
                s.add(Receiver(id="RCV-DUP", service_id="svc-1"))
        assert is_conflict(raised.value) == database_url.startswith("postgresql")
    finally:
        await engine.dispose()
