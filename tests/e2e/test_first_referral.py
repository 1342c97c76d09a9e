"""A first referral end to end: three service processes, real Redis, real databases, a
real SMTP server run by the test. Nothing personal may appear on a stream or in a log."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync

from devtools.mailcatcher import MailCatcher, read_maildir
from tests.apps import DEMO_KEY
from tests.e2e.conftest import StackFactory
from tests.mails import text_of
from tests.unit.test_referral_request import VALID

pytestmark = pytest.mark.e2e

PERSONAL = ("Siti Nurhaliza", "812 3456", "siti@example.org", "rumah tangga sejak 2024", '"SN"')


def referral_body(ref: str) -> dict[str, Any]:
    body = json.loads(json.dumps(VALID))
    body["external_ref"] = ref
    body["client"]["contact"] = {"name": "Siti Nurhaliza", "phone": "+62 812 3456 7890", "email": "siti@example.org"}
    body["narrative"] = "Mengalami kekerasan dalam rumah tangga sejak 2024."
    return body


def wait_status(base: str, rid: str, statuses: set[str], timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        view = httpx.get(f"{base}/v1/referrals/{rid}", headers={"Authorization": f"Bearer {DEMO_KEY}"}).json()
        if view.get("status") in statuses and any(t["kind"] == "notified" for t in view.get("timeline", [])):
            return view
        time.sleep(0.1)
    raise AssertionError(f"referral stayed {view.get('status')}: {view}")


def assert_no_personal_data_on_streams(redis_url: str) -> int:
    r = redis_sync.Redis.from_url(redis_url)
    entries = 0
    for key in r.scan_iter("rujukan:*"):
        if r.type(key) != b"stream":
            continue
        for _, fields in r.xrange(key):
            entries += 1
            blob = b" ".join(fields.values()).decode()
            for secret in PERSONAL:
                assert secret not in blob, (key, secret)
    r.close()
    return entries


def assert_no_personal_data_in_logs(log_dir: Path) -> None:
    for log in log_dir.glob("*.log"):
        text = log.read_text(errors="replace")
        for secret in PERSONAL:
            assert secret not in text, (log.name, secret)


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_first_referral_reaches_the_facilitator_by_email(
    stack_factory: StackFactory, smtp_server: MailCatcher, database: str
) -> None:
    smtp_server.clear()
    stack = stack_factory(database=database, smtp_url=smtp_server.url)
    base = f"http://127.0.0.1:{stack.port('intake')}"
    auth = {"Authorization": f"Bearer {DEMO_KEY}"}

    r = httpx.post(f"{base}/v1/referrals", json=referral_body("PPA-MDN-2026-0147"), headers=auth)
    assert r.status_code == 202, r.text
    rid = r.json()["id"]

    view = wait_status(base, rid, {"proposed"})
    assert [t["kind"] for t in view["timeline"]][:2] == ["submitted", "proposed"]
    assert view["match"]["service_id"] == "svc-ppa-polrestabes-medan"

    mail = smtp_server.wait_for(lambda m: rid in text_of(m), timeout=20)
    assert mail["To"] == "unit.ppa@polrestabes-medan.example"
    text = text_of(mail)
    assert text.index("Rujukan baru diusulkan") < text.index("A new referral is proposed")  # Bahasa first
    for fact in ("Korban Tindak Kekerasan", "Kota Medan", "Urgensi       : biasa", "kursi tersedia"):
        assert fact in text
    for secret in PERSONAL:
        assert secret not in mail.as_string()

    # The same submission again changes nothing and sends nothing.
    again = httpx.post(f"{base}/v1/referrals", json=referral_body("PPA-MDN-2026-0147"), headers=auth)
    assert again.status_code == 200
    assert again.json()["id"] == rid

    assert stack.redis is not None  # the stack's own redis-server, as `make run` has
    assert assert_no_personal_data_on_streams(stack.redis.url) >= 3  # submitted, matched, notified
    assert stack.log_dir is not None
    assert_no_personal_data_in_logs(stack.log_dir)
    assert len([m for m in smtp_server.messages() if rid in text_of(m)]) == 1


def test_embedded_default_keeps_mail_as_eml_and_reports_unmatched(stack_factory: StackFactory) -> None:
    stack = stack_factory()  # its own mail catcher under var/mail, as `make run`
    base = f"http://127.0.0.1:{stack.port('intake')}"
    auth = {"Authorization": f"Bearer {DEMO_KEY}"}
    body = referral_body("DINSOS-KPG-7")
    body["pmks_category"] = "perempuan_rawan_sosial_ekonomi"
    body["client"]["region_code"] = "53.71.02"
    body["client"]["modality"] = "in_person"
    rid = httpx.post(f"{base}/v1/referrals", json=body, headers=auth).json()["id"]
    view = wait_status(base, rid, {"proposed"})
    assert view["match"]["service_id"] == "svc-prse-kupang"

    maildir = stack.var / "mail"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not read_maildir(maildir):
        time.sleep(0.1)
    mails = read_maildir(maildir)
    assert len(mails) == 1
    assert mails[0]["To"] == "pendamping.ueb@dinsos-kupang.example"

    # No service for this category anywhere: unmatched, with the reason on the timeline.
    body = referral_body("DINSOS-KPG-8")
    body["pmks_category"] = "komunitas_adat_terpencil"
    rid2 = httpx.post(f"{base}/v1/referrals", json=body, headers=auth).json()["id"]
    deadline = time.monotonic() + 20
    view2: dict[str, Any] = {}
    while time.monotonic() < deadline:
        view2 = httpx.get(f"{base}/v1/referrals/{rid2}", headers=auth).json()
        if view2["status"] == "unmatched":
            break
        time.sleep(0.1)
    assert view2["status"] == "unmatched"
    assert "tidak ada layanan" in view2["timeline"][-1]["reason"]["id"]
