"""Operators' pages on a real matching app (real Redis, real database): signing in with an
operator key, sessions refused when forged, expired, signed out or when the key is gone,
each page behind its role, CSRF on every form, a directory import through the page with
its report, and dead letters replayed and discarded through the page, all audited."""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request

from matching.bootstrap import create_app
from matching.entrypoints.http import CSV_EXAMPLE
from matching.settings import Settings
from shared.audit import audit_log
from shared.operators import Role, entry_for, key_digest, new_key
from shared.streams.dead_letters import dead_letter_call, find_dead_letter
from shared.streams.topology import SUBMITTED, dead_letter_stream, replay_stream
from shared.web.csrf import CSRF_COOKIE, CSRF_FIELD
from shared.web.operator import COOKIE, SESSION_SECONDS, read_session, start_session
from tests.apps import DIRECTORY_KEY, ONBOARDING_KEY, OPERATIONS_KEY, OPERATOR_KEYS, running
from tests.integration.test_streams import submitted

SEED = Path(__file__).parents[2] / "services" / "matching" / "matching" / "seed"
SQLITE = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def matching_app(database_url: str, redis_url: str, **over: Any) -> FastAPI:
    return create_app(Settings(database_url=database_url, redis_url=redis_url, operator_keys=OPERATOR_KEYS,
                               stream_block_ms=100, outbox_poll_interval_s=0.2, **over))


