"""The receivers' pages on notify, with real Redis, a real database and a real SMTP server:
the proposal mail (HTML and plain text, one button, nothing personal) signs the receiver in
to the proposal page; answers go through the same closed loop as the API, with CSRF; a
spent link says so and offers a new one; another receiver's session finds nothing; "My
referrals" lists what the session opens, and a link to the whole inbox goes to the
receiver's registered address only; signing out ends the session."""

from __future__ import annotations

import json
import re
from email.message import EmailMessage
from typing import Any

import httpx

from devtools.mailcatcher import MailCatcher
from notify.bootstrap import create_app
from shared.events import ReferralCancelled, ReferralMatched
from shared.grants import verify
from shared.streams.topology import RESPONSES_URGENT, publish
from tests.apps import GRANT_SECRET, eventually, running
from tests.integration.test_notify_inbox import matched, receiver_of, settings, wrap

BUTTON = re.compile(r'href="(https://rujukan\.example/signin/([A-Za-z0-9_\-]+))"')
PLAIN_LINK = re.compile(r"https://rujukan\.example/signin/([A-Za-z0-9_\-]+)")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
GRANT = re.compile(r'name="grant" value="([^"]+)"')


def text_of(mail: EmailMessage) -> str:
    part = mail.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def html_of(mail: EmailMessage) -> str:
    part = mail.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


async def proposal_mail(mailbox: MailCatcher, proposal: ReferralMatched, after: int = 0) -> EmailMessage:
    def found(m: EmailMessage) -> bool:
        return m["Subject"].startswith(("Rujukan baru", "[KRISIS")) and proposal.region_code is not None and (
            PLAIN_LINK.search(text_of(m)) is not None) and proposal.service_name in text_of(m) and (
            proposal.referral_id in text_of(m))

    async def nth() -> EmailMessage | None:
        mails = [m for m in mailbox.messages() if found(m)]
        return mails[after] if len(mails) > after else None

    mail = await eventually(nth, timeout=20)
    assert isinstance(mail, EmailMessage)
    return mail


