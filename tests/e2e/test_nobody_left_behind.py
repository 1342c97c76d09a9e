"""Nobody left behind, through the three service processes: the agency's own webhook receiver
(signatures checked with the `standardwebhooks` package) is told of every step; a referral
from Jayapura that no service could take is matched within seconds of a shelter being
imported, without a sweep; a crisis proposal nobody answers escalates on a clock the test
sets (CRISIS_ACK_MINUTES), and the operators on duty are mailed."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from devtools.mailcatcher import MailCatcher
from tests.e2e.conftest import StackFactory
from tests.e2e.test_closed_loop import ADMIN, AGENCY, Loop
from tests.mails import text_of

pytestmark = pytest.mark.e2e

DEMO_DIRECTORY = Path(__file__).parents[2] / "services" / "matching" / "matching" / "seed" / "demo_directory.json"
MEDAN = "svc-ppa-polrestabes-medan"
ON_DUTY = "piket@rujukan.example"


class AgencyReceiver:
    """The agency's system: an HTTP endpoint on this machine that keeps what it is sent."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/rujukan"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def verified(self, secret: str) -> list[dict[str, Any]]:
        """Every payload received, each one's signature checked (raises on a bad one)."""
        hook = Webhook(secret)
        return [hook.verify(body, headers) for headers, body in list(self.received)]

    def wait_for(self, secret: str, referral_id: str, kind: str, timeout: float = 30) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [p for p in self.verified(secret)
                     if p["data"]["referral_id"] == referral_id and p["data"]["kind"] == kind]
            if found:
                return found
            time.sleep(0.2)
        raise AssertionError(f"no {kind} for {referral_id}: {[p['data']['kind'] for p in self.verified(secret)]}")


@pytest.fixture
def agency_receiver() -> Iterator[AgencyReceiver]:
    receiver = AgencyReceiver()
    yield receiver
    receiver.server.shutdown()


def register_webhook(loop: Loop, url: str) -> str:
    r = httpx.post(f"{loop.intake}/v1/webhooks", json={"url": url}, headers=AGENCY)
    assert r.status_code == 201, r.text
    secret = str(r.json()["secret"])
    assert secret.startswith("whsec_")
    return secret


def shelter_in_jayapura() -> dict[str, Any]:
    """The seed's Medan PPA unit as a shelter organisation serving the province of Papua."""
    seed = next(s for s in json.loads(DEMO_DIRECTORY.read_text()) if s["id"] == MEDAN)
    record: dict[str, Any] = json.loads(json.dumps(seed).replace(MEDAN, "svc-rumah-aman-jayapura"))
    record["name"] = "Rumah Aman Jayapura"
    record["organization_id"] = "org-dp3akb-papua"
    record["organization"] = {"id": "org-dp3akb-papua", "name": "DP3AKB Provinsi Papua"}
    record["service_areas"] = [{"id": "area-papua", "extent": "91", "extent_type": "text"}]
    record["contacts"] = [{**copy.deepcopy(seed["contacts"][0]), "id": "ct-jayapura",
                           "email": "rumahaman@papua.example"}]
    return record


def test_jayapura_unmatched_then_a_shelter_is_imported_and_it_is_matched_at_once(
    stack_factory: StackFactory, smtp_server: MailCatcher, agency_receiver: AgencyReceiver
) -> None:
    smtp_server.clear()
    # A sweep every 10 minutes: only the import itself can match it within the test.
    stack = stack_factory(smtp_url=smtp_server.url, WAITLIST_INTERVAL_S="600", REMATCH_INTERVAL_S="600")
    loop = Loop(stack, smtp_server)
    secret = register_webhook(loop, agency_receiver.url)

    rid = loop.refer("PPA-JYP-0001", client={"region_code": "91.71.02", "modality": "in_person"})
    loop.wait_status(rid, "unmatched")
    agency_receiver.wait_for(secret, rid, "unmatched")

    r = httpx.post(f"{loop.matching}/v1/directory/import", json=[shelter_in_jayapura()], headers=ADMIN)
    assert r.status_code == 200, r.text
    imported = time.monotonic()
    view = loop.wait_status(rid, "proposed", timeout=15)
    assert time.monotonic() - imported < 15
    assert view["match"]["service_id"] == "svc-rumah-aman-jayapura"
    proposed = agency_receiver.wait_for(secret, rid, "proposed")
    assert len(proposed) == 1  # once per step, whatever the retries
    loop.proposal_mail(rid, "rumahaman@papua.example")
    # Ids and codes only: nothing of the person in any payload.
    everything = json.dumps(agency_receiver.verified(secret))
    for personal in ("Siti", "812 3456", "siti@example.org", "kekerasan dalam rumah tangga"):
        assert personal not in everything
    # A forged signature is refused by the same library.
    headers, body = agency_receiver.received[-1]
    with pytest.raises(Exception):  # noqa: B017, PT011 (the library's own verification error)
        Webhook(secret).verify(body + b" ", headers)


def test_a_crisis_nobody_answers_escalates_and_the_operators_on_duty_are_told(
    stack_factory: StackFactory, smtp_server: MailCatcher, agency_receiver: AgencyReceiver
) -> None:
    smtp_server.clear()
    # The test's clock: a crisis proposal escalates after 3 s unanswered, looked at every 0.5 s.
    stack = stack_factory(smtp_url=smtp_server.url, CRISIS_ACK_MINUTES="0.05", ESCALATION_INTERVAL_S="0.5",
                          OPERATOR_ALERT_EMAILS=ON_DUTY)
    loop = Loop(stack, smtp_server)
    secret = register_webhook(loop, agency_receiver.url)

    rid = loop.refer("PPA-MDN-ESC-1", urgency="crisis", risk_flags=["ongoing_violence"], needs=["instrumental"])
    loop.wait_status(rid, "proposed")
    _, proposal, session = loop.proposal_mail(rid, "unit.ppa@polrestabes-medan.example")
    view = loop.wait(rid, lambda v: any(t["kind"] == "escalated" for t in v["timeline"]), timeout=40)
    escalated = next(t for t in view["timeline"] if t["kind"] == "escalated")
    assert escalated["reason"]["id"]  # why, in Bahasa Indonesia
    assert escalated["reason"]["en"]
    payload = agency_receiver.wait_for(secret, rid, "escalated")[0]
    assert payload["data"]["referral_id"] == rid
    alert = smtp_server.wait_for(lambda m: ON_DUTY in m["To"] and rid in text_of(m), timeout=30)
    body = text_of(alert)
    for personal in ("Siti", "812 3456", "siti@example.org", "kekerasan dalam rumah tangga"):
        assert personal not in body
    # Still answerable: the first receiver accepts, and the referral is accepted.
    assert loop.respond(session, proposal, response="accepted").status_code == 202
    accepted = loop.wait_status(rid, "accepted")
    assert accepted["handover"]["email"] == "unit.ppa@polrestabes-medan.example"
    agency_receiver.wait_for(secret, rid, "accepted")