@pytest.fixture
async def app_client(database_url: str, redis_url: str, redis: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = matching_app(database_url, redis_url)
    async with running(app) as client:
        yield app, client


async def token(client: httpx.AsyncClient) -> str:
    if CSRF_COOKIE not in client.cookies:
        await client.get("/operator/signin")
    return str(client.cookies[CSRF_COOKIE])


async def sign_in(client: httpx.AsyncClient, key: str, next: str = "/operator/") -> httpx.Response:
    return await client.post("/operator/signin", data={CSRF_FIELD: await token(client), "key": key, "next": next})


def fake_request(app: FastAPI) -> Request:
    return Request({"type": "http", "app": app, "headers": [], "method": "GET", "path": "/"})


@SQLITE
async def test_sign_in_with_a_good_key_and_not_with_a_bad_one(app_client: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = app_client
    # Not signed in: sent to sign in, coming back here after.
    r = await client.get("/operator/directory")
    assert r.status_code == 303
    assert r.headers["location"] == "/operator/signin?next=/operator/directory"
    form = await client.get(r.headers["location"])
    assert form.status_code == 200
    assert 'type="password"' in form.text
    assert 'value="/operator/directory"' in form.text
    assert f'name="{CSRF_FIELD}" value="{client.cookies[CSRF_COOKIE]}"' in form.text

    for bad in ("", "rjo_not-a-key", DIRECTORY_KEY + "x", "x" * 5000):
        wrong = await sign_in(client, bad)
        assert wrong.status_code == 401  # counted by the boundary as a failed authentication
        assert "text/html" in wrong.headers["content-type"]
        assert COOKIE not in wrong.headers.get("set-cookie", "")
        assert ("Masukkan kunci operator" if not bad else "tidak dikenal") in wrong.text
        assert bad[:30] not in wrong.text or not bad  # the key typed is never echoed back
    assert COOKIE not in client.cookies

    ok = await sign_in(client, DIRECTORY_KEY, next="/operator/directory")
    assert ok.status_code == 303
    assert ok.headers["location"] == "/operator/directory"
    cookie = ok.headers["set-cookie"].lower()
    assert cookie.startswith(COOKIE)
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    assert f"max-age={SESSION_SECONDS}" in cookie
    assert DIRECTORY_KEY.lower() not in cookie  # the key itself never travels again
    page = await client.get("/operator/directory")
    assert page.status_code == 200
    assert "test-directory" in page.text
    # Another site's address as `next` is not followed.
    client.cookies.delete(COOKIE)
    away = await sign_in(client, DIRECTORY_KEY, next="//evil.example/x")
    assert away.headers["location"] == "/operator/"

    # Signing in is an operator action in the audit log; a wrong key names nobody.
    entries = await audit_log(app).entries()
    assert [(e.operator, e.method, e.action, e.status) for e in entries if e.action == "/operator/signin"] == [
        ("test-directory", "POST", "/operator/signin", 303)] * 2


@SQLITE
async def test_each_page_is_behind_its_role(app_client: tuple[FastAPI, httpx.AsyncClient]) -> None:
    app, client = app_client
    pages = {"/operator/directory": Role.directory, "/operator/directory/import": Role.directory,
             "/operator/directory/services/svc-x": Role.directory,
             "/operator/matching/dead-letters": Role.operations,
             "/operator/matching/dead-letters/1-0": Role.operations}
    for key, role in ((DIRECTORY_KEY, Role.directory), (OPERATIONS_KEY, Role.operations),
                      (ONBOARDING_KEY, Role.onboarding)):
        client.cookies.clear()
        assert (await sign_in(client, key)).status_code == 303
        home = await client.get("/operator/")
        assert home.status_code == 200
        for path, needs in pages.items():
            r = await client.get(path)
            if needs == role:
                assert r.status_code in (200, 404), path  # svc-x and 1-0 do not exist
            else:
                assert r.status_code == 403, (path, role)
                assert "text/html" in r.headers["content-type"]
                assert "Peran operator Anda tidak boleh" in r.text
        # A POST of another role is refused before the form is read.
        r = await client.post("/operator/matching/dead-letters/1-0/replay", data={CSRF_FIELD: await token(client)})
        assert r.status_code == (404 if role == Role.operations else 403)
    entries = [(e.operator, e.action, e.status) for e in await audit_log(app).entries(limit=1000)]
    assert ("test-onboarding", "/operator/directory", 403) in entries
    assert ("test-operations", "/operator/directory", 403) in entries
    assert ("test-directory", "/operator/matching/dead-letters", 403) in entries
    assert ("test-directory", "/operator/directory", 200) in entries
    assert ("test-operations", "/operator/matching/dead-letters/{dead_id}/replay", 404) in entries


@SQLITE
async def test_forged_expired_signed_out_and_orphaned_sessions_are_refused(
    app_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, client = app_client
    assert (await sign_in(client, OPERATIONS_KEY)).status_code == 303
    good = str(client.cookies[COOKIE])
    req = fake_request(app)
    session = await read_session(req, good)
    assert session is not None

    async def refused(value: str) -> bool:
        client.cookies.set(COOKIE, value)
        r = await client.get("/operator/matching/dead-letters")
        return r.status_code == 303 and r.headers["location"].startswith("/operator/signin")

    assert not await refused(good)
    forged = [
        good[:-2] + ("AA" if not good.endswith("AA") else "BB"),  # a guessed neighbour
        f"test-operations:operations:{int(time.time()) + 3600}:x:{'0' * 64}",  # a session made up by hand
        OPERATIONS_KEY,  # the key itself is not a session
        key_digest(OPERATIONS_KEY),  # nor its configured hash
        "x" * 500,
        "",
    ]
    for value in forged:
        assert await refused(value), value
    # A session whose time is up is refused even if Redis still holds it.
    op = session.operator
    old = await start_session(req, key_digest(OPERATIONS_KEY), op, seconds=60)
    redis = app.state.runtime.redis
    await redis.hset("rujukan:operator-session:" + hashlib.sha256(old.encode()).hexdigest(),
                     "expires", str(int(time.time()) - 5))
    assert await refused(old)
    # Made for a key that is not the operator's configured one: refused.
    assert await refused(await start_session(req, key_digest(new_key()), op))
    # One valid session more, then the key is replaced: every session it opened ends.
    assert not await refused(good)
    rotated = new_key()
    app.state.settings.operator_keys = OPERATOR_KEYS.replace(entry_for("test-operations", Role.operations,
                                                                       OPERATIONS_KEY),
                                                             entry_for("test-operations", Role.operations, rotated))
    try:
        assert await refused(good)
        # Removed altogether: refused too; the new key signs in.
        client.cookies.clear()
        assert (await sign_in(client, OPERATIONS_KEY)).status_code == 401
        assert (await sign_in(client, rotated)).status_code == 303
    finally:
        app.state.settings.operator_keys = OPERATOR_KEYS
    # Signing out ends the session for good, even for a copy of the cookie.
    client.cookies.clear()
    assert (await sign_in(client, OPERATIONS_KEY)).status_code == 303
    copy_of = str(client.cookies[COOKIE])
    no_token = await client.post("/operator/signout", data={})
    assert no_token.status_code == 403  # CSRF: nobody else signs the operator out (or in)
    assert not await refused(copy_of)
    out = await client.post("/operator/signout", data={CSRF_FIELD: await token(client)})
    assert out.status_code == 303
    assert f'{COOKIE}=""' in out.headers["set-cookie"] or "max-age=0" in out.headers["set-cookie"].lower()
    assert await refused(copy_of)


def police_unit() -> dict[str, Any]:
    docs: list[dict[str, Any]] = json.loads((SEED / "demo_directory.json").read_text())
    return copy.deepcopy(next(d for d in docs if d["id"] == "svc-ppa-polrestabes-medan"))


async def test_a_directory_import_through_the_page_shows_its_report(
    app_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    _app, client = app_client
    assert (await sign_in(client, DIRECTORY_KEY)).status_code == 303
    csrf = await token(client)
    form = await client.get("/operator/directory/import")
    assert 'enctype="multipart/form-data"' in form.text

    broken = {"id": "svc-broken", "name": ""}  # no name, no organisation: refused
    doc = json.dumps([police_unit(), broken]).encode()
    r = await client.post("/operator/directory/import", data={CSRF_FIELD: csrf},
                          files={"file": ("directory.json", doc, "application/json")})
    assert r.status_code == 200, r.text
    assert "Laporan impor" in r.text
    assert "dibuat 1" in r.text
    assert "ditolak 1" in r.text
    assert 'href="/operator/directory/services/svc-ppa-polrestabes-medan"' in r.text
    assert "svc-broken" in r.text
    # The same file again: nothing changes.
    again = await client.post("/operator/directory/import", data={CSRF_FIELD: csrf},
                              files={"file": ("directory.json", doc, "application/json")})
    assert "tidak berubah 1" in again.text

    csv = await client.post("/operator/directory/import", data={CSRF_FIELD: csrf},
                            files={"file": ("kds.csv", CSV_EXAMPLE.encode(), "text/csv")})
    assert csv.status_code == 200
    assert "CSV" in csv.text
    assert "dibuat 1" in csv.text
    assert "baris 2" in csv.text  # the report points at the CSV's line

    # The service's page: its seats and its receiving contact.
    svc = await client.get("/operator/directory/services/svc-kds-deli")
    assert svc.status_code == 200
    assert "KDS Deli Serdang" in svc.text
    assert "Kapasitas" in svc.text
    assert "fasilitator@kds-deli.example" in svc.text
    found = await client.get("/operator/directory", params={"q": "Deli", "region": "12.07"})
    assert "svc-kds-deli" in found.text
    assert "svc-ppa-polrestabes-medan" not in found.text
    bad_region = await client.get("/operator/directory", params={"region": "99.99"})
    assert bad_region.status_code == 422
    assert "kode Kemendagri" in bad_region.text
    missing = await client.get("/operator/directory/services/no-such-service")
    assert missing.status_code == 404

    # Bad files are said on the form; nothing is written.
    for name, body, kind, says in (
        ("x.json", b"{not json", "application/json", "bukan JSON"),
        ("x.csv", b"nama,kolom\n1,2\n", "text/csv", "Baris judul CSV"),
        ("x.csv", "id,name\n".encode("utf-16"), "text/csv", "UTF-8"),
        ("x.json", b"   ", "application/json", "kosong"),
    ):
        r = await client.post("/operator/directory/import", data={CSRF_FIELD: csrf},
                              files={"file": (name, body, kind)})
        assert r.status_code == 422, name
        assert says in r.text
    # Without the form's token, nothing is imported.
    r = await client.post("/operator/directory/import", data={CSRF_FIELD: "forged"},
                          files={"file": ("kds.csv", CSV_EXAMPLE.replace("svc-kds-deli", "svc-csrf").encode(),
                                          "text/csv")})
    assert r.status_code == 403
    assert (await client.get("/operator/directory/services/svc-csrf")).status_code == 404


async def put_dead_letter(redis: Any, event: str, *, group: str = "matching") -> str:
    """A dead letter as the consumer writes one (fields of dead_letter_call)."""
    _keys, args = dead_letter_call(group=group, consumer="c1", stream=SUBMITTED, entry_id="1-0",
                                   fields={"type": "referral.submitted", "event": event},
                                   reason="ValueError: boom", deliveries=5)
    fields = dict(zip(args[2::2], args[3::2], strict=True))
    new_id = await redis.xadd(dead_letter_stream(group), fields)
    return new_id.decode() if isinstance(new_id, bytes) else str(new_id)


@SQLITE
async def test_dead_letters_are_listed_replayed_and_discarded_through_the_page(
    app_client: tuple[FastAPI, httpx.AsyncClient], redis: Any,
) -> None:
    app, client = app_client
    event = submitted()
    good = await put_dead_letter(redis, event.model_dump_json())
    broken = await put_dead_letter(redis, "{not an event")
    assert (await sign_in(client, OPERATIONS_KEY)).status_code == 303
    listed = await client.get("/operator/matching/dead-letters")
    assert listed.status_code == 200
    assert f"/operator/matching/dead-letters/{good}" in listed.text
    assert "referral.submitted" in listed.text
    assert "ValueError: boom" in listed.text
    one = await client.get(f"/operator/matching/dead-letters/{good}")
    assert one.status_code == 200
    assert event.id in one.text
    assert "30-34" not in one.text  # the event's data is not shown
    assert "korban_tindak_kekerasan" not in one.text
    assert f'action="/operator/matching/dead-letters/{good}/replay"' in one.text
    shown_broken = await client.get(f"/operator/matching/dead-letters/{broken}")
    assert "/replay" not in shown_broken.text  # it would only fail again

    csrf = await token(client)
    # Without the form's token: refused, the letter stays.
    assert (await client.post(f"/operator/matching/dead-letters/{good}/replay", data={})).status_code == 403
    assert (await find_dead_letter(redis, good, "matching"))["id"] == good
    r = await client.post(f"/operator/matching/dead-letters/{good}/replay", data={CSRF_FIELD: csrf})
    assert r.status_code == 303
    assert r.headers["location"] == f"/operator/matching/dead-letters?done=replayed&id={good}"
    with pytest.raises(KeyError):
        await find_dead_letter(redis, good, "matching")
    replays = await redis.xrange(replay_stream("matching"))
    assert [f[b"replay_of"].decode() for _i, f in replays] == [good]
    after = await client.get(r.headers["location"])
    assert "Diputar ulang" in after.text
    # Twice: it is gone.
    assert (await client.post(f"/operator/matching/dead-letters/{good}/replay",
                              data={CSRF_FIELD: csrf})).status_code == 404

    refused = await client.post(f"/operator/matching/dead-letters/{broken}/replay", data={CSRF_FIELD: csrf})
    assert refused.status_code == 422
    assert (await find_dead_letter(redis, broken, "matching"))["id"] == broken
    gone = await client.post(f"/operator/matching/dead-letters/{broken}/discard", data={CSRF_FIELD: csrf})
    assert gone.status_code == 303
    with pytest.raises(KeyError):
        await find_dead_letter(redis, broken, "matching")
    assert "Tidak ada surat mati" in (await client.get("/operator/matching/dead-letters")).text
    # Not an id at all.
    assert (await client.get("/operator/matching/dead-letters/../../x")).status_code in (404, 307)
    assert (await client.get("/operator/matching/dead-letters/abc")).status_code == 404

    actions = [(e.operator, e.method, e.action, e.target, e.status) for e in await audit_log(app).entries(limit=1000)]
    replay = "/operator/matching/dead-letters/{dead_id}/replay"
    assert ("test-operations", "POST", replay, {"dead_id": good}, 403) in actions  # the refused one too
    assert ("test-operations", "POST", replay, {"dead_id": good}, 303) in actions
    assert ("test-operations", "POST", replay, {"dead_id": broken}, 422) in actions
    assert ("test-operations", "POST", "/operator/matching/dead-letters/{dead_id}/discard", {"dead_id": broken},
            303) in actions


@SQLITE
async def test_wrong_keys_are_counted_by_the_boundary_and_english_is_a_switch_away(
    database_url: str, redis_url: str, redis: Any,
) -> None:
    async with running(matching_app(database_url, redis_url, auth_failures_per_minute=3)) as client:
        english = await client.get("/lang/en", params={"next": "/operator/signin"})
        assert english.headers["location"] == "/operator/signin"
        form = await client.get("/operator/signin")
        assert "Operator sign-in" in form.text
        assert '<html lang="en">' in form.text
        statuses = [(await sign_in(client, f"rjo_guess-{n}")).status_code for n in range(5)]
        assert statuses[:3] == [401, 401, 401]
        assert statuses[3:] == [429, 429]  # a guesser is slowed down as on the API
        # Even the right key waits now: the count is per address, before any key is checked.
        assert (await sign_in(client, DIRECTORY_KEY)).status_code == 429
