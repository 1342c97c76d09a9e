"""Nobody left behind, at matching's service layer against SQLite and PostgreSQL (and, for the
Jayapura case, the matching app with its workers on real Redis): waiting referrals matched
again when the directory could serve them (once per change), or when the agency asks; crisis
proposals that nobody answers escalate; the handover contact on acceptance; the recipients'
other channels."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from matching.adapters.directory_repository import upsert_service
from matching.adapters.hsds_export import to_hsds
from matching.adapters.hsds_json import parse_document
from matching.adapters.orm import Outbox, ReferralCase, SeatHold
from matching.bootstrap import create_app
from matching.domain.directory_record import Contact, Phone, ServiceRecord
from matching.service_layer import directory
from matching.settings import Settings
from shared.events import (
    Envelope,
    ReferralCancelled,
    ReferralEscalated,
    ReferralMatched,
    ReferralProposalWithdrawn,
    ReferralRematchRequested,
    ReferralResponseRefused,
    ReferralStatusChanged,
    ReferralUnmatched,
    ReferralWaitlisted,
    utcnow,
)
from tests.apps import DIRECTORY_KEY, OPERATOR_KEYS, bearer, eventually, running
from tests.matching_kit import DIRECTORY, World, message, response, submitted, with_seats

ACK = timedelta(minutes=0.05)  # CRISIS_ACK_MINUTES=0.05: three seconds

# A shelter that serves the province of Papua (91), with its professional contact's phones
# and webhook as the directory gives them.
JAYAPURA = ServiceRecord(
    id="svc-rumah-aman-jayapura", organization_id="org-dp3akb-papua", organization_name="DP3AKB Provinsi Papua",
    name="Rumah Aman Jayapura", resource_kind="shelter", pmks=("korban_tindak_kekerasan",), areas=("91",),
    contact_id="", contact_email="", support_types=("instrumental", "emotional"),
    policies=("crisis_capable", "women_only"), seats_available=2, seats_max=4,
    contacts=(Contact(id="ct-jayapura", email="rumahaman@papua.example", name="Ibu Yohana Wenda",
                      webhook_url="https://hooks.papua.example/rujukan",
                      phones=(Phone("+62 967 000 111", type="voice"), Phone("+62 812 4800 0001", type="whatsapp"))),),
)
# Another crisis-capable professional in Medan, for a second escalation.
LBH_MEDAN = ServiceRecord(
    id="svc-lbh-medan", organization_id="org-lbh-medan", organization_name="LBH APIK Medan",
    name="Bantuan Hukum LBH APIK Medan", resource_kind="legal_aid", pmks=("korban_tindak_kekerasan",),
    areas=("12.71",), contact_id="", contact_email="", support_types=("informational",),
    policies=("crisis_capable",), seats_available=1, seats_max=1,
    contacts=(Contact(id="ct-lbh", email="lbh@apik.example", name="Pak Rudi", phones=(Phone("+62 61 415 000"),)),),
)


def in_jayapura(**kw: Any) -> Any:
    """A referral from Kota Jayapura for help in person (the online peer group does not fit)."""
    return submitted(region_code="91.71.02", modality="in_person", **kw)


@pytest.fixture
async def world(database_url: str) -> AsyncIterator[World]:
    w = await World(database_url).start()
    w.matching.crisis_ack = ACK
    try:
        yield w
    finally:
        await w.close()


def of(events: list[Envelope], cls: type) -> list[Any]:
    return [e.payload() for e in events if e.type == cls.TYPE]


def one(events: list[Envelope], cls: type) -> Any:
    found = of(events, cls)
    assert len(found) == 1, [e.type for e in events]
    return found[0]


async def pass_after_change(world: World) -> list[Envelope]:
    mark = await world.outbox_mark()
    await world.matching.rematch_pending()
    return await world.published_since(mark)


async def seats_of(world: World, sid: str) -> int:
    return (await world.seats())[sid][0]


# --- Nobody left unmatched for good --------------------------------------------------------


async def test_jayapura_unmatched_then_a_shelter_is_imported_and_it_is_matched_at_once_exactly_once(
        database_url: str, redis_url: str, redis: Any) -> None:
    """Through the matching app: the directory route commits, the rematch pass runs right
    after (the periodic safety net is set to a minute and never gets its turn)."""
    app = create_app(Settings(database_url=database_url, redis_url=redis_url, operator_keys=OPERATOR_KEYS,
                              stream_block_ms=100, outbox_poll_interval_s=0.2, rematch_interval_s=60,
                              waitlist_interval_s=60))
    async with running(app) as client:
        matching, sessions = app.state.matching, app.state.runtime.sessions

        async def published(rid: str) -> list[Envelope]:
            async with sessions() as s:
                rows = (await s.scalars(select(Outbox.envelope).order_by(Outbox.id))).all()
            return [e for e in map(Envelope.model_validate_json, rows) if e.subject == rid]

        e = in_jayapura()
        await matching.handle([message(e)])
        assert [x.type for x in await published(e.referral_id)] == [ReferralUnmatched.TYPE]

        # An unrelated change (another category, another province) wakes nobody.
        kupang = with_seats([r for r in DIRECTORY if r.id == "svc-prse-kupang"])[0]
        r = await client.post("/v1/services", json=to_hsds(kupang, seats_available=1), headers=bearer(DIRECTORY_KEY))
        assert r.status_code == 201, r.text
        started = asyncio.get_running_loop().time()
        r = await client.post("/v1/services", json=to_hsds(JAYAPURA, seats_available=2),
                              headers=bearer(DIRECTORY_KEY))
        assert r.status_code == 201, r.text

        async def matched() -> Any:
            return of(await published(e.referral_id), ReferralMatched)

        found = await eventually(matched, timeout=5)
        assert asyncio.get_running_loop().time() - started < 5  # seconds, not the minute of a sweep
        m = found[0]
        assert m.service_id == JAYAPURA.id
        rec = m.recipients[0]
        assert (rec.email, rec.phone, rec.webhook_url) == ("rumahaman@papua.example", "+62 812 4800 0001",
                                                          "https://hooks.papua.example/rujukan")
        assert rec.channels == ["email", "whatsapp", "sms", "webhook"]
        async with sessions() as s:
            case = await s.get(ReferralCase, e.referral_id)
            assert case is not None
            assert case.state == "proposed"
            assert case.rematch_generation > 0

        # Editing the shelter again (capacity) is another change, but the referral is proposed:
        # exactly one proposal, however many passes run.
        r = await client.put(f"/v1/services/{JAYAPURA.id}/capacity", json={"available": 3, "maximum": 4},
                             headers=bearer(DIRECTORY_KEY))
        assert r.status_code == 200, r.text
        await matching.rematch_pending()
        await asyncio.sleep(0.5)
        assert len(await matched()) == 1
        assert [x.type for x in await published(e.referral_id)] == [ReferralUnmatched.TYPE, ReferralMatched.TYPE]


async def test_each_change_is_tried_once_per_case_and_a_change_it_cannot_use_leaves_it_alone(world: World) -> None:
    await world.matching.rematch_pending()  # the directory's own set-up
    e = in_jayapura()
    assert one(await world.send(e), ReferralUnmatched)
    # A change that cannot serve it (a service in Kupang) does not look at it.
    async with world.sessions() as s, s.begin():
        await upsert_service(s, with_seats([r for r in DIRECTORY if r.id == "svc-prse-kupang"], svc_prse_kupang=5)[0])
    assert await pass_after_change(world) == []
    assert (await world.case(e.referral_id)).rematch_generation == 0  # type: ignore[union-attr]
    # A shelter in Papua that is full: it could serve, so the referral waits for it (told once).
    async with world.sessions() as s, s.begin():
        await upsert_service(s, JAYAPURA.__class__(**{**vars(JAYAPURA), "seats_available": 0, "capacities": ()}))
    out = await pass_after_change(world)
    assert [x.type for x in out] == [ReferralWaitlisted.TYPE]
    assert await pass_after_change(world) == []  # the change is done: not tried again
    # Capacity declared: the waiting referral is proposed the seat, once.
    await directory.declare_capacity(world.sessions, JAYAPURA.id, 1, 4)
    out = await pass_after_change(world)
    m = one(out, ReferralMatched)
    assert m.service_id == JAYAPURA.id
    assert (await world.decisions(e.referral_id))[-1].trigger == "directory_changed"
    assert await pass_after_change(world) == []
    assert (await world.seats())[JAYAPURA.id][0] == 0


async def test_capacity_declared_wakes_a_waitlisted_referral(world: World) -> None:
    await world.reset(with_seats(DIRECTORY, svc_ppa_medan=0, svc_uptd_medan=0, svc_sebaya_daring=0))
    e = submitted(modality="in_person")
    assert one(await world.send(e), ReferralWaitlisted)
    await directory.declare_capacity(world.sessions, "svc-uptd-medan", 1, 3)
    m = one(await pass_after_change(world), ReferralMatched)
    assert (m.referral_id, m.service_id) == (e.referral_id, "svc-uptd-medan")
    assert (await world.case(e.referral_id)).state == "proposed"  # type: ignore[union-attr]


async def test_a_deactivated_service_is_no_change_that_could_serve_anyone(world: World) -> None:
    e = in_jayapura()
    await world.send(e)
    async with world.sessions() as s, s.begin():
        await upsert_service(s, JAYAPURA.__class__(**{**vars(JAYAPURA), "status": "inactive"}))
    assert await pass_after_change(world) == []
    assert (await world.case(e.referral_id)).state == "unmatched"  # type: ignore[union-attr]


def rematch_request(e: Any) -> ReferralRematchRequested:
    return ReferralRematchRequested(referral_id=e.referral_id, agency_id="demo", requested_at=utcnow(),
                                    urgency=e.urgency, risk_flags=e.risk_flags)


async def test_the_agency_asks_again_and_is_told_the_outcome_even_when_nothing_changed(world: World) -> None:
    e = in_jayapura()
    await world.send(e)
    first = one(await world.published_since(0), ReferralUnmatched)
    again = one(await world.send(rematch_request(e)), ReferralUnmatched)
    assert again.decision_id != first.decision_id  # a new decision, on the agency's timeline
    # The directory changed without a pass (e.g. the pass has not run yet): asking matches it.
    async with world.sessions() as s, s.begin():
        await upsert_service(s, JAYAPURA)
    req = rematch_request(e)
    m = one(await world.send(req), ReferralMatched)
    assert m.service_id == JAYAPURA.id
    assert (await world.decisions(e.referral_id))[-1].trigger == "rematch_requested"
    # The same event again (inbox), and a request for a referral already proposed: nothing.
    await world.matching.handle([message(req)])
    assert await world.send(rematch_request(e)) == []
    assert await world.send(rematch_request(submitted())) == []  # unknown referral
    assert len(of(await world.published_since(0), ReferralMatched)) == 1


async def test_asking_again_gives_a_service_that_let_the_hold_lapse_another_chance(world: World) -> None:
    await world.reset([JAYAPURA])
    e = in_jayapura()
    first = one(await world.send(e), ReferralMatched)
    await world.matching.expire_due(now=utcnow() + timedelta(hours=73))
    assert (await world.case(e.referral_id)).state == "unmatched"  # type: ignore[union-attr]
    m = one(await world.send(rematch_request(e)), ReferralMatched)
    assert m.service_id == first.service_id
    assert m.decision_id != first.decision_id


# --- Crisis escalation ---------------------------------------------------------------------


async def crisis(world: World) -> tuple[Any, ReferralMatched]:
    e = submitted(urgency="crisis", risk_flags=["ongoing_violence"])
    return e, one(await world.send(e), ReferralMatched)


async def escalate(world: World, after: timedelta = ACK * 2) -> list[Envelope]:
    mark = await world.outbox_mark()
    await world.matching.escalate_due(now=utcnow() + after)
    return await world.published_since(mark)


async def test_an_unanswered_crisis_escalates_to_the_next_crisis_capable_service(world: World) -> None:
    e, first = await crisis(world)
    assert await escalate(world, after=timedelta(0)) == []  # not yet
    out = await escalate(world)
    assert [x.type for x in out] == [ReferralMatched.TYPE, ReferralEscalated.TYPE]  # the proposal first
    second, esc = out[0].payload(), out[1].payload()
    assert second.service_id != first.service_id
    assert second.service_id in {"svc-ppa-medan", "svc-uptd-medan"}  # never the peer group
    assert any(c.service_id == first.service_id and c.reasons_id == ["sudah diusulkan rujukan ini, menunggu jawaban"]
               for c in second.candidates)
    assert (esc.level, esc.reason_code, esc.service_id) == (1, "crisis_unanswered", second.service_id)
    assert (esc.decision_id, esc.previous_decision_id) == (second.decision_id, first.decision_id)
    assert esc.minutes_waited >= 0.05
    assert esc.risk_flags == ["ongoing_violence"]
    assert sorted(h.state for h in await world.holds()) == ["held", "held"]  # a seat held at each
    assert (await world.decisions(e.referral_id))[-1].trigger == "escalated"
    assert await escalate(world, after=timedelta(0)) == []  # the new proposal has its own time

    # The first to accept keeps the seat; the other proposal is withdrawn and its seat released.
    before = await seats_of(world, first.service_id)
    out = await world.send(response(second, "accepted"))
    assert [x.type for x in out] == [ReferralStatusChanged.TYPE, ReferralProposalWithdrawn.TYPE]
    w = out[1].payload()
    assert (w.decision_id, w.service_id, w.reason_code) == (first.decision_id, first.service_id,
                                                            "accepted_elsewhere")
    assert w.receiver_ids == [first.recipients[0].receiver_id]
    assert await seats_of(world, first.service_id) == before + 1
    assert sorted((h.service_id, h.state, h.release_reason) for h in await world.holds()) == sorted(
        [(first.service_id, "released", "withdrawn"), (second.service_id, "confirmed", None)])
    # The withdrawn receiver's answer is refused like one no longer current; no escalation after.
    for answer in ("accepted", "declined"):
        refused = one(await world.send(response(first, answer)), ReferralResponseRefused)
        assert refused.reason_code == "not_current"
    assert await escalate(world, after=timedelta(hours=1)) == []
    assert (await world.case(e.referral_id)).state == "accepted"  # type: ignore[union-attr]
    assert only_one_confirmed(await world.holds())


def only_one_confirmed(holds: list[Any]) -> bool:
    return sum(1 for h in holds if h.state == "confirmed") == 1


async def test_a_second_silence_escalates_again_and_when_nobody_is_left_the_agency_is_still_told(
        world: World) -> None:
    await world.reset([*DIRECTORY, LBH_MEDAN])
    e, first = await crisis(world)
    second = one(await escalate(world), ReferralMatched)
    out = await escalate(world, after=timedelta(minutes=1))
    third, esc2 = one(out, ReferralMatched), one(out, ReferralEscalated)
    assert len({first.service_id, second.service_id, third.service_id}) == 3
    assert (esc2.level, esc2.previous_decision_id, esc2.service_id) == (2, second.decision_id, third.service_id)
    # A third silence: no crisis-capable service is left, the escalation still goes out.
    out = await escalate(world, after=timedelta(minutes=2))
    esc3 = one(out, ReferralEscalated)
    assert of(out, ReferralMatched) == []
    assert (esc3.level, esc3.service_id, esc3.previous_decision_id) == (3, "", third.decision_id)
    assert await escalate(world, after=timedelta(minutes=3)) == []  # told once: nothing more to do
    # The agency cancels: every open proposal's seat goes back.
    await world.send(ReferralCancelled(referral_id=e.referral_id, agency_id="demo", reason_code="other",
                                       urgency="crisis", risk_flags=["ongoing_violence"]))
    holds = await world.holds()
    assert [h.release_reason for h in holds] == ["cancelled"] * 3
    await world.check_invariants({**{r.id: r.seats_available for r in DIRECTORY}, LBH_MEDAN.id: 1})


async def test_a_decline_of_one_open_proposal_leaves_the_other_and_proposes_nobody_new(world: World) -> None:
    e, first = await crisis(world)
    second = one(await escalate(world), ReferralMatched)
    out = await world.send(response(first, "declined"))
    assert [x.type for x in out] == [ReferralStatusChanged.TYPE]
    assert (await world.case(e.referral_id)).current_decision_id == second.decision_id  # type: ignore[union-attr]
    # The remaining one's hold expires: nobody left, it ends unmatched as before.
    await world.matching.expire_due(now=utcnow() + timedelta(hours=5))
    assert (await world.case(e.referral_id)).state == "unmatched"  # type: ignore[union-attr]
    await world.check_invariants()


async def test_one_of_two_holds_expiring_leaves_the_other_open(world: World) -> None:
    e, first = await crisis(world)
    second = one(await escalate(world), ReferralMatched)
    async with world.sessions() as s, s.begin():  # the first proposal's hold ends first
        await s.execute(update(SeatHold).where(SeatHold.decision_id == first.decision_id)
                        .values(expires_at=utcnow() - timedelta(hours=1)))
    mark = await world.outbox_mark()
    assert await world.matching.expire_due(now=utcnow() + timedelta(minutes=30)) == 1
    out = await world.published_since(mark)
    assert [x.payload().status for x in out if x.type == ReferralStatusChanged.TYPE] == ["hold_expired"]
    assert of(out, ReferralMatched) == []
    case = await world.case(e.referral_id)
    assert case is not None
    assert (case.state, case.current_decision_id) == ("proposed", second.decision_id)
    assert one(await world.send(response(second, "accepted")), ReferralStatusChanged).status == "accepted"


async def test_a_routine_proposal_never_escalates(world: World) -> None:
    e = submitted()
    await world.send(e)
    assert await escalate(world, after=timedelta(hours=71)) == []
    assert (await world.case(e.referral_id)).escalate_after is None  # type: ignore[union-attr]


# --- Handover ------------------------------------------------------------------------------


async def test_accepted_carries_the_receiving_contact_for_the_handover_and_only_then(world: World) -> None:
    await world.reset([JAYAPURA])
    m = one(await world.send(in_jayapura()), ReferralMatched)
    accepted = one(await world.send(response(m, "accepted")), ReferralStatusChanged)
    assert accepted.handover is not None
    assert (accepted.handover.name, accepted.handover.phone, accepted.handover.email) == (
        "Ibu Yohana Wenda", "+62 812 4800 0001", "rumahaman@papua.example")
    started = one(await world.send(response(m, "in_progress")), ReferralStatusChanged)
    assert started.handover is None


async def test_a_contact_with_only_an_email_is_reached_by_email(world: World) -> None:
    m = one(await world.send(submitted()), ReferralMatched)
    rec = m.recipients[0]
    assert (rec.phone, rec.webhook_url, rec.channels) == ("", "", ["email"])


async def test_a_change_made_by_another_process_is_taken_by_the_rematch_worker(
        database_url: str, redis_url: str, redis: Any) -> None:
    """An import from the command line (or a replica that crashed after its commit) leaves
    its change undone: a running replica's rematch worker takes it within its period."""
    app = create_app(Settings(database_url=database_url, redis_url=redis_url, operator_keys=OPERATOR_KEYS,
                              stream_block_ms=100, outbox_poll_interval_s=0.2, rematch_interval_s=0.5))
    async with running(app):
        matching, sessions = app.state.matching, app.state.runtime.sessions
        e = in_jayapura()
        await matching.handle([message(e)])
        await directory.add_service(sessions, JAYAPURA)  # committed, and nobody kicked

        async def proposed() -> bool:
            async with sessions() as s:
                case = await s.get(ReferralCase, e.referral_id, populate_existing=True)
                return case is not None and case.state == "proposed"

        await eventually(proposed, timeout=5)


