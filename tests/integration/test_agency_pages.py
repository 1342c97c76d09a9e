"""Agency staff on the pages, against intake's real app (real Redis, a real database, the
real SMTP catcher): signing in with a single-use mailed link, one agency's session against
another's referrals, the CSRF token, the referral form's errors in Bahasa Indonesia, a form
that submits through the same use case as the API, the list and the cancel."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import pytest

from devtools.mailcatcher import MailCatcher
from intake.bootstrap import DEMO_STAFF_EMAIL, create_app
from intake.settings import Settings
from shared.web.csrf import CSRF_COOKIE, CSRF_FIELD
from tests.apps import (
    AGENCY_PEPPER,
    DEMO_KEY,
    DIRECTORY_KEY,
    ONBOARDING_KEY,
    OPERATOR_KEYS,
    TEST_KEYS,
    bearer,
    running,
)

LINK = re.compile(r"http://test(/agency/signin/[A-Za-z0-9_\-]+)")
ONBOARDING = bearer(ONBOARDING_KEY)

# A referral as a PPA officer in Medan fills the form in (field -> value; lists separately).
FORM: dict[str, str] = {
    "external_ref": "", "pmks_category": "korban_tindak_kekerasan", "urgency": "priority", "initials": "SN",
    "age": "34", "gender": "female", "province": "12", "regency": "12.71", "district": "05", "modality": "in_person",
    "other_languages": "", "contact_name": "Siti", "phone": "+62 812 3456 7890", "email": "",
    "consent_share": "yes", "consent_contact": "no", "narrative": "Butuh pendampingan psikologis.",
}
LISTS: dict[str, list[str]] = {"needs": ["emotional", "informational"], "risk_flags": [], "languages": ["id", "jv"]}


def settings(database_url: str, redis_url: str, mail: MailCatcher, **over: Any) -> Settings:
    values: dict[str, Any] = dict(
        database_url=database_url, redis_url=redis_url, encryption_keys=TEST_KEYS, agency_key_pepper=AGENCY_PEPPER,
        operator_keys=OPERATOR_KEYS, demo_api_key=DEMO_KEY, outbox_poll_interval_s=0.2, stream_block_ms=100,
        smtp_url=mail.url, public_url="http://test")
    values.update(over)
    return Settings(**values)


def form_body(values: dict[str, str], lists: dict[str, list[str]], token: str) -> dict[str, str | list[str]]:
    return {CSRF_FIELD: token, **values, **lists}


async def token_of(client: httpx.AsyncClient, path: str = "/agency/signin") -> str:
    """The CSRF token as the page's form carries it (the same as the browser's cookie)."""
    page = await client.get(path)
    assert page.status_code == 200, page.text
    found = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', page.text)
    assert found is not None, page.text
    assert found.group(1) == client.cookies[CSRF_COOKIE]
    return found.group(1)


async def ask_for_link(client: httpx.AsyncClient, email: str) -> httpx.Response:
    return await client.post("/agency/signin", data={CSRF_FIELD: await token_of(client), "email": email})


async def mailed_link(mail: MailCatcher, email: str) -> str:
    message = await mail.wait_for_async(lambda m: m["To"] == email)
    found = LINK.search(message.get_content())
    assert found is not None, message.get_content()
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, mail: MailCatcher, email: str) -> None:
    mail.clear()
    assert (await ask_for_link(client, email)).status_code == 200
    followed = await client.get(await mailed_link(mail, email))
    assert followed.status_code == 303, followed.text
    assert followed.headers["location"] == "/agency/referrals"


async def submit(client: httpx.AsyncClient, values: dict[str, str] | None = None,
                 lists: dict[str, list[str]] | None = None) -> httpx.Response:
    token = await token_of(client, "/agency/referrals/new")
    page = (await client.get("/agency/referrals/new")).text
    form_ref = re.search(r'name="form_ref" value="([^"]+)"', page)
    assert form_ref is not None
    return await client.post("/agency/referrals/new", data=form_body(
        {"form_ref": form_ref.group(1), **(FORM if values is None else values)},
        LISTS if lists is None else lists, token))


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_a_mailed_link_signs_in_once_and_the_session_is_a_safe_cookie(
        database_url: str, redis_url: str, mailbox: MailCatcher) -> None:
    async with running(create_app(settings(database_url, redis_url, mailbox))) as client:
        # No session: the pages send to sign-in, they do not answer with data.
        assert (await client.get("/agency/referrals")).headers["location"] == "/agency/signin"
        asked = await ask_for_link(client, DEMO_STAFF_EMAIL)
        assert asked.status_code == 200
        mail = await mailbox.wait_for_async(lambda m: m["To"] == DEMO_STAFF_EMAIL)
        assert "30 menit" in mail.get_content()
        link = await mailed_link(mailbox, DEMO_STAFF_EMAIL)
        followed = await client.get(link)
        assert followed.status_code == 303
        assert followed.headers["location"] == "/agency/referrals"  # the code leaves the address bar
        cookie = followed.headers["set-cookie"]
        assert cookie.startswith("rujukan_agency=")
        for part in ("httponly", "samesite=lax", "path=/agency"):
            assert part in cookie.lower()
        assert "secure" not in cookie.lower()  # plain http here: https sets it
        code = link.rsplit("/", 1)[1]
        assert code not in cookie
        listed = await client.get("/agency/referrals")
        assert listed.status_code == 200
        assert DEMO_STAFF_EMAIL in listed.text
        # Single use: the same link again, in this browser or another, opens nothing.
        again = await client.get(link)
        assert again.status_code == 410
        assert "sudah dipakai" in again.text
        async with httpx.AsyncClient(transport=client._transport, base_url="http://test") as other:
            assert (await other.get(link)).status_code == 410
            assert (await other.get("/agency/signin/not-a-code")).status_code == 410
            assert (await other.get("/agency/referrals")).status_code == 303
        # Signing out ends the session on the server, not only in this browser.
        session = client.cookies["rujukan_agency"]
        out = await client.post("/agency/signout", data={CSRF_FIELD: client.cookies[CSRF_COOKIE]})
        assert out.status_code == 303
        async with httpx.AsyncClient(transport=client._transport, base_url="http://test",
                                     cookies={"rujukan_agency": session}) as replay:
            assert (await replay.get("/agency/referrals")).headers["location"] == "/agency/signin"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_link_expires(database_url: str, redis_url: str, mailbox: MailCatcher) -> None:
    app = create_app(settings(database_url, redis_url, mailbox, agency_signin_minutes=0.01))  # 0.6 s
    async with running(app) as client:
        await ask_for_link(client, DEMO_STAFF_EMAIL)
        link = await mailed_link(mailbox, DEMO_STAFF_EMAIL)
        await asyncio.sleep(1.0)
        late = await client.get(link)
        assert late.status_code == 410
        assert "rujukan_agency" not in late.headers.get("set-cookie", "")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_unknown_address_gets_the_same_answer_and_no_mail(
        database_url: str, redis_url: str, mailbox: MailCatcher) -> None:
    async with running(create_app(settings(database_url, redis_url, mailbox))) as client:
        known = await ask_for_link(client, DEMO_STAFF_EMAIL)
        unknown = await ask_for_link(client, "stranger@example.org")
        assert known.status_code == unknown.status_code == 200
        assert known.text == unknown.text
        await mailbox.wait_for_async(lambda m: m["To"] == DEMO_STAFF_EMAIL)
        await asyncio.sleep(0.3)
        assert [m["To"] for m in mailbox.messages()] == [DEMO_STAFF_EMAIL]
        # A malformed address is told so, in Bahasa Indonesia, without a look-up.
        bad = await ask_for_link(client, "not an address")
        assert bad.status_code == 422
        assert "Surel: tulis alamat surel kantor Anda" in bad.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_staff_are_registered_by_onboarding_operators_only(
        database_url: str, redis_url: str, mailbox: MailCatcher) -> None:
    async with running(create_app(settings(database_url, redis_url, mailbox))) as client:
        made = await client.post("/v1/agencies/demo/staff", json={"email": "Ani@PPA-Medan.example"}, headers=ONBOARDING)
        assert made.status_code == 201, made.text
        assert made.json()["email"] == "ani@ppa-medan.example"
        again = await client.post("/v1/agencies/demo/staff", json={"email": "ani@ppa-medan.example"},
                                  headers=ONBOARDING)
        assert again.status_code == 409
        assert (await client.post("/v1/agencies/nobody/staff", json={"email": "x@y.example"},
                                  headers=ONBOARDING)).status_code == 404
        assert (await client.post("/v1/agencies/demo/staff", json={"email": "x@y.example"},
                                  headers=bearer(DIRECTORY_KEY))).status_code == 403
        assert (await client.get("/v1/agencies/demo/staff", headers=bearer(DEMO_KEY))).status_code == 401
        listed = (await client.get("/v1/agencies/demo/staff", headers=ONBOARDING)).json()["items"]
        assert sorted(s["email"] for s in listed) == ["ani@ppa-medan.example", DEMO_STAFF_EMAIL]
        # Removed: the session she had ends, and her address gets no link any more.
        await sign_in(client, mailbox, "ani@ppa-medan.example")
        removed = await client.delete(f"/v1/agencies/demo/staff/{made.json()['id']}", headers=ONBOARDING)
        assert removed.status_code == 204
        assert (await client.get("/agency/referrals")).headers["location"] == "/agency/signin"
        mailbox.clear()
        await ask_for_link(client, "ani@ppa-medan.example")
        await asyncio.sleep(0.3)
        assert mailbox.messages() == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_form_submits_through_the_api_use_case_and_appears_in_the_list(
        database_url: str, redis_url: str, mailbox: MailCatcher) -> None:
    async with running(create_app(settings(database_url, redis_url, mailbox))) as client:
        await sign_in(client, mailbox, DEMO_STAFF_EMAIL)
        sent = await submit(client)
        assert sent.status_code == 303, sent.text
        rid = sent.headers["location"].rsplit("/", 1)[1]
        # The same referral the API reads, as POST /v1/referrals would have recorded it.
        api = (await client.get(f"/v1/referrals/{rid}", headers=bearer(DEMO_KEY))).json()
        assert api["status"] == "submitted"
        assert api["external_ref"].startswith("WEB-")
        assert api["region_code"] == "12.71.05"
        assert api["needs"] == ["emotional", "informational"]
        assert api["urgency"] == "priority"
        page = await client.get(f"/agency/referrals/{rid}")
        assert page.status_code == 200
        assert "Dikirim" in page.text
        assert "Rujukan diterima" in page.text  # the timeline's first step, in Bahasa Indonesia
        assert "WIB" in page.text  # Medan's zone
        listed = await client.get("/agency/referrals")
        assert f"/agency/referrals/{rid}" in listed.text
        # Filters: by status, category and day; a filter that excludes it hides it.
        assert rid in (await client.get("/agency/referrals", params={"status": "submitted"})).text
        assert rid not in (await client.get("/agency/referrals", params={"status": "accepted"})).text
        assert rid not in (await client.get("/agency/referrals", params={"category": "fakir_miskin"})).text
        assert rid not in (await client.get("/agency/referrals", params={"to": "2020-01-01"})).text
        assert rid in (await client.get("/agency/referrals", params={"from": "2020-01-01"})).text
        # A case number used for another referral is said next to its field.
        first = await submit(client, {**FORM, "external_ref": "PPA-MDN-77"})
        assert first.status_code == 303
        clash = await submit(client, {**FORM, "external_ref": "PPA-MDN-77", "age": "35"})
        assert clash.status_code == 422
        assert "Nomor kasus: lembaga Anda sudah memakainya" in clash.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_form_errors_are_in_bahasa_indonesia_next_to_their_field_and_keep_what_was_typed(
        database_url: str, redis_url: str, mailbox: MailCatcher) -> None:
    async with running(create_app(settings(database_url, redis_url, mailbox))) as client:
        await sign_in(client, mailbox, DEMO_STAFF_EMAIL)
        bad = {**FORM, "pmks_category": "", "age": "tiga puluh", "phone": "call me", "regency": "35.78",
               "consent_share": "no", "email": "siti(at)example", "contact_name": "Siti Aminah"}
        del bad["consent_contact"]
        page = await submit(client, bad, {**LISTS, "languages": []})
        assert page.status_code == 422
        text = page.text
        assert "Mohon perbaiki isian berikut" in text  # the summary
        for message in ("Kategori PMKS: pilih yang paling sesuai", "Usia: tulis usia dalam tahun",
                        "Telepon: angka, spasi", "Kabupaten/kota: pilih yang berada di provinsi",
                        "Persetujuan berbagi data: tanpa persetujuan orang itu",
                        "Persetujuan dihubungi: bacakan", "Surel: tulis alamat", "Bahasa: pilih paling sedikit satu"):
            assert message in text, message
        # Next to the field: the message's id is what the field is described by.
        assert re.search(r'id="f-age"[^>]*aria-describedby="e-age"[^>]*aria-invalid="true"', text)
        assert 'href="#f-age"' in text
        # What was typed is still there; nothing was recorded.
        assert 'value="tiga puluh"' in text
        assert 'value="Siti Aminah"' in text
        listed = (await client.get("/v1/referrals", headers=bearer(DEMO_KEY))).json()
        assert listed["items"] == []
        # A crisis, or a risk flag, says plainly where it goes.
        assert "langsung dikirim ke tenaga profesional yang menangani kasus krisis" in text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_agency_sees_only_its_own_referrals(database_url: str, redis_url: str,
                                                     mailbox: MailCatcher) -> None:
    async with running(create_app(settings(database_url, redis_url, mailbox))) as client:
        assert (await client.post("/v1/agencies", json={"id": "dinsos-kupang", "name": "Dinas Sosial Kupang"},
                                  headers=ONBOARDING)).status_code == 201
        assert (await client.post("/v1/agencies/dinsos-kupang/staff", json={"email": "budi@dinsos-kupang.example"},
                                  headers=ONBOARDING)).status_code == 201
        await sign_in(client, mailbox, DEMO_STAFF_EMAIL)
        ours = (await submit(client)).headers["location"]
        async with httpx.AsyncClient(transport=client._transport, base_url="http://test") as kupang:
            await sign_in(kupang, mailbox, "budi@dinsos-kupang.example")
            theirs = await kupang.get(ours)
            assert theirs.status_code == 404
            assert "Siti" not in theirs.text
            assert ours not in (await kupang.get("/agency/referrals")).text
            # Nor can they cancel it.
            cancel = await kupang.post(f"{ours}/cancel", data={CSRF_FIELD: kupang.cookies[CSRF_COOKIE],
                                                               "reason_code": "duplicate"})
            assert cancel.status_code == 404
        assert "Dibatalkan" not in (await client.get(ours)).text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_forms_without_their_csrf_token_are_refused(database_url: str, redis_url: str,
                                                          mailbox: MailCatcher) -> None:
    async with running(create_app(settings(database_url, redis_url, mailbox))) as client:
        await sign_in(client, mailbox, DEMO_STAFF_EMAIL)
        rid_path = (await submit(client)).headers["location"]
        forged = "forged-token"
        refused = [
            await client.post("/agency/referrals/new", data=form_body({**FORM, "form_ref": ""}, LISTS, forged)),
            await client.post(f"{rid_path}/cancel", data={"reason_code": "duplicate"}),
            await client.post(f"{rid_path}/cancel", data={CSRF_FIELD: client.cookies[CSRF_COOKIE],
                                                          "reason_code": "duplicate"},
                              headers={"Origin": "https://evil.example"}),
            await client.post("/agency/signout", data={}),
            await client.post("/agency/signin", data={"email": DEMO_STAFF_EMAIL}),
        ]
        assert [r.status_code for r in refused] == [403] * 5
        assert "Dikirim" in (await client.get(rid_path)).text  # not cancelled
        assert (await client.get("/agency/referrals")).status_code == 200  # still signed in
        assert len((await client.get("/v1/referrals", headers=bearer(DEMO_KEY))).json()["items"]) == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_cancel_with_a_reason_goes_through_the_api_use_case(database_url: str, redis_url: str,
                                                                   mailbox: MailCatcher) -> None:
    async with running(create_app(settings(database_url, redis_url, mailbox))) as client:
        await sign_in(client, mailbox, DEMO_STAFF_EMAIL)
        path = (await submit(client)).headers["location"]
        token = client.cookies[CSRF_COOKIE]
        no_reason = await client.post(f"{path}/cancel", data={CSRF_FIELD: token})
        assert no_reason.status_code == 422
        assert "Alasan: pilih mengapa rujukan dibatalkan" in no_reason.text
        done = await client.post(f"{path}/cancel", data={CSRF_FIELD: token, "reason_code": "client_withdrew"})
        assert done.status_code == 303
        page = (await client.get(path)).text
        assert "Dibatalkan oleh lembaga perujuk: klien mengundurkan diri" in page
        assert "Batalkan rujukan" not in page  # nothing left to cancel
        api = (await client.get(f"/v1/referrals/{path.rsplit('/', 1)[1]}", headers=bearer(DEMO_KEY))).json()
        assert api["status"] == "cancelled"
        assert api["timeline"][-1]["actor"] == "agency:demo"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_landing_page_points_each_kind_of_person_to_their_door(
        database_url: str, redis_url: str, mailbox: MailCatcher) -> None:
    async with running(create_app(settings(database_url, redis_url, mailbox))) as client:
        page = await client.get("/")
        assert page.status_code == 200
        for link in ('href="/agency/signin"', 'href="/operator"'):
            assert link in page.text
        assert "tautan di surel" in page.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_staff_from_the_command_line(database_url: str, redis_url: str, mailbox: MailCatcher) -> None:
    from typer.testing import CliRunner

    from intake.operator_cli import app as rujukan

    runner = CliRunner()
    env = {"DATABASE_URL": database_url, "AGENCY_KEY_PEPPER": AGENCY_PEPPER, "RUJUKAN_OPERATOR": "ani"}

    def cli(*args: str) -> Any:
        return asyncio.to_thread(runner.invoke, rujukan, ["agencies", "staff", *args], env=env)

    async with running(create_app(settings(database_url, redis_url, mailbox))) as client:
        added = await cli("add", "demo", "Citra@PPA.example", "--json")
        assert added.exit_code == 0, added.output
        member = json.loads(added.stdout)
        assert member["email"] == "citra@ppa.example"
        assert (await cli("add", "demo", "citra@ppa.example")).exit_code == 1
        assert (await cli("add", "nobody", "x@ppa.example")).exit_code == 1
        listed = await cli("list", "demo", "--json")
        assert "citra@ppa.example" in listed.stdout
        await sign_in(client, mailbox, "citra@ppa.example")
        assert (await cli("remove", "demo", member["id"])).exit_code == 0
        assert (await client.get("/agency/referrals")).headers["location"] == "/agency/signin"
        assert (await cli("remove", "demo", member["id"])).exit_code == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_guessing_sign_in_links_is_limited(database_url: str, redis_url: str, redis: Any,
                                                 mailbox: MailCatcher) -> None:
    app = create_app(settings(database_url, redis_url, mailbox, auth_failures_per_minute=3))
    async with running(app) as client:
        answers = [(await client.get(f"/agency/signin/guess-{n}")).status_code for n in range(5)]
        assert answers[:3] == [410, 410, 410]
        assert answers[3:] == [429, 429]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_revoked_agency_s_staff_are_signed_out_and_get_no_link(
        database_url: str, redis_url: str, mailbox: MailCatcher) -> None:
    async with running(create_app(settings(database_url, redis_url, mailbox))) as client:
        assert (await client.post("/v1/agencies", json={"id": "ppa-kupang", "name": "UPTD PPA Kupang"},
                                  headers=ONBOARDING)).status_code == 201
        assert (await client.post("/v1/agencies/ppa-kupang/staff", json={"email": "dewi@ppa-kupang.example"},
                                  headers=ONBOARDING)).status_code == 201
        await sign_in(client, mailbox, "dewi@ppa-kupang.example")
        assert (await client.get("/agency/referrals")).status_code == 200
        assert (await client.post("/v1/agencies/ppa-kupang/revoke", headers=ONBOARDING)).status_code == 200
        assert (await client.get("/agency/referrals")).headers["location"] == "/agency/signin"
        mailbox.clear()
        assert (await ask_for_link(client, "dewi@ppa-kupang.example")).status_code == 200
        await asyncio.sleep(0.3)
        assert mailbox.messages() == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_list_is_newest_first_a_page_at_a_time(database_url: str, redis_url: str,
                                                          mailbox: MailCatcher) -> None:
    from tests.unit.test_referral_request import VALID

    async with running(create_app(settings(database_url, redis_url, mailbox))) as client:
        for n in range(21):
            made = await client.post("/v1/referrals", json={**VALID, "external_ref": f"PPA-{n:03d}"},
                                     headers=bearer(DEMO_KEY))
            assert made.status_code == 202, made.text
        await sign_in(client, mailbox, DEMO_STAFF_EMAIL)
        first = (await client.get("/agency/referrals")).text
        refs = re.findall(r"<strong>(PPA-\d{3})</strong>", first)
        assert refs == [f"PPA-{n:03d}" for n in range(20, 0, -1)]
        assert 'href="/agency/referrals?page=2">Lebih lama' in first
        assert "Lebih baru" not in first
        second = (await client.get("/agency/referrals", params={"page": 2})).text
        assert re.findall(r"<strong>(PPA-\d{3})</strong>", second) == ["PPA-000"]
        assert "Lebih lama" not in second
        # The filters stay on the next page's link.
        filtered = (await client.get("/agency/referrals", params={"status": "submitted"})).text
        assert 'href="/agency/referrals?status=submitted&amp;page=2"' in filtered


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_behind_https_the_session_cookie_is_secure(database_url: str, redis_url: str,
                                                         mailbox: MailCatcher) -> None:
    app = create_app(settings(database_url, redis_url, mailbox, public_url="https://rujukan.example"))
    async with running(app) as plain, httpx.AsyncClient(transport=plain._transport, base_url="https://test") as client:
        await ask_for_link(client, DEMO_STAFF_EMAIL)
        mail = await mailbox.wait_for_async(lambda m: m["To"] == DEMO_STAFF_EMAIL)
        link = re.search(r"https://rujukan\.example(/agency/signin/[A-Za-z0-9_\-]+)", mail.get_content())
        assert link is not None, mail.get_content()
        followed = await client.get(link.group(1))
        assert followed.status_code == 303
        assert "secure" in followed.headers["set-cookie"].lower()
        assert (await client.get("/agency/referrals")).status_code == 200


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_form_in_english_on_the_switch(database_url: str, redis_url: str, mailbox: MailCatcher) -> None:
    async with running(create_app(settings(database_url, redis_url, mailbox))) as client:
        await sign_in(client, mailbox, DEMO_STAFF_EMAIL)
        indonesian = (await client.get("/agency/referrals/new")).text
        assert "Korban Tindak Kekerasan" in indonesian
        assert "Apakah Anda setuju?" in indonesian  # the consent question, as read to the person
        switched = await client.get("/lang/en", params={"next": "/agency/referrals/new"})
        assert switched.headers["location"] == "/agency/referrals/new"
        english = (await client.get("/agency/referrals/new")).text
        assert '<html lang="en">' in english
        assert "Victims of violence" in english  # the category's name in English, the Indonesian one beside it
        assert "Do you agree?" in english
        assert "Apakah Anda setuju?" not in english
