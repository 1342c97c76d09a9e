"""Matching's closed loop at the service layer, against SQLite and PostgreSQL: proposals
hold a seat, accept confirms it, decline and expiry release it and propose the next
candidate (never one that declined), the waitlist is served when capacity frees, the
agency's cancellation releases the seat; everything idempotent. Ends with a
hypothesis-driven run of random event sequences that checks the invariants after each."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update

from matching.adapters.orm import Service
from matching.domain.directory_record import ServiceRecord
from shared.events import (
    Envelope,
    ReferralCancelled,
    ReferralMatched,
    ReferralResponseRefused,
    ReferralStatusChanged,
    ReferralUnmatched,
    ReferralWaitlisted,
    utcnow,
)
from tests.matching_kit import DIRECTORY, World, message, response, submitted, with_seats


def only(events: list[Envelope], cls: type) -> Any:
    found = [e.payload() for e in events if e.type == cls.TYPE]
    assert len(found) == 1, [e.type for e in events]
    return found[0]


async def test_a_crisis_in_medan_goes_to_the_police_ppa_with_reasons_and_a_short_hold(world: World) -> None:
    e = submitted(urgency="crisis", risk_flags=["ongoing_violence"], needs=["instrumental", "emotional"])
    out = await world.send(e)
    m = only(out, ReferralMatched)
    assert m.service_id in {"svc-ppa-medan", "svc-uptd-medan"}  # never the peer group
    assert m.risk_flags == ["ongoing_violence"]
    assert m.hold_expires_at is not None
    assert m.hold_expires_at - utcnow() < timedelta(hours=4, minutes=1)
    assert "menangani kasus krisis" in m.reasons_id
    assert any(r.startswith("kursi tersedia") for r in m.reasons_id)
    losers = {c.service_id: c for c in m.candidates if c.outcome != "chosen"}
    assert losers["svc-sebaya-daring"].reasons_id == ["kelompok dukungan tidak menangani situasi darurat"]
    decisions = await world.decisions(e.referral_id)
    assert [d.outcome for d in decisions] == ["proposed"]
    assert decisions[0].candidates  # stored for audit
    await world.check_invariants()


async def test_accept_confirms_then_in_progress_then_completed_frees_the_seat(world: World) -> None:
    e = submitted()
    m = only(await world.send(e), ReferralMatched)
    before = (await world.seats())[m.service_id][0]
    accepted = only(await world.send(response(m, "accepted")), ReferralStatusChanged)
    assert (accepted.status, accepted.actor) == ("accepted", f"receiver:{m.recipients[0].receiver_id}")
    assert [h.state for h in await world.holds()] == ["confirmed"]
    assert only(await world.send(response(m, "in_progress")), ReferralStatusChanged).status == "in_progress"
    done = only(await world.send(response(m, "completed")), ReferralStatusChanged)
    assert (done.status, done.outcome_code) == ("completed", "goals_met")
    assert (await world.seats())[m.service_id][0] == before + 1
    assert (await world.case(e.referral_id)).state == "completed"  # type: ignore[union-attr]
    await world.check_invariants()


async def test_decline_releases_the_seat_and_proposes_the_next_never_the_same_again(world: World) -> None:
    e = submitted(needs=["emotional"])
    first = only(await world.send(e), ReferralMatched)
    out = await world.send(response(first, "declined", reason_code="outside_mandate"))
    assert [x.type for x in out] == ["referral.status_changed.v1", "referral.matched.v2"]  # in this order
    declined, second = out[0].payload(), out[1].payload()
    assert isinstance(declined, ReferralStatusChanged)
    assert declined.reason_code == "outside_mandate"
    assert isinstance(second, ReferralMatched)
    assert second.service_id != first.service_id
    assert any(c.service_id == first.service_id and c.reasons_id == ["sudah menolak rujukan ini"]
               for c in second.candidates)
    # Decline everything in turn: it ends unmatched, saying that every suitable service declined.
    current: Any = second
    while isinstance(current, ReferralMatched):
        out = await world.send(response(current, "declined"))
        current = out[-1].payload()
    assert isinstance(current, ReferralUnmatched)
    assert "sudah menolak" in current.reasons_id[0]
    services = [h.service_id for h in await world.holds()]
    assert len(services) == len(set(services))  # never proposed twice to one service
    await world.check_invariants()


async def test_the_same_response_twice_takes_effect_once(world: World) -> None:
    m = only(await world.send(submitted()), ReferralMatched)
    r = response(m, "declined")
    first = await world.send(r)
    assert await world.send(r) == []  # the same event again (inbox)
    assert await world.send(response(m, "declined")) == []  # the same answer again, as a new event
    assert len(first) == 2
    await world.check_invariants()


async def test_expired_hold_goes_to_the_next_candidate_and_a_late_accept_is_refused(world: World) -> None:
    e = submitted()
    first = only(await world.send(e), ReferralMatched)
    assert await world.matching.expire_due(now=utcnow() + timedelta(hours=72)) == 0  # grace not over yet
    mark = await world.outbox_mark()
    assert await world.matching.expire_due(now=utcnow() + timedelta(hours=73)) == 1
    out = await world.published_since(mark)
    expired, second = out[0].payload(), out[1].payload()
    assert isinstance(expired, ReferralStatusChanged)
    assert expired.status == "hold_expired"
    assert isinstance(second, ReferralMatched)
    assert second.service_id != first.service_id
    late = only(await world.send(response(first, "accepted")), ReferralResponseRefused)
    assert late.reason_code == "hold_expired"
    assert (await world.case(e.referral_id)).lapsed_service_ids == [first.service_id]  # type: ignore[union-attr]
    await world.check_invariants()


async def test_an_accept_given_in_time_wins_over_expiry_within_the_grace(world: World) -> None:
    m = only(await world.send(submitted()), ReferralMatched)
    only(await world.send(response(m, "accepted")), ReferralStatusChanged)
    assert await world.matching.expire_due(now=utcnow() + timedelta(days=30)) == 0  # confirmed: never expires
    await world.check_invariants()


async def test_waitlisted_prse_woman_is_matched_when_kupang_frees_a_seat(world: World) -> None:
    await world.reset(with_seats(DIRECTORY, svc_prse_kupang=1, svc_sebaya_daring=0))
    initial = {r.id: r.seats_available for r in with_seats(DIRECTORY, svc_prse_kupang=1, svc_sebaya_daring=0)}
    prse = dict(pmks_category="perempuan_rawan_sosial_ekonomi", region_code="53.71.02", needs=["instrumental"])
    first = only(await world.send(submitted(**prse)), ReferralMatched)
    assert first.service_id == "svc-prse-kupang"
    waiting = submitted(**prse)
    w = only(await world.send(waiting), ReferralWaitlisted)
    assert "menunggu kursi kosong" in w.reasons_id[0]
    assert await world.matching.retry_waitlist() == 0  # nothing freed: nothing changes, nothing published
    assert [d.outcome for d in await world.decisions(waiting.referral_id)] == ["waitlisted"]
    # Kupang's first member completes: her seat frees, the waiting woman gets it.
    await world.send(response(first, "accepted"))
    await world.send(response(first, "completed"))
    freed = await world.matching.wait_for_waitlist_kick(timeout=1)
    assert freed == {"svc-prse-kupang"}
    mark = await world.outbox_mark()
    assert await world.matching.retry_waitlist(freed) == 1
    again = only(await world.published_since(mark), ReferralMatched)
    assert (again.referral_id, again.service_id) == (waiting.referral_id, "svc-prse-kupang")
    assert [d.trigger for d in await world.decisions(waiting.referral_id)] == ["submitted", "capacity_freed"]
    await world.check_invariants(initial)


async def test_a_seat_freed_in_kupang_goes_to_the_woman_waiting_there_not_to_older_ones_elsewhere(
    world: World,
) -> None:
    jakarta = ServiceRecord(id="svc-prse-jakarta", organization_id="org-jkt", organization_name="Dinas Sosial DKI",
                            name="KUBE Perempuan Jakarta Timur", resource_kind="economic_empowerment",
                            pmks=("perempuan_rawan_sosial_ekonomi",), areas=("31.74",), contact_id="ct-jkt",
                            contact_email="kube@jakarta.example", seats_available=0, seats_max=10)
    directory = [*with_seats(DIRECTORY, svc_prse_kupang=1, svc_sebaya_daring=0), jakarta]
    await world.reset(directory)
    prse = dict(pmks_category="perempuan_rawan_sosial_ekonomi", modality="in_person")
    first = only(await world.send(submitted(region_code="53.71.02", **prse)), ReferralMatched)
    older = [submitted(region_code="31.74.03", **prse) for _ in range(120)]
    for i in range(0, len(older), 40):
        await world.send(*older[i:i + 40])
    kupang = submitted(region_code="53.71.02", **prse)
    only(await world.send(kupang), ReferralWaitlisted)
    await world.send(response(first, "accepted"))
    await world.send(response(first, "completed"))
    mark = await world.outbox_mark()
    # Looking at only a few waiting referrals is enough: those Kupang's area covers.
    assert await world.matching.retry_waitlist(["svc-prse-kupang"], limit=5) == 1
    again = only(await world.published_since(mark), ReferralMatched)
    assert (again.referral_id, again.service_id) == (kupang.referral_id, "svc-prse-kupang")
    await world.check_invariants({r.id: r.seats_available for r in directory})

    # The periodic sweep looks at every waiting referral in turn, a page at a time: the
    # youngest, who would meet online, gets the online group's seat freed without a kick.
    youngest = submitted(region_code="31.74.03", pmks_category="perempuan_rawan_sosial_ekonomi", modality="any")
    only(await world.send(youngest), ReferralWaitlisted)
    async with world.sessions() as s, s.begin():
        await s.execute(update(Service).where(Service.id == "svc-sebaya-daring").values(seats_available=1))
    moved = [await world.matching.retry_waitlist(limit=50) for _ in range(3)]
    assert moved == [0, 0, 1]  # 121 waiting ahead of her that can only meet in person
    assert (await world.case(youngest.referral_id)).state == "proposed"  # type: ignore[union-attr]


async def test_cancel_releases_the_seat_and_a_cancel_before_the_submission_wins(world: World) -> None:
    e = submitted()
    m = only(await world.send(e), ReferralMatched)
    before = (await world.seats())[m.service_id][0]
    cancel = ReferralCancelled(referral_id=e.referral_id, agency_id="demo", reason_code="client_withdrew",
                               urgency="routine")
    assert await world.send(cancel) == []
    assert (await world.seats())[m.service_id][0] == before + 1
    assert only(await world.send(response(m, "accepted")), ReferralResponseRefused).reason_code == "cancelled"
    # The cancellation overtakes its submission (a longer lane): the submission is never decided.
    early = submitted()
    await world.send(ReferralCancelled(referral_id=early.referral_id, agency_id="demo",
                                       reason_code="duplicate", urgency="routine"))
    assert await world.send(early) == []
    assert (await world.case(early.referral_id)).state == "cancelled"  # type: ignore[union-attr]
    await world.check_invariants()


async def test_responses_out_of_turn_are_refused_with_why(world: World) -> None:
    m = only(await world.send(submitted()), ReferralMatched)
    assert only(await world.send(response(m, "completed")), ReferralResponseRefused).reason_code == "invalid_transition"
    stranger = m.model_copy(update={"decision_id": "01NOTADECISION"})
    assert only(await world.send(response(stranger, "accepted")), ReferralResponseRefused).reason_code == "not_current"
    # Only the receiver the proposal went to moves its seat: not another receiver, even
    # one whose directory record gives the same HSDS contact id.
    impostor = response(m, "accepted", responder_receiver_id="01OTHERRECEIVER")
    refused = only(await world.send(impostor), ReferralResponseRefused)
    assert (refused.reason_code, refused.responder_receiver_id) == ("not_current", "01OTHERRECEIVER")
    assert [h.state for h in await world.holds()] == ["held"]
    await world.check_invariants()


async def test_concurrent_tasks_in_one_process_never_overbook(world: World) -> None:
    """Many decisions at once through separate transactions (the consumer, the workers)."""
    events = [submitted() for _ in range(12)]
    await asyncio.gather(*(world.matching.handle([message(e)]) for e in events))
    await world.check_invariants()
    holds = await world.holds()
    assert len(holds) == sum(r.seats_available for r in DIRECTORY if "korban_tindak_kekerasan" in r.pmks)


# --- invariants under random sequences of events ---------------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(["submit", "submit_crisis", "submit_prse", "accept", "decline", "start", "complete",
                         "cancel", "expire", "waitlist", "replay"]),
        st.integers(0, 7),
    ),
    min_size=1, max_size=25,
)


@pytest.fixture
def own_loop_world(database_url: str) -> Iterator[tuple[asyncio.AbstractEventLoop, World]]:
    """A world on its own event loop: hypothesis runs many examples in one sync test."""
    loop = asyncio.new_event_loop()
    world = loop.run_until_complete(World(database_url).start())
    try:
        yield loop, world
    finally:
        loop.run_until_complete(world.close())
        loop.close()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=OPS)
def test_invariants_hold_under_any_sequence_of_events(
    own_loop_world: tuple[asyncio.AbstractEventLoop, World], ops: list[tuple[str, int]]
) -> None:
    loop, world = own_loop_world
    loop.run_until_complete(_run_sequence(world, ops))


async def _run_sequence(world: World, ops: list[tuple[str, int]]) -> None:
    await world.reset()
    referrals: list[str] = []
    current: dict[str, ReferralMatched] = {}
    history: list[Any] = []
    clock = utcnow()
    for op, i in ops:
        if op.startswith("submit"):
            kw: dict[str, Any] = {}
            if op == "submit_crisis":
                kw = dict(urgency="crisis", risk_flags=["suicidal_ideation"])
            elif op == "submit_prse":
                kw = dict(pmks_category="perempuan_rawan_sosial_ekonomi", region_code="53.71.02")
            e = submitted(**kw)
            referrals.append(e.referral_id)
            out = await world.send(e)
            history.append(e)
        elif op == "expire":
            clock += timedelta(hours=80)
            mark = await world.outbox_mark()
            await world.matching.expire_due(now=clock)
            out = await world.published_since(mark)
        elif op == "waitlist":
            mark = await world.outbox_mark()
            await world.matching.retry_waitlist()
            out = await world.published_since(mark)
        elif op == "replay" and history:
            out = await world.send(history[i % len(history)])
        elif op == "cancel" and referrals:
            rid = referrals[i % len(referrals)]
            e2 = ReferralCancelled(referral_id=rid, agency_id="demo", reason_code="other", urgency="routine")
            history.append(e2)
            out = await world.send(e2)
        elif current and op in ("accept", "decline", "start", "complete"):
            m = list(current.values())[i % len(current)]
            kind = {"accept": "accepted", "decline": "declined", "start": "in_progress",
                    "complete": "completed"}[op]
            r = response(m, kind)
            history.append(r)
            out = await world.send(r)
        else:
            out = []
        for env in out:
            data = env.payload()
            if isinstance(data, ReferralMatched):
                current[data.referral_id] = data
        await world.check_invariants()
