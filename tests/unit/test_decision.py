"""The decision, as a pure function: hard constraints never violated (checked against an
independent reading of the rules), crisis never to a support group, a decline never
proposed again, the ranking's order, its reasons and determinism."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from matching.domain.decision import (
    NEAR_DISTRICT,
    NEAR_ONLINE,
    NEAR_PROVINCE,
    NEAR_REGENCY,
    ReferralFacts,
    ServiceView,
    evaluate,
    nearness,
    rank,
)
from shared.vocab import PROFESSIONAL_KINDS, RESOURCE_KINDS, SUPPORT_GROUP_KINDS, Gender, Modality, RiskFlag

CATEGORIES = ["korban_tindak_kekerasan", "perempuan_rawan_sosial_ekonomi", "fakir_miskin"]
REGIONS = ["12", "12.71", "12.71.05", "12.71.09", "12.07", "12.07.01", "53.71", "53.71.02", "31.74.03"]
LANGS = ["id", "jv", "su", "en"]
NEEDS = ["emotional", "esteem", "instrumental", "informational", "network"]

facts_st = st.builds(
    ReferralFacts,
    referral_id=st.text("0123456789ABCDEFGHJKMNPQRSTVWXYZ", min_size=6, max_size=6),
    pmks_category=st.sampled_from(CATEGORIES),
    region_code=st.sampled_from([r for r in REGIONS if r.count(".") == 2]),
    age_band=st.integers(0, 23).map(lambda i: f"{i * 5}-{i * 5 + 4}"),
    gender=st.sampled_from(list(Gender)),
    languages=st.lists(st.sampled_from(LANGS), min_size=1, max_size=3, unique=True).map(tuple),
    modality=st.sampled_from(list(Modality)),
    urgency=st.sampled_from(["routine", "priority", "crisis"]),
    risk_flags=st.lists(st.sampled_from(list(RiskFlag)), max_size=2, unique=True).map(tuple),
    needs=st.lists(st.sampled_from(NEEDS), max_size=4, unique=True).map(tuple),
)


@st.composite
def service_st(draw: st.DrawFn, sid: str) -> ServiceView:
    seats_max = draw(st.integers(0, 15))
    min_age = draw(st.one_of(st.none(), st.integers(0, 30)))
    return ServiceView(
        id=sid, name=f"Layanan {sid}", organization_name="Org",
        resource_kind=draw(st.sampled_from(sorted(RESOURCE_KINDS))),
        active=draw(st.booleans()), online=draw(st.booleans()),
        pmks=frozenset(draw(st.lists(st.sampled_from(CATEGORIES), max_size=3, unique=True))),
        support_types=frozenset(draw(st.lists(st.sampled_from(NEEDS), max_size=5, unique=True))),
        areas=tuple(draw(st.lists(st.sampled_from(REGIONS), max_size=2, unique=True))),
        languages=frozenset(draw(st.lists(st.sampled_from(LANGS), min_size=1, max_size=3, unique=True))),
        policies=frozenset(draw(st.lists(st.sampled_from(["women_only", "crisis_capable", "open_24h"]),
                                         max_size=3, unique=True))),
        minimum_age=min_age,
        maximum_age=draw(st.one_of(st.none(), st.integers(min_age or 0, 100))),
        seats_available=draw(st.integers(0, seats_max)), seats_max=seats_max,
    )


directory_st = st.integers(1, 12).flatmap(
    lambda n: st.tuples(*[service_st(f"svc-{i:02d}") for i in range(n)]).map(list))


def breaks_a_rule(f: ReferralFacts, s: ServiceView) -> str | None:
    """The hard constraints, read again from the issue's words, independently of the code."""
    urgent = f.urgency == "crisis" or bool(f.risk_flags)
    in_area = any(f.region_code == a or f.region_code.startswith(a + ".") for a in s.areas)
    low, high = (int(x) for x in f.age_band.split("-"))
    if not s.active:
        return "inactive"
    if f.pmks_category not in s.pmks:
        return "category"
    if urgent and (s.resource_kind in SUPPORT_GROUP_KINDS or s.resource_kind not in PROFESSIONAL_KINDS):
        return "support group in crisis"
    if urgent and "crisis_capable" not in s.policies:
        return "not crisis capable"
    reachable_in_person = in_area and f.modality in ("in_person", "any")
    reachable_online = s.online and f.modality in ("online", "any")
    if not (reachable_in_person or reachable_online):
        return "area or modality"
    if "women_only" in s.policies and f.gender != "female":
        return "women only"
    if (s.minimum_age is not None and low < s.minimum_age) or (s.maximum_age is not None and high > s.maximum_age):
        return "age"
    if not set(f.languages) & s.languages:
        return "language"
    if s.seats_available <= 0:
        return "seat"
    return None


