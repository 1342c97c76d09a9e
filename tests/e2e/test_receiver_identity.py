"""A receiver is identified by the id matching issues for its (organisation, service,
contact), never by the HSDS contact id a directory record gives: the issue's reproduction,
end to end, with three service processes, real Redis, real databases and a real SMTP
server. Another organisation imports a copy of the Medan PPA unit whose contact reuses
`ct-ppa-medan` with its own email; the mail to that email opens neither Medan's proposals
nor the personal data behind them, and the Medan unit goes on working. Revoking a
receiver's session kills the grants it obtained, at intake, through the stream."""

from __future__ import annotations

import copy
import json
import re
import time
from typing import Any

import httpx
import pytest

from devtools.mailcatcher import MailCatcher
from matching.bootstrap import DEMO_DIRECTORY
from tests.apps import ONBOARDING_KEY, bearer
from tests.e2e.conftest import StackFactory
from tests.e2e.test_closed_loop import ADMIN, Loop
from tests.e2e.test_first_referral import assert_no_personal_data_in_logs, assert_no_personal_data_on_streams
from tests.mails import text_of

pytestmark = pytest.mark.e2e

MEDAN = "svc-ppa-polrestabes-medan"
MEDAN_MAIL = "unit.ppa@polrestabes-medan.example"
COPY = "svc-ppa-tiruan"
COPY_MAIL = "penerima@tiruan.example"
CRISIS: dict[str, Any] = dict(urgency="crisis", risk_flags=["ongoing_violence"], needs=["instrumental"])


def copy_of_medan() -> dict[str, Any]:
    """The seed's Medan PPA unit under another id, organisation and area (Banjarmasin),
    whose contact reuses the id `ct-ppa-medan` with another email."""
    seed = next(s for s in json.loads(DEMO_DIRECTORY.read_text()) if s["id"] == MEDAN)
    record: dict[str, Any] = json.loads(json.dumps(seed).replace(MEDAN, COPY))
    record["organization_id"] = "org-tiruan"
    record["organization"] = {"id": "org-tiruan", "name": "Lembaga Tiruan"}
    record["service_areas"] = [{"id": "area-tiruan", "extent": "63.71", "extent_type": "text"}]
    record["contacts"] = [{**copy.deepcopy(seed["contacts"][0]), "id": "ct-ppa-medan", "email": COPY_MAIL}]
    return record


