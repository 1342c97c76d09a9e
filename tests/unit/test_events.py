"""The event contracts: envelope, versioned payloads, parsing of bad entries, lanes."""

from __future__ import annotations

import json

import pytest

from shared.events import (
    EVENT_TYPES,
    BadEvent,
    Envelope,
    HandoverContact,
    Recipient,
    ReferralMatched,
    ReferralStatusChanged,
    ReferralSubmitted,
    parse_entry,
)
from shared.streams.topology import DECISIONS, DECISIONS_URGENT, SUBMITTED, SUBMITTED_URGENT, stream_for


def submitted(**over: object) -> ReferralSubmitted:
    base: dict[str, object] = dict(
        referral_id="01R", agency_id="demo", pmks_category="korban_tindak_kekerasan", needs=["emotional"],
        urgency="routine", risk_flags=[], region_code="12.71", age_band="30-34", gender="female",
        languages=["id"], modality="any", consent_share=True,
    )
    base.update(over)
    return ReferralSubmitted.model_validate(base)


def test_envelope_round_trips_through_a_stream_entry() -> None:
    env = Envelope.wrap(submitted(), source="rujukan/intake", subject="01R")
    fields = {k.encode(): v.encode() for k, v in env.to_fields().items()}
    parsed, data = parse_entry(fields)
    assert parsed == env
    assert isinstance(data, ReferralSubmitted)
    assert data.region_code == "12.71"
    assert parsed.specversion == "1.0"
    assert parsed.type == "referral.submitted.v1"


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    env = Envelope.wrap(submitted(), source="t", subject="01R")
    raw = json.loads(env.model_dump_json())
    raw["newattr"] = 1
    raw["data"]["added_in_v1_1"] = "x"
    _, data = parse_entry({"event": json.dumps(raw)})
    assert isinstance(data, ReferralSubmitted)


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"event": "{not json"}, "malformed JSON"),
        ({"other": "x"}, "no 'event' field"),
        ({"event": json.dumps({"type": "referral.submitted.v9", "source": "t", "subject": "s", "data": {}})},
         "unknown event type 'referral.submitted.v9'"),
        ({"event": json.dumps({"type": "referral.submitted.v1", "source": "t", "subject": "s",
                               "data": {"referral_id": "x"}})}, "pmks_category: Field required"),
        ({"event": json.dumps({"type": "referral.submitted.v1", "data": {}})}, "schema-invalid: source"),
    ],
)
def test_bad_entries_are_refused_with_the_reason(fields: dict[str, str], reason: str) -> None:
    with pytest.raises(BadEvent) as e:
        parse_entry(fields)
    assert reason in str(e.value)


def test_no_personal_data_fields_in_any_event_schema() -> None:
    forbidden = {"name", "phone", "email", "address", "narrative", "initials", "contact", "age"}
    for cls in EVENT_TYPES.values():
        assert not forbidden & set(cls.model_fields), cls
    # The only contact details on a stream are the receiving service's professional contact,
    # as the directory publishes it: for the proposal's channels and the agency's handover.
    assert set(Recipient.model_fields) == {"receiver_id", "contact_id", "email", "language", "phone", "webhook_url",
                                           "channels"}
    assert set(HandoverContact.model_fields) == {"name", "phone", "email"}
    assert {n for n, f in ReferralStatusChanged.model_fields.items() if f.annotation == HandoverContact | None} == \
        {"handover"}


def test_no_event_type_subclasses_another() -> None:
    # Handlers dispatch on the exact type: a subclass would make an event look like another.
    for cls in EVENT_TYPES.values():
        assert not [other for other in EVENT_TYPES.values() if other is not cls and issubclass(cls, other)], cls


@pytest.mark.parametrize(
    ("urgency", "flags", "lane"),
    [("routine", [], SUBMITTED), ("priority", [], SUBMITTED), ("crisis", [], SUBMITTED_URGENT),
     ("routine", ["suicidal_ideation"], SUBMITTED_URGENT)],
)
def test_crisis_or_any_risk_flag_takes_the_urgent_lane(urgency: str, flags: list[str], lane: str) -> None:
    env = Envelope.wrap(submitted(urgency=urgency, risk_flags=flags), source="t", subject="01R")
    assert stream_for(env) == lane


def test_decisions_follow_the_urgency_of_the_referral() -> None:
    def matched(urgency: str) -> Envelope:
        return Envelope.wrap(ReferralMatched(
            referral_id="r", decision_id="d", service_id="s", service_name="S", organization_name="O",
            resource_kind="police_ppa", pmks_category="korban_tindak_kekerasan", region_code="12.71",
            urgency=urgency, reasons_id=[], reasons_en=[], recipients=[],  # type: ignore[arg-type]
        ), source="t", subject="r")

    assert stream_for(matched("crisis")) == DECISIONS_URGENT
    assert stream_for(matched("routine")) == DECISIONS