@settings(max_examples=300, deadline=None)
@given(facts_st, directory_st)
def test_eligible_exactly_when_no_hard_constraint_is_broken(f: ReferralFacts, services: list[ServiceView]) -> None:
    ranking = rank(f, services)
    for v in ranking.chosen:
        assert breaks_a_rule(f, v.service) is None, (v.service, breaks_a_rule(f, v.service))
    for v in ranking.excluded:
        assert breaks_a_rule(f, v.service) is not None, (v.service, v.excluded_en)
        assert v.excluded_id
        assert v.excluded_en  # every refusal says why, in both languages


@st.composite
def welcoming_service_st(draw: st.DrawFn, sid: str) -> ServiceView:
    """A service that meets every rule but the ones about danger (kind, crisis policy),
    so that the search spends its time where a crisis could go wrong."""
    return ServiceView(
        id=sid, name=sid, organization_name="Org", resource_kind=draw(st.sampled_from(sorted(RESOURCE_KINDS))),
        active=True, online=True, pmks=frozenset(CATEGORIES), support_types=frozenset(NEEDS), areas=("12", "53"),
        languages=frozenset(LANGS), policies=frozenset(draw(st.lists(st.sampled_from(["crisis_capable", "open_24h"]),
                                                                     max_size=2, unique=True))),
        minimum_age=None, maximum_age=None, seats_available=1, seats_max=5,
    )


danger_directory_st = st.integers(1, 8).flatmap(
    lambda n: st.tuples(*[welcoming_service_st(f"svc-{i:02d}") for i in range(n)]).map(list))


@settings(max_examples=400, deadline=None)
@given(facts_st.filter(lambda f: f.urgency == "crisis" or bool(f.risk_flags)),
       st.one_of(directory_st, danger_directory_st))
def test_danger_goes_only_to_crisis_capable_professionals(f: ReferralFacts, services: list[ServiceView]) -> None:
    for v in rank(f, services).chosen:
        assert v.service.resource_kind in PROFESSIONAL_KINDS
        assert v.service.resource_kind not in SUPPORT_GROUP_KINDS
        assert "crisis_capable" in v.service.policies
        assert "menangani kasus krisis" in v.reasons_id


@settings(max_examples=300, deadline=None)
@given(facts_st, directory_st, st.data())
def test_a_service_that_declined_or_let_it_lapse_is_never_proposed_again(
    f: ReferralFacts, services: list[ServiceView], data: st.DataObject
) -> None:
    ids = [s.id for s in services]
    declined = frozenset(data.draw(st.lists(st.sampled_from(ids), unique=True)))
    lapsed = frozenset(data.draw(st.lists(st.sampled_from(ids), unique=True)))
    ranking = rank(f, services, declined, lapsed)
    assert not {v.service.id for v in ranking.chosen} & (declined | lapsed)
    for v in ranking.excluded:
        if v.service.id in declined:
            assert v.excluded_code == "declined"


@settings(max_examples=100, deadline=None)
@given(facts_st, directory_st, st.randoms(use_true_random=False))
def test_same_inputs_same_decision_whatever_the_order_read(
    f: ReferralFacts, services: list[ServiceView], rnd: random.Random
) -> None:
    shuffled = list(services)
    rnd.shuffle(shuffled)
    a, b = rank(f, services), rank(f, shuffled)
    assert [(v.service.id, v.reasons_id) for v in a.chosen] == [(v.service.id, v.reasons_id) for v in b.chosen]
    assert [v.service.id for v in a.excluded] == [v.service.id for v in b.excluded]


# --- ranking and reasons, by example -------------------------------------------------------


def facts(**kw: object) -> ReferralFacts:
    base: dict[str, object] = dict(
        referral_id="01HREF", pmks_category="korban_tindak_kekerasan", region_code="12.71.05", age_band="30-34",
        gender="female", languages=("id",), modality="any", urgency="routine", needs=("emotional",),
    )
    base.update(kw)
    return ReferralFacts(**base)  # type: ignore[arg-type]