def eventually_status(url: str, headers: dict[str, str], status: int, timeout: float = 20) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(url, headers=headers)
        if r.status_code == status or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_record_reusing_another_organisations_contact_id_borrows_nothing(
    stack_factory: StackFactory, smtp_server: MailCatcher, database: str
) -> None:
    smtp_server.clear()
    stack = stack_factory(database=database, smtp_url=smtp_server.url)
    loop = Loop(stack, smtp_server)
    consent = {"consent": {"share_with_provider": True, "contact_by_provider": True}}

    # Medan's unit accepts a survivor's referral: its inbox now leads to her details.
    medan_rid = loop.refer("PPA-MDN-ID-1", client=consent, **CRISIS)
    loop.wait_status(medan_rid, "proposed")
    _, medan_proposal, medan_session = loop.proposal_mail(medan_rid, MEDAN_MAIL)
    assert loop.respond(medan_session, medan_proposal, response="accepted").status_code == 202
    loop.wait_status(medan_rid, "accepted")

    # Another organisation's copy reuses the contact id: reported for that contact, with why.
    r = httpx.post(f"{loop.matching}/v1/directory/import", json=[copy_of_medan()], headers=ADMIN)
    assert r.status_code == 200, r.text
    [record] = r.json()["records"]
    assert record["outcome"] == "created"
    reused = [i for i in record.get("issues", []) if i["field"] == "contacts[0].id"]
    assert len(reused) == 1, record
    assert reused[0]["severity"] == "warning", record
    assert "ct-ppa-medan" in reused[0]["reason"]
    assert MEDAN in reused[0]["reason"]
    medan_receiver, copy_receiver = loop.receiver_of(MEDAN), loop.receiver_of(COPY)
    assert medan_receiver
    assert copy_receiver
    assert medan_receiver != copy_receiver

    # A referral in the copy's area: its mail goes to the other email, and opens only its own.
    copy_rid = loop.refer("PPA-BJM-ID-1", client={"region_code": "63.71.01", **consent}, **CRISIS)
    assert loop.wait_status(copy_rid, "proposed")["match"]["service_id"] == COPY
    mail, copy_proposal, copy_session = loop.proposal_mail(copy_rid, COPY_MAIL)
    assert medan_rid not in text_of(mail)
    auth = loop.auth(copy_session)
    listed = httpx.get(f"{loop.notify}/v1/inbox", headers=auth).json()
    assert listed["receiver_id"] == copy_receiver
    assert [i["id"] for i in listed["items"]] == [copy_proposal]
    assert httpx.get(f"{loop.notify}/v1/inbox/{medan_proposal}", headers=auth).status_code == 404
    r = httpx.post(f"{loop.notify}/v1/inbox/{medan_proposal}/responses", json={"response": "completed",
                                                                                "outcome_code": "goals_met"},
                   headers=auth)
    assert r.status_code == 404
    # Even a system token for the copy's receiver (its whole inbox) sees none of Medan's. It is
    # mailed to the copy's own address (the one its directory record gives), never shown to
    # the operator who issued it.
    issued = httpx.post(f"{loop.notify}/v1/receivers/{copy_receiver}/tokens", json={"valid_days": 1},
                        headers=bearer(ONBOARDING_KEY))
    assert issued.status_code == 202, issued.text
    assert "rjk_" not in issued.text
    assert issued.json()["delivered_to"] == "p***@tiruan.example"
    token_mail = loop.mail.wait_for(lambda m: m["To"] == COPY_MAIL and issued.json()["id"] in text_of(m),
                                    timeout=30)
    token = re.search(r"Authorization: Bearer (rjk_[A-Za-z0-9_\-]+)", text_of(token_mail))
    assert token is not None
    assert not [m for m in loop.mail.messages()
                                      if m["To"] == MEDAN_MAIL and token.group(1) in text_of(m)]
    whole = httpx.get(f"{loop.notify}/v1/inbox", headers=bearer(token.group(1))).json()
    assert [i["id"] for i in whole["items"]] == [copy_proposal]

    # The copy accepts its own referral: its grant opens that one, never Medan's.
    assert loop.respond(copy_session, copy_proposal, response="accepted").status_code == 202
    loop.wait_status(copy_rid, "accepted")
    offer = httpx.get(f"{loop.notify}/v1/inbox/{copy_proposal}", headers=auth).json()["personal_data"]
    grant = {"Authorization": offer["authorization"]}
    assert httpx.get(offer["url"], headers=grant).status_code == 200
    stolen = httpx.get(f"{loop.intake}/v1/receivers/referrals/{medan_rid}", headers=grant)
    assert stolen.status_code == 403
    assert "Siti" not in stolen.text

    # The legitimate Medan receiver still works, and reads its survivor's details.
    medan_auth = loop.auth(medan_session)
    offer = httpx.get(f"{loop.notify}/v1/inbox/{medan_proposal}", headers=medan_auth).json()["personal_data"]
    medan_grant = {"Authorization": offer["authorization"]}
    details = httpx.get(offer["url"], headers=medan_grant)
    assert details.status_code == 200
    assert details.json()["client"]["contact"]["name"] == "Siti Nurhaliza"
    seen = [t for t in loop.view(medan_rid)["timeline"] if t["kind"] == "personal_data_viewed"]
    assert [t["actor"] for t in seen] == [f"receiver:{medan_receiver}"]

    # An operator revokes Medan's session: the grant it obtained dies at intake.
    creds = httpx.get(f"{loop.notify}/v1/receivers/{medan_receiver}/credentials",
                      headers=bearer(ONBOARDING_KEY)).json()["items"]
    [session] = [c for c in creds if c["kind"] == "session"]
    assert medan_session not in json.dumps(creds)
    r = httpx.delete(f"{loop.notify}/v1/receivers/{medan_receiver}/credentials/{session['id']}",
                     headers=bearer(ONBOARDING_KEY))
    assert r.status_code == 204
    assert httpx.get(f"{loop.notify}/v1/inbox", headers=medan_auth).status_code == 401
    refused = eventually_status(offer["url"], medan_grant, 401)
    assert refused.status_code == 401
    assert "revoked" in refused.text
    assert "Siti" not in refused.text
    # The copy's grant, from a credential nobody revoked, still opens its own referral.
    assert httpx.get(f"{loop.intake}/v1/receivers/referrals/{copy_rid}", headers=grant).status_code == 200

    assert stack.redis is not None
    assert stack.log_dir is not None
    assert_no_personal_data_on_streams(stack.redis.url)
    assert_no_personal_data_in_logs(stack.log_dir)
