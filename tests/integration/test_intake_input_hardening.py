"""Issue 8, findings 7 and 9 at intake, against the real app (real Redis, SQLite and
PostgreSQL): consent is a JSON boolean, free text holds no NUL or control character, SQL
parameters stay out of database errors, and the digest kept for idempotency is keyed."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import pytest
from sqlalchemy import insert, text
from sqlalchemy.exc import IntegrityError

from intake.adapters.orm import ProcessedEvent
from intake.bootstrap import MIGRATIONS, create_app
from intake.domain.model import ReferralRequest
from shared.db import make_engine, upgrade
from tests.apps import running
from tests.integration.test_intake import AUTH, body, settings

CANARY = "Kanari-Rahasia-7731"


def fields(r: Any) -> dict[str, str]:
    """The 422's fields and reasons, whichever error shape the app answers with."""
    payload = r.json()
    items = payload.get("errors") or payload.get("detail") or []
    return {d["field"]: d["reason"] for d in items}


@pytest.mark.parametrize("value", ["yes", "on", "true", 1, "1", None])
async def test_consent_must_be_a_json_boolean(database_url: str, redis_url: str, redis: Any, value: Any) -> None:
    async with running(create_app(settings(database_url, redis_url))) as client:
        for field in ("share_with_provider", "contact_by_provider"):
            b = body(f"C-{field}")
            b["client"]["consent"][field] = value
            r = await client.post("/v1/referrals", json=b, headers=AUTH)
            assert r.status_code == 422, r.text
            assert f"client.consent.{field}" in fields(r), r.text
        assert (await client.get("/v1/referrals", headers=AUTH)).json()["items"] == []


@pytest.mark.parametrize(("path", "value"), [
    ("external_ref", "PPA\x00MDN-1"),
    ("external_ref", "PPA-MDN-1\r\n"),
    ("client.initials", "S\x00"),
    ("client.contact.name", "Siti\x00"),
    ("narrative", "cerita\x00lanjut"),
    ("narrative", "cerita\x1b[2J"),
])
async def test_nul_and_control_characters_are_refused_with_the_field(
    database_url: str, redis_url: str, redis: Any, path: str, value: str
) -> None:
    async with running(create_app(settings(database_url, redis_url))) as client:
        b = body("NUL-1")
        *parents, last = path.split(".")
        node = b
        for p in parents:
            node = node[p]
        node[last] = value
        r = await client.post("/v1/referrals", json=b, headers=AUTH)
        assert r.status_code == 422, r.text
        reasons = fields(r)
        assert path in reasons, r.text
        assert "NUL" in reasons[path] or "control character" in reasons[path], r.text
        ok = await client.post("/v1/referrals", json=body("NUL-1", narrative="baris\n\tdua"), headers=AUTH)
        assert ok.status_code == 202, ok.text


async def test_sql_parameters_never_appear_in_database_errors(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    await upgrade(database_url, MIGRATIONS)
    engine = make_engine(database_url, echo=True)  # even with statements logged
    row = {"event_id": CANARY, "event_type": f"{CANARY}-type"}
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(ProcessedEvent.__table__), row)  # type: ignore[arg-type]
        with pytest.raises(IntegrityError) as e:  # the same primary key again
            async with engine.begin() as conn:
                await conn.execute(insert(ProcessedEvent.__table__), row)  # type: ignore[arg-type]
    finally:
        await engine.dispose()
    assert CANARY not in str(e.value)
    assert "hidden" in str(e.value)
    assert CANARY not in caplog.text
    assert "INSERT INTO processed_event" in caplog.text  # the statement itself was logged


async def test_the_idempotency_digest_is_keyed_and_old_unkeyed_rows_still_compare(
    database_url: str, redis_url: str, redis: Any
) -> None:
    async with running(create_app(settings(database_url, redis_url))) as client:
        first = await client.post("/v1/referrals", json=body("H-1"), headers=AUTH)
        assert first.status_code == 202
        # As rows from before digests were keyed hold it (from before `caseworker` existed, too).
        old_form = ReferralRequest.model_validate(body("H-1")).model_dump_json(exclude={"caseworker"})
        plain = hashlib.sha256(old_form.encode()).hexdigest()
        engine = make_engine(database_url)
        async with engine.begin() as conn:
            stored = (await conn.execute(text("SELECT request_sha256 FROM referral"))).scalar_one()
            assert stored.startswith("h1:")
            assert stored != plain
        again = await client.post("/v1/referrals", json=body("H-1"), headers=AUTH)
        assert again.status_code == 200
        assert again.json()["id"] == first.json()["id"]
        assert (await client.post("/v1/referrals", json=body("H-1", narrative="lain"),
                                  headers=AUTH)).status_code == 409
        # A row written before digests were keyed holds a plain SHA-256: a repeat of it is
        # still recognised as the same referral, and a different body is still a conflict.
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE referral SET request_sha256 = :d"), {"d": plain})
        await engine.dispose()
        assert (await client.post("/v1/referrals", json=body("H-1"), headers=AUTH)).status_code == 200
        assert (await client.post("/v1/referrals", json=body("H-1", urgency="crisis"),
                                  headers=AUTH)).status_code == 409


async def test_a_nul_in_the_path_or_the_query_is_refused_before_the_database(
    database_url: str, redis_url: str, redis: Any
) -> None:
    async with running(create_app(settings(database_url, redis_url))) as client:
        r = await client.get("/v1/referrals/abc%00def", headers=AUTH)
        assert r.status_code == 422, r.text
        assert fields(r) == {"(path)": fields(r)["(path)"]}, r.text
        assert "NUL" in fields(r)["(path)"]
        r = await client.get("/v1/referrals", params={"status": "submitted\x00"}, headers=AUTH)
        assert r.status_code == 422, r.text
        assert "status" in fields(r), r.text
        r = await client.post("/v1/referrals/abc%0Adef/cancel", json={"reason_code": "duplicate"}, headers=AUTH)
        assert r.status_code == 422, r.text
        assert "control character" in fields(r)["(path)"], r.text
        assert (await client.get("/v1/referrals/01ARZ3NDEKTSV4RRFFQ69G5FAV", headers=AUTH)).status_code == 404


async def test_an_agency_name_with_a_nul_is_refused_naming_the_field(
    database_url: str, redis_url: str, redis: Any
) -> None:
    from shared.operators import Role
    from tests.apps import AGENCY_PEPPER, OPERATOR_KEYS, ROLE_KEYS

    app = create_app(settings(database_url, redis_url).model_copy(
        update={"operator_keys": OPERATOR_KEYS, "agency_key_pepper": AGENCY_PEPPER}))
    onboarding = {"Authorization": f"Bearer {ROLE_KEYS[Role.onboarding]}"}
    async with running(app) as client:
        for name in ("Dinas Sosial\x00", "Dinas\nSosial"):
            r = await client.post("/v1/agencies", json={"name": name}, headers=onboarding)
            assert r.status_code == 422, r.text
            assert "name" in fields(r), r.text
        assert (await client.post("/v1/agencies", json={"name": "Dinas Sosial"}, headers=onboarding)).status_code == 201