def svc(sid: str, **kw: object) -> ServiceView:
    base: dict[str, object] = dict(
        id=sid, name=sid, organization_name="Org", resource_kind="social_worker", active=True, online=False,
        pmks=frozenset({"korban_tindak_kekerasan"}), support_types=frozenset({"emotional"}), areas=("12.71",),
        languages=frozenset({"id"}), policies=frozenset(), minimum_age=None, maximum_age=None,
        seats_available=3, seats_max=12,
    )
    base.update(kw)
    return ServiceView(**base)  # type: ignore[arg-type]


def test_nearness_same_district_then_regency_then_province_then_online() -> None:
    services = [svc("online", areas=(), online=True), svc("province", areas=("12",)),
                svc("regency", areas=("12.71",)), svc("district", areas=("12.71.05",))]
    assert [v.service.id for v in rank(facts(), services).chosen] == ["district", "regency", "province", "online"]
    assert [nearness(s, "12.71.05")[0] for s in services] == [NEAR_ONLINE, NEAR_PROVINCE, NEAR_REGENCY, NEAR_DISTRICT]
    # Where the service actually is beats how widely its area is drawn.
    placed = svc("placed", areas=("12",), locations=("12.71.05",))
    assert nearness(placed, "12.71.05")[0] == NEAR_DISTRICT
    assert nearness(svc("far", areas=("12",), locations=("12.07.01",)), "12.71.05")[0] == NEAR_PROVINCE


def test_support_types_come_before_nearness_language_before_load() -> None:
    f = facts(needs=("emotional", "instrumental"), languages=("jv", "id"))
    near_one_need = svc("near", areas=("12.71.05",))
    far_two_needs = svc("far", areas=("12",), support_types=frozenset({"emotional", "instrumental"}))
    assert rank(f, [near_one_need, far_two_needs]).chosen[0].service.id == "far"
    javanese_full = svc("jv", languages=frozenset({"id", "jv"}), seats_available=1)
    indonesian_empty = svc("id", seats_available=12)
    assert rank(f, [javanese_full, indonesian_empty]).chosen[0].service.id == "jv"
    emptier = svc("emptier", seats_available=9)
    fuller = svc("fuller", seats_available=2)
    assert rank(f, [fuller, emptier]).chosen[0].service.id == "emptier"


def test_equally_good_services_take_turns_across_referrals() -> None:
    twins = [svc("a"), svc("b"), svc("c")]
    firsts = {rank(facts(referral_id=f"R{i:04d}"), twins).chosen[0].service.id for i in range(60)}
    assert firsts == {"a", "b", "c"}


def test_reasons_read_like_the_issue_in_both_languages() -> None:
    v = evaluate(facts(), svc("ppa", areas=("12.71",)))
    assert "; ".join(v.reasons_id) == ("melayani korban tindak kekerasan; wilayah Kota Medan; "
                                       "dukungan emosional (1 dari 1 kebutuhan); bahasa id; kursi tersedia 3/12")
    assert "serves" in v.reasons_en[0]
    assert v.reasons_en[-1] == "seats available 3/12"


def test_a_crisis_names_the_24h_service_and_refuses_a_peer_group_with_why() -> None:
    f = facts(urgency="crisis")
    police = svc("police", resource_kind="police_ppa", policies=frozenset({"crisis_capable", "open_24h"}))
    peers = svc("peers", resource_kind="peer_support", policies=frozenset({"crisis_capable"}))
    ranking = rank(f, [police, peers])
    assert [v.service.id for v in ranking.chosen] == ["police"]
    assert "buka 24 jam" in ranking.chosen[0].reasons_id
    assert ranking.excluded[0].excluded_id == "kelompok dukungan tidak menangani situasi darurat"
    # A risk flag alone is enough to count as danger.
    assert [v.service.id for v in rank(facts(risk_flags=("suicidal_ideation",)), [police, peers]).chosen] == ["police"]


def test_online_and_in_person_preferences() -> None:
    online_only = svc("online", areas=(), online=True)
    in_person_only = svc("office", areas=("12.71",))
    assert [v.service.id for v in rank(facts(modality="in_person"), [online_only, in_person_only]).chosen] == ["office"]
    assert [v.service.id for v in rank(facts(modality="online"), [online_only, in_person_only]).chosen] == ["online"]
    outside = svc("kupang", areas=("53.71",))
    assert rank(facts(), [outside]).excluded[0].excluded_code == "outside_area"