async def test_an_import_in_many_batches_is_one_pass_each_referral_tried_once(world: World) -> None:
    await world.matching.rematch_pending()
    waiting = [in_jayapura() for _ in range(3)]
    for e in waiting:
        await world.send(e)
    shelters = [JAYAPURA.__class__(**{**vars(JAYAPURA), "id": f"svc-jayapura-{i}", "seats_available": 1,
                                      "capacities": ()}) for i in range(3)]
    doc = [to_hsds(r, seats_available=1) for r in shelters]
    report = await directory.import_parsed(world.sessions, parse_document(doc), batch=1)
    assert report.created == 3
    out = await pass_after_change(world)
    assert sorted(m.referral_id for m in of(out, ReferralMatched)) == sorted(e.referral_id for e in waiting)
    assert len(out) == 3
    async with world.sessions() as s:
        generations = {(await s.get(ReferralCase, e.referral_id)).rematch_generation  # type: ignore[union-attr]
                       for e in waiting}
    assert len(generations) == 1  # all at the last batch's generation: one pass


async def test_the_escalation_worker_escalates_an_unanswered_crisis_on_its_own(
        database_url: str, redis_url: str, redis: Any) -> None:
    app = create_app(Settings(database_url=database_url, redis_url=redis_url, operator_keys=OPERATOR_KEYS,
                              stream_block_ms=100, outbox_poll_interval_s=0.2, crisis_ack_minutes=0.02,
                              escalation_interval_s=0.2))
    async with running(app) as client:
        for rec in DIRECTORY:
            r = await client.post("/v1/services", json=to_hsds(rec, seats_available=rec.seats_available),
                                  headers=bearer(DIRECTORY_KEY))
            assert r.status_code == 201, r.text
        matching, sessions = app.state.matching, app.state.runtime.sessions
        e = submitted(urgency="crisis")
        await matching.handle([message(e)])

        async def escalated() -> list[Any]:
            async with sessions() as s:
                rows = (await s.scalars(select(Outbox.envelope).order_by(Outbox.id))).all()
            return [x.payload() for x in map(Envelope.model_validate_json, rows)
                    if x.type == ReferralEscalated.TYPE and x.subject == e.referral_id]

        found = await eventually(escalated, timeout=10)
        assert found[0].level == 1
        assert found[0].service_id in {"svc-ppa-medan", "svc-uptd-medan"}


async def test_two_replicas_escalating_at_once_escalate_once(world: World) -> None:
    await crisis(world)
    other = World(world.url)
    other.matching.crisis_ack = ACK
    try:
        mark = await world.outbox_mark()
        later = utcnow() + ACK * 2
        counts = await asyncio.gather(world.matching.escalate_due(now=later), other.matching.escalate_due(now=later))
        assert sum(counts) == 1
        out = await world.published_since(mark)
        assert [x.type for x in out] == [ReferralMatched.TYPE, ReferralEscalated.TYPE]
        assert sorted(h.state for h in await world.holds()) == ["held", "held"]
    finally:
        await other.close()
