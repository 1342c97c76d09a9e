"""How a receiving contact is reached (matching/domain/contact_channels.py) and the
escalation's exclusion of services already proposed (domain/decision.rank): pure rules."""

from __future__ import annotations

from matching.domain.contact_channels import reach
from matching.domain.decision import ReferralFacts, ServiceView, rank


def test_an_email_only_contact_is_reached_by_email() -> None:
    r = reach("a@x.example", None, [])
    assert (r.phone, r.webhook_url, r.channels) == ("", "", ("email",))


def test_nothing_known_still_defaults_to_email() -> None:
    assert reach(None, "", []).channels == ("email",)


def test_phones_in_their_order_whatsapp_then_sms_then_the_webhook() -> None:
    r = reach("a@x.example", " https://hooks.example/p ", [
        {"number": "+62 21 555 0100", "type": "voice"},
        {"number": "+62 812 0000 1111", "type": "WhatsApp"},
        {"number": "+62 813 0000 2222", "type": "text"},
    ])
    assert r.channels == ("email", "whatsapp", "sms", "webhook")
    assert r.phone == "+62 812 0000 1111"  # the first number that takes messages
    assert r.webhook_url == "https://hooks.example/p"


def test_a_voice_line_is_the_phone_to_call_but_no_message_channel() -> None:
    r = reach("a@x.example", None, [{"number": "+62 21 555 0100", "type": "voice"}])
    assert (r.phone, r.channels) == ("+62 21 555 0100", ("email",))


def test_a_number_too_long_or_empty_is_not_used() -> None:
    r = reach("a@x.example", None, [{"number": "9" * 41, "type": "cell"}, {"number": "  ", "type": "text"}])
    assert (r.phone, r.channels) == ("", ("email",))


def _view(sid: str) -> ServiceView:
    return ServiceView(id=sid, name="", organization_name="", resource_kind="police_ppa", active=True, online=False,
                       pmks=frozenset({"korban_tindak_kekerasan"}), support_types=frozenset(), areas=("12.71",),
                       languages=frozenset({"id"}), policies=frozenset({"crisis_capable"}), minimum_age=None,
                       maximum_age=None, seats_available=1, seats_max=1)


def test_an_escalation_never_proposes_again_a_service_waiting_for_its_answer() -> None:
    f = ReferralFacts(referral_id="R", pmks_category="korban_tindak_kekerasan", region_code="12.71.05",
                      age_band="30-34", gender="female", languages=("id",), modality="any", urgency="crisis")
    ranking = rank(f, [_view("a"), _view("b")], proposed=frozenset({"a"}))
    assert [v.service.id for v in ranking.chosen] == ["b"]
    assert ranking.excluded[0].excluded_code == "proposed"
    assert ranking.excluded[0].excluded_id == "sudah diusulkan rujukan ini, menunggu jawaban"
