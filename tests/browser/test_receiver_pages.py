"""A receiver on a phone (360x740), in a real Chromium through the one address (the proxy in
front of the three services): she follows the button in a real proposal mail from the real
SMTP catcher, accepts, reads the person's consented details (at intake, with the grant
posted, never in the address), starts and completes; the agency's timeline follows each
step. Another receiver's session cannot open her proposal; a spent link says so; signing
out ends the session. The proposal page weighs at most 100 KB on a first visit. axe-core
and a screenshot on every page."""

from __future__ import annotations

import re
from email.message import EmailMessage
from typing import Any

from devtools.mailcatcher import MailCatcher
from tests.browser.conftest import seen
from tests.e2e.conftest import StackFactory
from tests.e2e.test_closed_loop import Loop
from tests.e2e.test_first_referral import PERSONAL
from tests.mails import html_of, text_of

BUTTON = re.compile(r'href="(https?://[^"]+/signin/[A-Za-z0-9_\-]+)"')
FIRST_VISIT_LIMIT = 100 * 1024


def mailed_button(mail: MailCatcher, rid: str, to: str) -> str:
    """The one button of the proposal mail of `rid` to `to`: its sign-in link."""
    found: EmailMessage = mail.wait_for(lambda m: m["To"] == to and rid in text_of(m)
                                        and "Rujukan baru" in m["Subject"], timeout=30)
    assert found.get_content_type() == "multipart/alternative"
    buttons = BUTTON.findall(html_of(found))
    assert len(buttons) == 1, html_of(found)
    for secret in PERSONAL:
        assert secret not in found.as_string()
    return str(buttons[0])


def test_a_receiver_answers_from_the_mail_on_a_phone(stack_factory: StackFactory, smtp_server: MailCatcher,
                                                     phone: Any, new_phone: Any) -> None:
    smtp_server.clear()
    stack = stack_factory(smtp_url=smtp_server.url)
    loop = Loop(stack, smtp_server)
    consent = {"consent": {"share_with_provider": True, "contact_by_provider": True}}
    rid = loop.refer("PPA-MDN-WEB-1", urgency="crisis", risk_flags=["ongoing_violence"], client=consent)
    loop.wait_status(rid, "proposed")
    link = mailed_button(smtp_server, rid, "unit.ppa@polrestabes-medan.example")
    assert link.startswith(stack.origin + "/signin/")

    # The button: signed in at once, the code gone from the address bar; weigh the first visit.
    page = phone
    responses: list[Any] = []

    def keep(response: Any) -> None:
        responses.append(response)

    page.on("response", keep)
    page.goto(link)
    page.wait_for_url(re.compile(r"/receiver/proposals/[A-Za-z0-9]+$"))
    page.wait_for_load_state("networkidle")
    page.remove_listener("response", keep)
    assert "signin" not in page.url
    proposal_url = page.url
    weights = {r.url: len(r.body()) for r in responses if r.status < 300}
    total = sum(weights.values())
    assert any(u.endswith("/assets/rujukan.css") for u in weights), weights
    assert 0 < total <= FIRST_VISIT_LIMIT, weights
    assert page.get_by_role("heading", level=1).inner_text() == "Korban Tindak Kekerasan"
    content = page.content()
    for fact in ("Kota Medan", "Krisis: tangani segera", "Kekerasan yang masih berlangsung", "WIB",
                 "Mengapa layanan Anda dipilih", "Kursi ditahan sampai"):
        assert fact in content, fact
    for secret in PERSONAL:
        assert secret not in content
    seen(page, "receiver-proposal")

    # Tolak shows the reasons; she accepts instead.
    page.get_by_text("Tolak", exact=True).first.click()
    assert page.get_by_label("Mengapa Anda menolak?").is_visible()
    seen(page, "receiver-proposal-decline-open")
    page.get_by_role("button", name="Terima").click()
    page.wait_for_load_state()
    assert page.url == proposal_url
    assert "lembaga perujuk sudah diberi tahu" in page.content()
    loop.wait_status(rid, "accepted")
    page.reload()
    seen(page, "receiver-accepted")

    # The person's details, at intake, with the grant posted; no personal data in the address.
    page.get_by_role("button", name="Lihat data orang").click()
    page.wait_for_url(re.compile(rf"/person/{rid}$"))
    assert page.url == stack.url(f"/person/{rid}")
    details = page.content()
    for fact in ("Siti Nurhaliza", "+62 812 3456 7890", "siti@example.org", "Mengalami kekerasan", "Lembaga perujuk"):
        assert fact in details, fact
    seen(page, "receiver-person-details")
    viewed = [t for t in loop.view(rid)["timeline"] if t["kind"] == "personal_data_viewed"]
    assert len(viewed) == 1

    # Mulai, then Selesai with an outcome; the agency's timeline follows.
    page.get_by_role("link", name="Kembali ke usulan").click()
    page.wait_for_url(proposal_url)
    page.get_by_role("button", name="Mulai").click()
    page.wait_for_load_state()
    assert "Sedang berjalan" in page.content()
    loop.wait_status(rid, "in_progress")
    page.get_by_label("Bagaimana layanan berakhir?").select_option("goals_met")
    page.locator("form button", has_text="Selesai").click()
    page.wait_for_load_state()
    assert "Status: Selesai" in page.get_by_role("heading", level=2).first.inner_text()
    assert "tujuan layanan tercapai" in page.content()
    assert "Lihat data orang" not in page.content()
    seen(page, "receiver-completed")
    steps = [s for s in loop.steps(loop.wait_status(rid, "completed")) if s[1] is not None]
    assert steps[-3:] == [("accepted", "accepted"), ("in_progress", "in_progress"), ("completed", "completed")]

    page.get_by_role("link", name="Rujukan saya").click()
    page.wait_for_url(re.compile(r"/receiver/$"))
    assert proposal_url.rsplit("/", 1)[1] in page.content()
    seen(page, "receiver-my-referrals")

    # Another receiver (the online group's facilitator) signs in from her own mail: the first
    # one's proposal does not exist for her, and the spent link opens nothing.
    other_rid = loop.refer("PPA-MDN-WEB-2", needs=["emotional"])
    loop.wait_status(other_rid, "proposed")
    other_link = mailed_button(smtp_server, other_rid, "fasilitator.ird@sahabat-perempuan.example")
    other = new_phone()
    other.goto(other_link)
    other.wait_for_url(re.compile(r"/receiver/proposals/"))
    seen(other, "receiver-other-proposal")
    response = other.goto(proposal_url)
    assert response is not None
    assert response.status == 404
    assert "Usulan tidak ditemukan" in other.content()
    assert "Kota Medan" not in other.content()
    seen(other, "receiver-not-yours")
    response = other.goto(link)
    assert response is not None
    assert response.status == 410
    assert "Tautan ini tidak berlaku lagi" in other.content()
    seen(other, "receiver-link-spent")

    # Signing out ends her session.
    page.get_by_role("button", name="Keluar").click()
    page.wait_for_load_state()
    assert "Sudah keluar" in page.content()
    seen(page, "receiver-signed-out")
    response = page.goto(proposal_url)
    assert response is not None
    assert response.status == 401
    assert "Masuk dari email Anda" in page.content()
    seen(page, "receiver-signin-needed")