class Browser:
    """Cookies by hand: the public address is https, so the cookies are Secure and the test
    client (http) would not send them back by itself."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.cookies: dict[str, str] = {}
        self.csrf = ""

    def _keep(self, r: httpx.Response) -> httpx.Response:
        for header in r.headers.get_list("set-cookie"):
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if "max-age=0" in header.lower() or value in ('""', ""):
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        if found := CSRF.search(r.text):
            self.csrf = found.group(1)
        return r

    def _header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}

    async def get(self, path: str) -> httpx.Response:
        return self._keep(await self.client.get(path, headers=self._header()))

    async def post(self, path: str, data: dict[str, str], csrf: bool = True) -> httpx.Response:
        form = {**data, **({"csrf_token": self.csrf} if csrf else {})}
        return self._keep(await self.client.post(path, data=form, headers=self._header()))


async def test_the_mail_signs_in_to_the_page_and_answers_go_through_the_loop(
    database_url: str, redis_url: str, redis: Any, mailbox: MailCatcher
) -> None:
    app = create_app(settings(database_url, redis_url, mailbox.url))
    async with running(app) as client:
        mine, theirs = matched("ct-pages"), matched("ct-pages-other")
        await publish(redis, [wrap(mine), wrap(theirs)])
        mail = await proposal_mail(mailbox, mine)

        # The mail: plain text and HTML, one button, greeting the receiving organisation,
        # the hold in the receiver's local time, nothing about the person.
        assert mail.get_content_type() == "multipart/alternative"
        html = html_of(mail)
        buttons = BUTTON.findall(html)
        assert len(buttons) == 1
        _link, code = buttons[0]
        assert PLAIN_LINK.search(text_of(mail)).group(1) == code  # type: ignore[union-attr]
        assert "Yth. Polrestabes Medan" in html
        assert "WIB" in html
        assert "/v1/" not in html
        assert "Authorization" not in mail.as_string()

        # The button: the code becomes the session at once and leaves the address bar.
        page = Browser(client)
        r = await page.get(f"/signin/{code}")
        assert r.status_code == 303
        assert r.headers["location"] == f"/receiver/proposals/{mine.decision_id}"
        assert r.headers["cache-control"] == "no-store"
        assert "httponly" in r.headers["set-cookie"].lower()
        assert "rujukan_session" in page.cookies

        r = await page.get(r.headers["location"])
        assert r.status_code == 200
        assert r.headers["cache-control"] == "no-store"
        assert "unsafe-inline" not in r.headers["content-security-policy"]
        assert "Kota Medan" in r.text
        assert "Korban Tindak Kekerasan" in r.text or "Tindak Kekerasan" in r.text
        assert "WIB" in r.text
        assert "Terima" in r.text
        assert "Tolak" in r.text
        assert "no_capacity" in r.text  # the decline reasons
        assert GRANT.search(r.text) is None  # nothing to read before accepting

        # The same link again: spent, said in Bahasa Indonesia, with a button for a new one.
        spent = await Browser(client).get(f"/signin/{code}")
        assert spent.status_code == 410
        assert "Tautan ini tidak berlaku lagi" in spent.text
        assert 'action="/signin/renew"' in spent.text
        assert "Polrestabes" not in spent.text
        unknown = await Browser(client).get("/signin/never-issued")
        assert unknown.status_code == 410
        assert unknown.text.replace("never-issued", code) == spent.text.replace(
            CSRF.search(spent.text).group(1), CSRF.search(unknown.text).group(1))  # type: ignore[union-attr]
        asker = Browser(client)
        await asker.get(f"/signin/{code}")
        assert (await asker.post("/signin/renew", {"code": code}, csrf=False)).status_code == 403
        renewed = await asker.post("/signin/renew", {"code": code})
        assert renewed.status_code == 202
        again = await proposal_mail(mailbox, mine, after=1)
        assert BUTTON.search(html_of(again)).group(2) != code  # type: ignore[union-attr]

        # An answer without the form's token is refused, and changes nothing.
        answers = f"/receiver/proposals/{mine.decision_id}/responses"
        assert (await page.post(answers, {"response": "accepted"}, csrf=False)).status_code == 403
        page.csrf = "forged"
        assert (await page.post(answers, {"response": "accepted"}, csrf=True)).status_code == 403
        await page.get(f"/receiver/proposals/{mine.decision_id}")
        # A decline needs a reason from the list.
        r = await page.post(answers, {"response": "declined", "reason_code": "because"})
        assert r.status_code == 422
        assert "Pilih alasan Anda menolak" in r.text

        # Terima: the same use case as the API, published to matching (a crisis: the urgent lane).
        r = await page.post(answers, {"response": "accepted"})
        assert r.status_code == 303
        assert r.headers["location"] == f"/receiver/proposals/{mine.decision_id}"

        async def responses() -> list[dict[str, Any]]:
            return [json.loads(f[b"event"]) for _, f in await redis.xrange(RESPONSES_URGENT)]

        events = await eventually(responses)
        assert events[0]["data"]["response"] == "accepted"
        assert events[0]["data"]["responder_receiver_id"] == receiver_of("ct-pages")
        r = await page.get(f"/receiver/proposals/{mine.decision_id}")
        assert "Diterima" in r.text
        assert "lembaga perujuk sudah diberi tahu" in r.text
        assert "Mulai" in r.text
        # The button to the person's details posts the grant (never in a URL).
        grant = GRANT.search(r.text)
        assert grant is not None
        assert f'action="/person/{mine.referral_id}"' in r.text
        g = verify(GRANT_SECRET, grant.group(1))
        assert (g.referral_id, g.receiver_id) == (mine.referral_id, receiver_of("ct-pages"))

        # Accepting again changes nothing; Mulai, then Selesai with an outcome.
        assert (await page.post(answers, {"response": "accepted"})).status_code == 303
        assert (await page.post(answers, {"response": "in_progress"})).status_code == 303
        r = await page.post(answers, {"response": "completed"})
        assert r.status_code == 422
        assert (await page.post(answers, {"response": "completed", "outcome_code": "goals_met"})).status_code == 303
        r = await page.get(f"/receiver/proposals/{mine.decision_id}")
        assert "tujuan layanan tercapai" in r.text
        assert GRANT.search(r.text) is None  # closed: nothing more to read
        assert (await page.post(answers, {"response": "declined", "reason_code": "no_capacity"})).status_code == 409
        kinds = [e["data"]["response"] for e in await responses()]
        assert kinds == ["accepted", "in_progress", "completed"]

        # Another receiver's session: that proposal does not exist for it (404), as in the API.
        other_mail = await proposal_mail(mailbox, theirs)
        other = Browser(client)
        await other.get(f"/signin/{BUTTON.search(html_of(other_mail)).group(2)}")  # type: ignore[union-attr]
        await other.get("/receiver/")  # its own list (and a form token)
        r = await other.get(f"/receiver/proposals/{mine.decision_id}")
        assert r.status_code == 404
        assert "Kota Medan" not in r.text
        assert (await other.post(answers, {"response": "declined", "reason_code": "no_capacity"})).status_code == 404
        # Without a session: the page says to use the mail's link.
        assert (await Browser(client).get(f"/receiver/proposals/{mine.decision_id}")).status_code == 401

        # Signing out needs the form's token, then ends the session.
        assert (await page.post("/receiver/signout", {}, csrf=False)).status_code == 403
        kept = dict(page.cookies)
        r = await page.post("/receiver/signout", {})
        assert r.status_code == 200
        assert "Sudah keluar" in r.text
        page.cookies = kept  # even a copy of the old cookie opens nothing now
        assert (await page.get(f"/receiver/proposals/{mine.decision_id}")).status_code == 401


async def test_my_referrals_and_the_link_to_the_whole_inbox(
    database_url: str, redis_url: str, redis: Any, mailbox: MailCatcher
) -> None:
    app = create_app(settings(database_url, redis_url, mailbox.url))
    async with running(app) as client:
        routine, crisis = matched("ct-list", urgency="routine"), matched("ct-list", urgency="crisis")
        theirs = matched("ct-list-other", urgency="crisis")
        await publish(redis, [wrap(routine), wrap(crisis), wrap(theirs)])
        page = Browser(client)
        code = BUTTON.search(html_of(await proposal_mail(mailbox, routine))).group(2)  # type: ignore[union-attr]
        await page.get(f"/signin/{code}")

        # A mail's session lists only what it opens; the crisis proposal is not opened by it.
        r = await page.get("/receiver/")
        assert r.status_code == 200
        assert r.text.count("/receiver/proposals/") == 1
        assert routine.decision_id in r.text
        assert crisis.decision_id not in r.text
        assert (await page.get(f"/receiver/proposals/{crisis.decision_id}")).status_code == 403

        # Ask for a link to the whole inbox: it goes to the registered address only, once in a while.
        assert (await page.post("/receiver/link", {}, csrf=False)).status_code == 403
        r = await page.post("/receiver/link", {})
        assert r.status_code == 202
        assert "c***@example.org" in r.text
        assert (await page.post("/receiver/link", {})).status_code == 202

        def inbox_mails() -> list[EmailMessage]:
            return [m for m in mailbox.messages() if m["Subject"].startswith("Tautan ke semua rujukan")]

        async def one() -> list[EmailMessage]:
            return inbox_mails()

        mails = await eventually(one)
        assert [m["To"] for m in mails] == ["ct-list@example.org"]
        assert mails[0].get_content_type() == "multipart/alternative"
        whole = BUTTON.search(html_of(mails[0]))
        assert whole is not None

        fresh = Browser(client)
        r = await fresh.get(f"/signin/{whole.group(2)}")
        assert r.status_code == 303
        assert r.headers["location"] == "/receiver/"
        r = await fresh.get("/receiver/")
        # Both of this receiver's proposals, the crisis first; never another receiver's.
        assert r.text.index(crisis.decision_id) < r.text.index(routine.decision_id)
        assert theirs.decision_id not in r.text
        assert "Krisis" in r.text
        assert (await fresh.get(f"/receiver/proposals/{crisis.decision_id}")).status_code == 200
        assert (await fresh.get(f"/receiver/proposals/{theirs.decision_id}")).status_code == 404
        assert len(inbox_mails()) == 1


async def test_a_cancelled_proposal_says_why_and_offers_nothing_and_english_is_a_switch(
    database_url: str, redis_url: str, redis: Any, mailbox: MailCatcher
) -> None:
    app = create_app(settings(database_url, redis_url, mailbox.url))
    async with running(app) as client:
        mine = matched("ct-cancel", urgency="routine")
        await publish(redis, [wrap(mine)])
        page = Browser(client)
        code = BUTTON.search(html_of(await proposal_mail(mailbox, mine))).group(2)  # type: ignore[union-attr]
        await page.get(f"/signin/{code}")
        page.cookies["rujukan_lang"] = "en"
        r = await page.get(f"/receiver/proposals/{mine.decision_id}")
        assert "Accept" in r.text
        assert "Seat held until" in r.text
        assert "Terima" not in r.text
        page.cookies["rujukan_lang"] = "id"

        await publish(redis, [wrap(ReferralCancelled(referral_id=mine.referral_id, agency_id="demo",
                                                     reason_code="client_withdrew", urgency="routine"))])

        async def cancelled() -> httpx.Response | None:
            r = await page.get(f"/receiver/proposals/{mine.decision_id}")
            return r if "Dibatalkan oleh lembaga" in r.text else None

        r = await eventually(cancelled)
        assert "klien mengundurkan diri" in r.text
        assert "Mohon hentikan tindak lanjut" in r.text
        for gone in ('value="accepted"', 'value="in_progress"', 'value="completed"', 'name="grant"'):
            assert gone not in r.text
        answers = f"/receiver/proposals/{mine.decision_id}/responses"
        r = await page.post(answers, {"response": "accepted"})
        assert r.status_code == 409
        assert "tidak dapat diberikan lagi" in r.text
