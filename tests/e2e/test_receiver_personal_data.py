"""The receiver who took a referral on reads the person's details at intake — only then,
only what the person consented to, and every reading shows on the agency's timeline."""

from __future__ import annotations

import httpx
import pytest

from devtools.mailcatcher import MailCatcher
from tests.e2e.conftest import StackFactory
from tests.e2e.test_closed_loop import Loop
from tests.e2e.test_first_referral import assert_no_personal_data_in_logs, assert_no_personal_data_on_streams

pytestmark = pytest.mark.e2e


def test_receiver_reads_personal_data_only_after_accepting(
    stack_factory: StackFactory, smtp_server: MailCatcher
) -> None:
    smtp_server.clear()
    stack = stack_factory(smtp_url=smtp_server.url)
    loop = Loop(stack, smtp_server)
    rid = loop.refer("PPA-MDN-PD-1", client={"consent": {"share_with_provider": True, "contact_by_provider": True}})
    loop.wait_status(rid, "proposed")
    _, proposal, token = loop.proposal_mail(rid, "unit.ppa@polrestabes-medan.example")
    auth = loop.auth(token)

    # Before accepting: no grant is offered.
    assert httpx.get(f"{loop.notify}/v1/inbox/{proposal}", headers=auth).json()["personal_data"] is None

    assert loop.respond(token, proposal, response="accepted").status_code == 202
    loop.wait_status(rid, "accepted")
    offer = httpx.get(f"{loop.notify}/v1/inbox/{proposal}", headers=auth).json()["personal_data"]
    assert offer["url"] == stack.url(f"/v1/receivers/referrals/{rid}")  # the one address, as mails
    grant = {"Authorization": offer["authorization"]}

    data = httpx.get(offer["url"], headers=grant)
    assert data.status_code == 200, data.text
    body = data.json()
    assert body["client"]["contact"]["name"] == "Siti Nurhaliza"
    assert body["client"]["initials"] == "SN"
    assert body["narrative"].startswith("Mengalami kekerasan")
    view = loop.view(rid)
    seen = [t for t in view["timeline"] if t["kind"] == "personal_data_viewed"]
    assert len(seen) == 1
    assert seen[0]["actor"] == f"receiver:{loop.receiver_of('svc-ppa-polrestabes-medan')}"

    # The grant opens this referral only; a forged or missing one opens nothing.
    other = loop.refer("PPA-MDN-PD-2")
    assert httpx.get(f"{loop.intake}/v1/receivers/referrals/{other}", headers=grant).status_code == 403
    forged = {"Authorization": offer["authorization"][:-3] + "xyz"}
    assert httpx.get(offer["url"], headers=forged).status_code == 401
    assert httpx.get(offer["url"]).status_code == 401
    # An agency key is not a receiver grant.
    assert httpx.get(offer["url"], headers={"Authorization": "Bearer test-demo-key"}).status_code == 401

    # Once the referral is closed, the same grant no longer opens it.
    assert loop.respond(token, proposal, response="completed", outcome_code="goals_met").status_code == 202
    loop.wait_status(rid, "completed")
    assert httpx.get(offer["url"], headers=grant).status_code == 403

    assert stack.redis is not None
    assert stack.log_dir is not None
    assert_no_personal_data_on_streams(stack.redis.url)
    assert_no_personal_data_in_logs(stack.log_dir)


def test_without_consent_to_be_contacted_the_contact_stays_with_the_agency(
    stack_factory: StackFactory, smtp_server: MailCatcher
) -> None:
    smtp_server.clear()
    stack = stack_factory(smtp_url=smtp_server.url)
    loop = Loop(stack, smtp_server)
    rid = loop.refer("PPA-MDN-PD-3", client={"consent": {"share_with_provider": True, "contact_by_provider": False}})
    loop.wait_status(rid, "proposed")
    _, proposal, token = loop.proposal_mail(rid, "unit.ppa@polrestabes-medan.example")
    assert loop.respond(token, proposal, response="accepted").status_code == 202
    loop.wait_status(rid, "accepted")
    offer = httpx.get(f"{loop.notify}/v1/inbox/{proposal}", headers=loop.auth(token)).json()
    body = httpx.get(offer["personal_data"]["url"],
                     headers={"Authorization": offer["personal_data"]["authorization"]}).json()
    assert body["client"]["contact"] is None
    assert "lembaga perujuk" in body["note"]
    assert "Siti" not in str(body)
