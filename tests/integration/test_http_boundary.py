"""The HTTP boundary of the three services, in-process against real Redis and a real
database: one error shape (RFC 9457 problem details), a credential before any body, capped
and typed bodies, inputs that used to answer 500, and failed authentication limited."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from typer.testing import CliRunner

from devtools.mailcatcher import MailCatcher
from intake.bootstrap import create_app as intake_app
from intake.operator_cli import app as cli
from intake.settings import Settings as IntakeSettings
from matching.bootstrap import create_app as matching_app
from matching.settings import Settings as MatchingSettings
from notify.bootstrap import create_app as notify_app
from notify.settings import Settings as NotifySettings
from shared.events import Envelope, ReceiverRegistered
from shared.operators import Role
from shared.problems import PROBLEM_MEDIA_TYPE
from shared.streams.topology import publish
from tests.apps import DEMO_KEY, GRANT_SECRET, OPERATOR_KEYS, ROLE_KEYS, TEST_KEYS, bearer, eventually
from tests.integration.test_intake import body as referral
from tests.integration.test_notify_inbox import mailed_token

AGENCY = bearer(DEMO_KEY)
DIRECTORY = bearer(ROLE_KEYS[Role.directory])
OPERATIONS = bearer(ROLE_KEYS[Role.operations])
ONBOARDING = bearer(ROLE_KEYS[Role.onboarding])
HUGE = "32589158477190044730"  # beyond any 64-bit integer


def settings(service: str, database_url: str, redis_url: str, **over: Any) -> Any:
    common: dict[str, Any] = dict(database_url=database_url, redis_url=redis_url, operator_keys=OPERATOR_KEYS,
                                  outbox_poll_interval_s=0.2, stream_block_ms=100, **over)
    if service == "intake":
        return IntakeSettings(encryption_keys=TEST_KEYS, demo_api_key=DEMO_KEY, receiver_grant_secret=GRANT_SECRET,
                              **common)
    if service == "matching":
        return MatchingSettings(**common)
    return NotifySettings(**{"smtp_url": "smtp://127.0.0.1:9", "receiver_grant_secret": GRANT_SECRET, **common})


APPS = {"intake": intake_app, "matching": matching_app, "notify": notify_app}


def make(service: str, database_url: str, redis_url: str, **over: Any) -> FastAPI:
    app: FastAPI = APPS[service](settings(service, database_url, redis_url, **over))
    return app


@asynccontextmanager
async def started(*apps: FastAPI) -> AsyncIterator[list[Any]]:
    """The apps with their lifespans run; yields what to give an ASGITransport."""
    async with AsyncExitStack() as stack:
        yield [(await stack.enter_async_context(LifespanManager(a, startup_timeout=60, shutdown_timeout=30))).app
               for a in apps]


def client(asgi: Any, address: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=asgi, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def assert_problem(r: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE, r.headers
    p: dict[str, Any] = r.json()
    assert p["status"] == status, p
    assert p["type"] == "about:blank", p
    assert p["title"], p
    assert p["detail"], p
    assert isinstance(p["errors"], list)
    if field is not None:
        assert field in [e["field"] for e in p["errors"]], p
        assert all(e["reason"] for e in p["errors"]), p
    return p


def sqlite(tmp_path: Path, name: str) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}"


# --- one error shape ----------------------------------------------------------------------------


async def test_every_error_is_problem_details_naming_field_and_reason(
    database_url: str, redis_url: str, redis: Any
) -> None:
    async with started(make("intake", database_url, redis_url)) as (asgi,), client(asgi) as c:
        p = assert_problem(await c.get("/v1/referrals"), 401)
        assert p["errors"] == []
        assert_problem(await c.get("/v1/referrals", headers=bearer("nope")), 401)
        bad = referral()
        bad["client"]["age"] = 130
        p = assert_problem(await c.post("/v1/referrals", json=bad, headers=AGENCY), 422, "client.age")
        assert "Siti" not in str(p)  # the input is never echoed back
        assert_problem(await c.post("/v1/referrals", content=b"{not json", headers={
            **AGENCY, "content-type": "application/json"}), 422)
        assert_problem(await c.get("/v1/referrals/nope", headers=AGENCY), 404)
        assert (await c.post("/v1/referrals", json=referral("X-1"), headers=AGENCY)).status_code == 202
        p = assert_problem(await c.post("/v1/referrals", json=referral("X-1", urgency="crisis",
                                                                       risk_flags=["ongoing_violence"]),
                                        headers=AGENCY), 409, "external_ref")
        assert p["errors"][0]["referral_id"]  # the referral it belongs to: the server's fact
        assert_problem(await c.delete("/v1/referrals", headers=AGENCY), 405)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("service", ["intake", "matching", "notify"])
def test_the_openapi_documents_every_error_of_every_operation(service: str, database_url: str) -> None:
    doc = make(service, database_url, "redis://127.0.0.1:1/0").openapi()
    assert doc["components"]["schemas"]["Problem"]["required"] == ["title", "status", "detail"]
    operations = [(path, method, op) for path, item in doc["paths"].items() for method, op in item.items()
                  if path not in ("/health", "/ready")]  # open: no credential, no 401
    assert operations
    for path, method, op in operations:
        for status in ("401", "413", "415", "422", "429", "503"):
            assert status in op["responses"], (method, path, status)
        documented = op["responses"]["422"]["content"]
        assert documented == {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}


# --- a credential before any body, bodies capped and typed --------------------------------------


class Body:
    """A request body that counts what of it was read."""

    def __init__(self, size: int, chunk: int = 16 * 1024) -> None:
        self.size, self.chunk, self.read = size, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.read < self.size:
            n = min(self.chunk, self.size - self.read)
            self.read += n
            yield b" " * n


async def test_no_credential_is_refused_before_the_body_is_read(
    database_url: str, redis_url: str, redis: Any
) -> None:
    async with started(make("intake", database_url, redis_url)) as (asgi,), client(asgi) as c:
        body = Body(50 * 1024 * 1024)
        r = await c.post("/v1/referrals", content=body, headers={"content-type": "application/json"})
        assert_problem(r, 401)
        assert r.headers["www-authenticate"] == "Bearer"
        assert body.read <= body.chunk  # at most what the client had queued before the answer
        # Health and the API's description need none.
        assert (await c.get("/health")).status_code == 200
        assert (await c.get("/openapi.json")).status_code == 200


async def test_a_body_past_its_cap_is_refused_unread_or_as_soon_as_it_passes(
    database_url: str, redis_url: str, redis: Any
) -> None:
    async with started(make("intake", database_url, redis_url)) as (asgi,), client(asgi) as c:
        # Content-Length says so: refused before reading, whatever the key.
        for headers in (AGENCY, bearer("wrong")):
            sized = await c.post("/v1/referrals", content=b" " * (64 * 1024 + 1),
                                 headers={**headers, "content-type": "application/json"})
            assert_problem(sized, 413)
        # Streamed without a length: refused once past the cap, the rest never read.
        body = Body(100 * 1024 * 1024)
        streamed = await c.post("/v1/referrals", content=body, headers={**AGENCY, "content-type": "application/json"})
        assert_problem(streamed, 413)
        assert body.read <= 64 * 1024 + body.chunk
        # A referral of ordinary size still goes in.
        assert (await c.post("/v1/referrals", json=referral(), headers=AGENCY)).status_code == 202


async def test_a_body_in_another_media_type_is_415(database_url: str, redis_url: str, redis: Any) -> None:
    async with started(make("intake", database_url, redis_url)) as (asgi,), client(asgi) as c:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml", None):
            headers = {**AGENCY, **({"content-type": content_type} if content_type else {})}
            assert_problem(await c.post("/v1/referrals", content=b'{"a": 1}', headers=headers), 415)
        ok = await c.post("/v1/referrals", json=referral(),
                          headers={**AGENCY, "content-type": "application/json; charset=utf-8"})
        assert ok.status_code == 202, ok.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_directory_import_takes_csv_and_json_up_to_its_own_setting(
    database_url: str, redis_url: str, redis: Any
) -> None:
    app = make("matching", database_url, redis_url, directory_import_max_bytes=200_000)
    async with started(app) as (asgi,), client(asgi) as c:
        # Above the APIs' 64 KiB but within the import's own cap: read and judged.
        big_csv = "id,name\n" + "".join(f"svc-{i},Layanan {i}\n" for i in range(5000))
        assert 64 * 1024 < len(big_csv) < 200_000
        r = await c.post("/v1/directory/import", content=big_csv.encode(),
                         headers={**DIRECTORY, "content-type": "text/csv"})
        assert r.status_code != 413, r.text
        assert_problem(await c.post("/v1/directory/import", content=b"[" + b" " * 200_000 + b"]",
                                    headers={**DIRECTORY, "content-type": "application/json"}), 413)
        assert_problem(await c.post("/v1/directory/import", content=b"<services/>",
                                    headers={**DIRECTORY, "content-type": "application/xml"}), 415)


# --- ten 500s that are 4xx now ------------------------------------------------------------------


async def test_an_offset_past_any_integer_is_422(database_url: str, redis_url: str, redis: Any) -> None:
    async with started(make("intake", database_url, redis_url)) as (asgi,), client(asgi) as c:
        assert_problem(await c.get(f"/v1/referrals?offset={HUGE}", headers=AGENCY), 422, "offset")
        assert (await c.get("/v1/referrals?offset=1000", headers=AGENCY)).status_code == 200


async def test_a_page_past_any_integer_is_422(database_url: str, redis_url: str, redis: Any) -> None:
    async with started(make("matching", database_url, redis_url)) as (asgi,), client(asgi) as c:
        assert_problem(await c.get("/v1/services?page=158808672038712416", headers=DIRECTORY), 422, "page")
        assert (await c.get("/v1/services?page=100000", headers=DIRECTORY)).json()["contents"] == []


async def test_an_inbox_offset_past_any_integer_is_422(database_url: str, redis_url: str, redis: Any,
                                                      mailbox: MailCatcher) -> None:
    async with started(make("notify", database_url, redis_url, smtp_url=mailbox.url)) as (asgi,), client(asgi) as c:
        receiver = "01BOUNDARYRECEIVER"
        await publish(redis, [Envelope.wrap(ReceiverRegistered(
            receiver_id=receiver, organization_id="org-x", service_id="svc-x", contact_id="ct-x",
            contact_email="ct-x@example.org"), source="rujukan/matching", subject=receiver)])

        async def issued() -> str | None:
            r = await c.post(f"/v1/receivers/{receiver}/tokens", json={"valid_days": 1}, headers=ONBOARDING)
            return str(r.json()["id"]) if r.status_code == 202 else None

        token = bearer(await mailed_token(mailbox, "ct-x@example.org", await eventually(issued)))
        assert_problem(await c.get(f"/v1/inbox?offset={HUGE}", headers=token), 422, "offset")
        assert (await c.get("/v1/inbox?offset=1000", headers=token)).json()["items"] == []


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_dead_letter_id_that_cannot_be_one_is_4xx(
    tmp_path: Path, database_url: str, redis_url: str, redis: Any
) -> None:
    apps = [make(s, sqlite(tmp_path, s), redis_url) for s in APPS]
    async with started(*apps) as asgis:
        for asgi in asgis:
            async with client(asgi) as c:
                for bad in ("abc", "1-99999999999999999999999", "99999999999999999999-1", "-", "1-2-3"):
                    for r in (await c.get(f"/v1/ops/dead-letters/{bad}", headers=OPERATIONS),
                              await c.post(f"/v1/ops/dead-letters/{bad}/replay", headers=OPERATIONS)):
                        # Refused as an id (422 naming it), or looked for and not found (404).
                        if r.status_code == 422:
                            assert_problem(r, 422, "dead_id")
                        else:
                            assert_problem(r, 404)
    shown = await asyncio.to_thread(CliRunner().invoke, cli, ["dead-letters", "show", "abc"],
                                    env={"REDIS_URL": redis_url})
    assert shown.exit_code in (1, 2)
    assert ("no dead letter abc" in shown.output or "looks like" in shown.output)
    assert isinstance(shown.exception, SystemExit)
    assert "Traceback" not in shown.output  # a message, no traceback


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_bearer_that_is_not_ascii_is_401(tmp_path: Path, database_url: str, redis_url: str,
                                                 redis: Any) -> None:
    paths = {"intake": "/v1/ops/streams", "matching": "/v1/services", "notify": "/v1/ops/streams"}
    apps = [make(s, sqlite(tmp_path, s), redis_url) for s in APPS]
    async with started(*apps) as asgis:
        for (service, path), asgi in zip(paths.items(), asgis, strict=True):
            async with client(asgi) as c:
                for token in (b"\xe9", b"caf\xe9", b"a\x01b"):
                    r = await c.get(path, headers={"Authorization": b"Bearer " + token})
                    assert_problem(r, 401)
                    assert r.headers["www-authenticate"] == "Bearer", service


async def test_a_directory_nested_too_deep_is_422(database_url: str, redis_url: str, redis: Any) -> None:
    async with started(make("matching", database_url, redis_url)) as (asgi,), client(asgi) as c:
        json_headers = {**DIRECTORY, "content-type": "application/json"}
        for depth in (100_000, 5_000):
            r = await c.post("/v1/directory/import", content=b"[" * depth + b"]" * depth, headers=json_headers)
            p = assert_problem(r, 422, "(body)")
            assert p["errors"][0]["reason"] == "nesting too deep"
        # Deep but within what the parser takes: judged record by record, never a 500.
        deep: Any = "x"
        for _ in range(500):
            deep = [deep]
        r = await c.post("/v1/directory/import", json=[deep, {"id": "svc-x", "name": "X", "attributes": deep}],
                         headers=DIRECTORY)
        assert r.status_code in (200, 422), r.text


# --- failed authentication is not free ----------------------------------------------------------


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_failed_authentication_is_limited_per_client_across_replicas(
    tmp_path: Path, database_url: str, redis_url: str, redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rujukan.http")
    # Two replicas of intake on one Redis (each its own database: only Redis is shared here).
    one, two = (make("intake", sqlite(tmp_path, f"intake{n}"), redis_url, auth_failures_per_minute=20)
                for n in (1, 2))
    async with started(one, two) as (a, b), client(a, "10.9.0.1") as a1, client(b, "10.9.0.1") as b1, \
            client(b, "10.9.0.2") as b2:
        # Success is not counted.
        for _ in range(25):
            assert (await a1.get("/v1/referrals", headers=AGENCY)).status_code == 200
        codes = []
        for n in range(30):
            replica = a1 if n % 2 else b1
            codes.append((await replica.get("/v1/referrals", headers=bearer(f"guess-{n}"))).status_code)
        assert codes == [401] * 20 + [429] * 10, codes
        refused = await a1.get("/v1/referrals", headers=AGENCY)  # even the right key, from that client
        assert_problem(refused, 429)
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        # Another client with the right key is served.
        assert (await b2.get("/v1/referrals", headers=AGENCY)).status_code == 200

    lines = [r.getMessage() for r in caplog.records if "too many failed authentications" in r.getMessage()]
    assert len(lines) == 11
    assert all("10.9.0.1" in line and "/v1/referrals" in line for line in lines)
    assert not any("guess-" in r.getMessage() or DEMO_KEY in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_every_surface_counts_failures_per_credential_too(
    tmp_path: Path, database_url: str, redis_url: str, redis: Any
) -> None:
    intake = make("intake", sqlite(tmp_path, "intake"), redis_url, auth_failures_per_minute=5)
    matching = make("matching", sqlite(tmp_path, "matching"), redis_url, auth_failures_per_minute=5)
    notify = make("notify", sqlite(tmp_path, "notify"), redis_url, auth_failures_per_minute=5)
    surfaces = [  # agency key, receiver grant, operator key, receiver token, receiver session
        (0, "/v1/referrals", {}), (0, "/v1/receivers/referrals/r1", {}), (1, "/v1/services", {}),
        (2, "/v1/inbox", {}), (2, "/v1/inbox", {"cookie": "rujukan_session=stolen"}),
    ]
    async with started(intake, matching, notify) as asgis:
        for n, (i, path, extra) in enumerate(surfaces):
            # One credential tried from many addresses: the credential is limited.
            headers = extra or bearer(f"one-guess-{n}")
            codes = []
            for k in range(7):
                async with client(asgis[i], f"10.{n}.{k}.1") as c:
                    codes.append((await c.get(path, headers=headers)).status_code)
            assert codes == [401] * 5 + [429] * 2, (path, extra, codes)
        # Many credentials from one address: the address is limited.
        async with client(asgis[1], "10.200.0.1") as c:
            codes = [(await c.get("/v1/services", headers=bearer(f"op-{k}"))).status_code for k in range(7)]
        assert codes == [401] * 5 + [429] * 2, codes
        # A known operator key of another role is a failure too (403).
        async with client(asgis[1], "10.201.0.1") as c:
            codes = [(await c.get("/v1/services", headers=OPERATIONS)).status_code for _ in range(7)]
        assert codes == [403] * 5 + [429] * 2, codes
        # A sign-in link is a credential too: unknown links from one address are limited.
        async with client(asgis[2], "10.202.0.1") as c:
            codes = [(await c.get(f"/v1/signin/not-a-code-{k}")).status_code for k in range(7)]
        assert codes == [410] * 5 + [429] * 2, codes
        # Health is never limited.
        async with client(asgis[1], "10.200.0.1") as c:
            assert (await c.get("/health")).status_code == 200

