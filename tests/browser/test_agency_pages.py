"""Agency staff on a phone, in a real Chromium through the one address: the landing page,
sign-in with the link from the real mail catcher, the referral form refused with its errors
in Bahasa Indonesia and then sent, and the referral's page following it to proposed and,
once the receiver accepted from their proposal mail's link, to accepted. axe-core and a
screenshot on every page."""

from __future__ import annotations

import re
import time
from typing import Any

from devtools.mailcatcher import MailCatcher
from intake.bootstrap import DEMO_STAFF_EMAIL
from tests.browser.conftest import seen
from tests.e2e.conftest import StackFactory
from tests.e2e.test_closed_loop import Loop

AGENCY_LINK = re.compile(r"(https?://\S+/agency/signin/[A-Za-z0-9_\-]+)")


def wait_for_status(page: Any, label: str, timeout: float = 45) -> None:
    """Reload the referral's page until its status reads `label` (the page is plain HTML)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if page.locator("#status").inner_text() == label:
            return
        time.sleep(0.5)
        page.reload()
    raise AssertionError(f"the status stayed {page.locator('#status').inner_text()!r}, not {label!r}")


def test_an_agency_signs_in_submits_and_follows_a_referral(stack_factory: StackFactory, smtp_server: MailCatcher,
                                                           phone: Any) -> None:
    smtp_server.clear()
    stack = stack_factory(smtp_url=smtp_server.url)
    page = phone

    page.goto(stack.url("/"))
    seen(page, "landing")
    page.get_by_role("link", name="Masuk sebagai staf lembaga").click()
    page.wait_for_url(re.compile(r"/agency/signin$"))
    seen(page, "agency-signin")
    page.get_by_label("Alamat surel kantor").fill(DEMO_STAFF_EMAIL)
    page.get_by_role("button", name="Kirimi saya tautan masuk").click()
    page.locator("p.success").wait_for()
    assert "tautan masuk sedang dikirim" in page.content()
    seen(page, "agency-signin-sent")

    mail = smtp_server.wait_for(lambda m: m["To"] == DEMO_STAFF_EMAIL, timeout=30)
    link = AGENCY_LINK.search(mail.get_content())
    assert link is not None, mail.get_content()
    page.goto(link.group(1))
    page.wait_for_url(re.compile(r"/agency/referrals$"))  # the code is out of the address bar
    assert DEMO_STAFF_EMAIL in page.content()
    seen(page, "agency-referrals-empty")

    page.get_by_role("link", name="Rujukan baru").first.click()
    page.wait_for_url(re.compile(r"/agency/referrals/new$"))
    seen(page, "agency-referral-form")

    # Sent empty: every missing answer is said next to its field, in Bahasa Indonesia.
    page.get_by_label("Inisial").fill("SN")
    page.get_by_label("Usia (tahun)").fill("tiga puluh")
    page.get_by_role("button", name="Kirim rujukan").click()
    page.locator(".error-summary").wait_for()
    summary = page.get_by_role("alert").filter(has_text="Mohon perbaiki isian berikut")
    assert summary.is_visible()
    for message in ("Kategori PMKS: pilih yang paling sesuai", "Usia: tulis usia dalam tahun",
                    "Provinsi: pilih provinsi", "Persetujuan berbagi data: bacakan pertanyaannya"):
        assert page.get_by_text(message).first.is_visible(), message
    assert page.get_by_label("Inisial").input_value() == "SN"  # what was typed stays
    seen(page, "agency-referral-form-errors")

    # A crisis, with violence still going on: the police PPA unit in Medan, at once.
    form = page.locator("form.referral-form")
    form.locator("input[name=pmks_category][value=korban_tindak_kekerasan]").check()
    form.locator("input[name=urgency][value=crisis]").check()
    form.locator("input[name=risk_flags][value=ongoing_violence]").check()
    assert page.locator("#crisis-note.active").is_visible()  # the script brings the note forward
    form.locator("input[name=needs][value=instrumental]").check()
    page.get_by_label("Usia (tahun)").fill("34")
    form.locator("input[name=gender][value=female]").check()
    page.get_by_label("Provinsi", exact=True).select_option("12")
    page.get_by_label("Kabupaten atau kota (boleh kosong)").select_option("12.71")
    page.get_by_label("Kode kecamatan (boleh kosong)").fill("05")
    form.locator("input[name=modality][value=in_person]").check()
    page.get_by_label("Nama panggilan").fill("Siti")
    page.get_by_label("Telepon (boleh kosong)").fill("+62 812 3456 7890")
    form.locator("input[name=consent_share][value=yes]").check()
    form.locator("input[name=consent_contact][value=yes]").check()
    page.get_by_label("Yang perlu diketahui layanan (boleh kosong)").fill("Suami masih mengancam.")
    page.get_by_role("button", name="Kirim rujukan").click()
    page.wait_for_url(re.compile(r"/agency/referrals/[0-9A-Z]{26}$"))
    rid = page.url.rsplit("/", 1)[1]
    assert "menangani kasus krisis" in page.content()
    seen(page, "agency-referral-submitted")

    wait_for_status(page, "Diusulkan ke layanan")
    assert "Polrestabes Medan" in page.content()
    assert "WIB" in page.content()
    seen(page, "agency-referral-proposed")

    # The receiver accepts from the proposal mail's link, as in the closed loop.
    loop = Loop(stack, smtp_server)
    _mail, proposal, session = loop.proposal_mail(rid, "unit.ppa@polrestabes-medan.example")
    assert loop.respond(session, proposal, response="accepted").status_code == 202
    wait_for_status(page, "Diterima")
    seen(page, "agency-referral-accepted")

    page.get_by_role("link", name="Rujukan", exact=True).first.click()
    page.wait_for_url(re.compile(r"/agency/referrals$"))
    assert page.locator(f"a[href='/agency/referrals/{rid}']").is_visible()
    assert "Diterima" in page.locator("ul.referrals").inner_text()
    seen(page, "agency-referrals")

    page.get_by_role("button", name="Keluar").click()
    page.wait_for_url(re.compile(r"/agency/signin$"))
    page.goto(stack.url("/agency/referrals"))
    assert page.url.endswith("/agency/signin")  # signed out for good
