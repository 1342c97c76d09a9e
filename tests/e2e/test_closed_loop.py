"""The closed loop end to end, as the brief's users live it: three service processes (as
`make run` starts them), real Redis, real databases, a real SMTP server. Receivers answer
from the sign-in link their proposal mail carries (a session that opens that proposal);
the referring agency follows every step on its timeline, with who and why. Nothing
personal on a stream or in a log."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

import httpx
import pytest

from devtools.devstack import Stack
from devtools.mailcatcher import MailCatcher
from tests.apps import DEMO_KEY, DIRECTORY_KEY
from tests.e2e.conftest import StackFactory
from tests.e2e.test_first_referral import PERSONAL, assert_no_personal_data_in_logs, assert_no_personal_data_on_streams
from tests.mails import text_of
from tests.unit.test_referral_request import VALID

pytestmark = pytest.mark.e2e

AGENCY = {"Authorization": f"Bearer {DEMO_KEY}"}
ADMIN = {"Authorization": f"Bearer {DIRECTORY_KEY}"}
SIGNIN = re.compile(r"(https?://\S+/signin/[A-Za-z0-9_\-]+)")
SESSION = re.compile(r"rujukan_session=([^;]+)")


class Loop:
    """The stack seen from its users: the agency on intake, receivers on notify, the
    operator on matching, and the receivers' mailboxes."""

    def __init__(self, stack: Stack, mail: MailCatcher) -> None:
        self.intake = f"http://127.0.0.1:{stack.port('intake')}"
        self.notify = f"http://127.0.0.1:{stack.port('notify')}"
        self.matching = f"http://127.0.0.1:{stack.port('matching')}"
        self.mail = mail

    def refer(self, ref: str, **changes: Any) -> str:
        body = json.loads(json.dumps(VALID))
        body["external_ref"] = ref
        body["client"]["contact"] = {"name": "Siti Nurhaliza", "phone": "+62 812 3456 7890",
                                     "email": "siti@example.org"}
        body["narrative"] = "Mengalami kekerasan dalam rumah tangga sejak 2024."
        client = changes.pop("client", {})
        body.update(changes)
        body["client"].update(client)
        r = httpx.post(f"{self.intake}/v1/referrals", json=body, headers=AGENCY)
        assert r.status_code == 202, r.text
        return str(r.json()["id"])

    def view(self, rid: str) -> dict[str, Any]:
        return httpx.get(f"{self.intake}/v1/referrals/{rid}", headers=AGENCY).json()

    def wait(self, rid: str, until: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        view: dict[str, Any] = {}
        while time.monotonic() < deadline:
            view = self.view(rid)
            if until(view):
                return view
            time.sleep(0.1)
        raise AssertionError(f"referral {rid} never got there: {json.dumps(view, indent=1)}")

    def wait_status(self, rid: str, status: str, timeout: float = 30) -> dict[str, Any]:
        return self.wait(rid, lambda v: v["status"] == status, timeout)

    def proposal_mail(self, rid: str, to: str, timeout: float = 30) -> tuple[EmailMessage, str, str]:
        """The proposal of `rid` mailed to `to`, its link followed: (mail, proposal id, the
        session the link started)."""
        mail = self.mail.wait_for(lambda m: m["To"] == to and rid in text_of(m)
                                  and "Rujukan baru" in m["Subject"], timeout=timeout)
        link = SIGNIN.search(text_of(mail))
        assert link is not None, text_of(mail)
        assert "Authorization" not in text_of(mail), text_of(mail)
        proposal, session = self.sign_in(link.group(1))
        return mail, proposal, session

    def sign_in(self, link: str) -> tuple[str, str]:
        """Follow a mail's sign-in link: (the proposal it opened, the session cookie)."""
        r = httpx.get(link)
        assert r.status_code == 303, r.text
        session = SESSION.search(r.headers["set-cookie"])
        assert session is not None
        return r.headers["location"].rsplit("/", 1)[1], session.group(1)

    @staticmethod
    def auth(session: str) -> dict[str, str]:
        return {"Cookie": f"rujukan_session={session}"}

    def receiver_of(self, service_id: str) -> str:
        """The receiver id matching issued for the service's receiving contact."""
        svc = httpx.get(f"{self.matching}/v1/services/{service_id}", headers=ADMIN).json()
        return str(svc["rujukan"]["receiver_id"])

    def respond(self, session: str, proposal_id: str, **body: Any) -> httpx.Response:
        return httpx.post(f"{self.notify}/v1/inbox/{proposal_id}/responses", json=body, headers=self.auth(session))

    def steps(self, view: dict[str, Any]) -> list[tuple[str, str | None]]:
        return [(t["kind"], t["status"]) for t in view["timeline"] if t["kind"] != "notified"]


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_referrals_through_the_closed_loop(stack_factory: StackFactory, smtp_server: MailCatcher,
                                           database: str) -> None:
    smtp_server.clear()
    stack = stack_factory(database=database, smtp_url=smtp_server.url)
    loop = Loop(stack, smtp_server)

    # 1. A PPA officer refers a KDRT survivor in Medan in crisis: the police PPA unit, at once.
    crisis = loop.refer("PPA-MDN-0001", urgency="crisis", risk_flags=["ongoing_violence"], needs=["instrumental"])
    view = loop.wait_status(crisis, "proposed")
    assert view["match"]["service_id"] == "svc-ppa-polrestabes-medan"
    mail, proposal, token = loop.proposal_mail(crisis, "unit.ppa@polrestabes-medan.example")
    assert mail["Subject"].startswith("[KRISIS (SEGERA)]")
    assert mail["Importance"] == "high"
    inbox = httpx.get(f"{loop.notify}/v1/inbox", headers=loop.auth(token)).json()
    assert [i["id"] for i in inbox["items"]] == [proposal]
    assert "menangani kasus krisis" in inbox["items"][0]["reasons"]["id"]
    assert loop.respond(token, proposal, response="accepted").status_code == 202
    loop.wait_status(crisis, "accepted")
    assert loop.respond(token, proposal, response="in_progress").status_code == 202
    loop.wait_status(crisis, "in_progress")
    assert loop.respond(token, proposal, response="completed", outcome_code="goals_met").status_code == 202
    view = loop.wait_status(crisis, "completed")
    assert loop.steps(view) == [("submitted", "submitted"), ("proposed", "proposed"), ("accepted", "accepted"),
                                ("in_progress", "in_progress"), ("completed", "completed")]
    done = view["timeline"][-1]
    assert done["actor"] == f"receiver:{loop.receiver_of('svc-ppa-polrestabes-medan')}"
    assert done["reason"]["id"] == ("Selesai di Unit Pelayanan Perempuan dan Anak (PPA) Polrestabes Medan "
                                   "(Polrestabes Medan): tujuan layanan tercapai")
    audit = httpx.get(f"{loop.matching}/v1/decisions", params={"referral_id": crisis}, headers=ADMIN).json()
    assert audit["items"][0]["candidates"][0]["outcome"] == "chosen"

    # 2. A routine referral: the online peer group covers her need best, but its facilitator
    #    declines; the next candidate is proposed at once, and never the group again.
    routine = loop.refer("PPA-MDN-0002", needs=["emotional"])
    loop.wait_status(routine, "proposed")
    _, group_proposal, group_token = loop.proposal_mail(routine, "fasilitator.ird@sahabat-perempuan.example")
    r = loop.respond(group_token, group_proposal, response="declined")
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "reason_code"
    assert loop.respond(group_token, group_proposal, response="declined", reason_code="not_suitable").status_code == 202
    view = loop.wait(routine, lambda v: v["status"] == "proposed" and v["match"]["service_id"] != "svc-ird-daring")
    assert view["match"]["service_id"] == "svc-ppa-polrestabes-medan"
    declined = next(t for t in view["timeline"] if t["kind"] == "declined")
    assert declined["actor"] == f"receiver:{loop.receiver_of('svc-ird-daring')}"
    assert declined["reason"]["id"].endswith("layanan tidak sesuai kebutuhan klien")
    assert loop.respond(group_token, group_proposal, response="accepted").status_code == 409
    _, police_proposal, police_token = loop.proposal_mail(routine, "unit.ppa@polrestabes-medan.example")
    loop.respond(police_token, police_proposal, response="declined", reason_code="outside_mandate")
    view = loop.wait_status(routine, "unmatched")
    assert "sudah menolak" in view["timeline"][-1]["reason"]["id"]

    # 3. PRSE women in Kupang who want to meet in person: five seats in the Kupang group.
    kupang = [loop.refer(f"DINSOS-KPG-{i}", pmks_category="perempuan_rawan_sosial_ekonomi", needs=["instrumental"],
                         client={"region_code": "53.71.02", "modality": "in_person"}) for i in range(7)]
    for rid in kupang[:5]:
        assert loop.wait_status(rid, "proposed")["match"]["service_id"] == "svc-prse-kupang"
    for rid in kupang[5:]:
        view = loop.wait_status(rid, "waitlisted")
        assert "menunggu kursi kosong" in view["timeline"][-1]["reason"]["id"]

    # 4. The agency cancels one (she withdrew): her seat goes to the first woman waiting, and
    #    the Kupang facilitator is told.
    r = httpx.post(f"{loop.intake}/v1/referrals/{kupang[0]}/cancel", json={"reason_code": "client_withdrew"},
                   headers=AGENCY)
    assert r.status_code == 200
    assert r.json()["status"] == "cancelled"
    assert loop.wait_status(kupang[5], "proposed")["match"]["service_id"] == "svc-prse-kupang"
    notice = smtp_server.wait_for(lambda m: m["Subject"].startswith("Rujukan dibatalkan") and kupang[0] in m["Subject"],
                                  timeout=30)
    assert notice["To"] == "pendamping.ueb@dinsos-kupang.example"
    assert "klien mengundurkan diri" in text_of(notice)
    assert loop.view(kupang[6])["status"] == "waitlisted"

    # 5. Kupang declares one more free seat: the last woman waiting is matched.
    r = httpx.put(f"{loop.matching}/v1/services/svc-prse-kupang/capacity", json={"maximum": 15, "available": 6},
                  headers=ADMIN)
    assert r.status_code == 200, r.text
    assert loop.wait_status(kupang[6], "proposed")["match"]["service_id"] == "svc-prse-kupang"

    assert stack.redis is not None
    assert stack.log_dir is not None
    assert assert_no_personal_data_on_streams(stack.redis.url) > 20
    assert_no_personal_data_in_logs(stack.log_dir)
    for m in smtp_server.messages():
        for secret in PERSONAL:
            assert secret not in m.as_string()


def test_an_unanswered_proposal_expires_and_moves_on(stack_factory: StackFactory, smtp_server: MailCatcher) -> None:
    """The peer group's facilitator does not answer in time: the seat is released, she is
    told, and the referral goes to the next candidate."""
    smtp_server.clear()
    stack = stack_factory(smtp_url=smtp_server.url, HOLD_HOURS_ROUTINE="0.001", HOLD_GRACE_S="0",
                          HOLD_EXPIRY_INTERVAL_S="0.5")
    loop = Loop(stack, smtp_server)
    rid = loop.refer("PPA-MDN-0003", needs=["emotional"])
    loop.proposal_mail(rid, "fasilitator.ird@sahabat-perempuan.example")
    view = loop.wait(rid, lambda v: v["status"] == "proposed" and v["match"]["service_id"] != "svc-ird-daring")
    assert view["match"]["service_id"] == "svc-ppa-polrestabes-medan"
    expired = next(t for t in view["timeline"] if t["kind"] == "hold_expired")
    assert expired["actor"] == "matching"
    assert "tidak menanggapi dalam batas waktu" in expired["reason"]["id"]
    notice = smtp_server.wait_for(lambda m: m["Subject"].startswith("Batas waktu habis"), timeout=30)
    assert notice["To"] == "fasilitator.ird@sahabat-perempuan.example"
