"""Issue 8, finding 5: operators onboard agencies (create, list, rotate, revoke) over the API
and from `rujukan agencies`; keys are shown once and kept as HMAC-SHA256(pepper, key); the
demo agency exists only in development (real Redis; SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from typer.testing import CliRunner

from intake.bootstrap import MIGRATIONS, create_app
from intake.operator_cli import app as rujukan
from intake.settings import Settings
from shared.db import make_engine, upgrade
from tests.apps import (
    AGENCY_PEPPER,
    AUDIT_KEY,
    DEMO_KEY,
    DIRECTORY_KEY,
    ONBOARDING_KEY,
    OPERATIONS_KEY,
    OPERATOR_KEYS,
    TEST_KEYS,
    bearer,
    running,
)

ONBOARDING = bearer(ONBOARDING_KEY)


def settings(database_url: str, redis_url: str, **over: Any) -> Settings:
    values: dict[str, Any] = dict(database_url=database_url, redis_url=redis_url, encryption_keys=TEST_KEYS,
                                  agency_key_pepper=AGENCY_PEPPER, operator_keys=OPERATOR_KEYS,
                                  demo_api_key=DEMO_KEY, outbox_poll_interval_s=0.2, stream_block_ms=100)
    values.update(over)
    return Settings(**values)


async def referrals_with(client: httpx.AsyncClient, key: str) -> int:
    return (await client.get("/v1/referrals", headers=bearer(key))).status_code


async def stored(database_url: str, sql: str) -> list[dict[str, Any]]:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            return [dict(r) for r in (await conn.execute(text(sql))).mappings()]
    finally:
        await engine.dispose()


async def test_an_agency_is_created_listed_rotated_and_revoked_over_the_api(
    database_url: str, redis_url: str, redis: Any
) -> None:
    async with running(create_app(settings(database_url, redis_url))) as client:
        r = await client.post("/v1/agencies", json={"id": "ppa-medan", "name": "UPTD PPA Kota Medan"},
                              headers=ONBOARDING)
        assert r.status_code == 201, r.text
        created = r.json()
        key = created["api_key"]
        assert created["id"] == "ppa-medan"
        assert created["active"]
        assert key.startswith("rja_")
        assert await referrals_with(client, key) == 200

        # Kept as an HMAC under the pepper: neither the key nor its plain SHA-256 is stored.
        [row] = await stored(database_url, "SELECT key_hmac, key_hint FROM agency WHERE id = 'ppa-medan'")
        assert row["key_hmac"] == hmac.new(AGENCY_PEPPER.encode(), key.encode(), hashlib.sha256).hexdigest()
        assert row["key_hmac"] != hashlib.sha256(key.encode()).hexdigest()
        assert row["key_hint"] == key[:8]

        # Shown once: never in a list.
        listed = (await client.get("/v1/agencies", headers=ONBOARDING)).json()["items"]
        assert {a["id"] for a in listed} == {"demo", "ppa-medan"}
        assert key not in json.dumps(listed)
        assert all("api_key" not in a for a in listed)

        # An id is taken once; one is made up when none is given.
        again = await client.post("/v1/agencies", json={"id": "ppa-medan", "name": "x"}, headers=ONBOARDING)
        assert again.status_code == 409
        made_up = await client.post("/v1/agencies", json={"name": "Dinas Sosial Kupang"}, headers=ONBOARDING)
        assert made_up.status_code == 201
        assert made_up.json()["id"]
        bad = await client.post("/v1/agencies", json={"id": "Not An Id!", "name": "x"}, headers=ONBOARDING)
        assert bad.status_code == 422

        # Rotate: the new key works, the old one is dead at once.
        rotated = await client.post("/v1/agencies/ppa-medan/keys/rotate", headers=ONBOARDING)
        assert rotated.status_code == 200, rotated.text
        new_key = rotated.json()["api_key"]
        assert new_key != key
        assert await referrals_with(client, new_key) == 200
        assert await referrals_with(client, key) == 401

        # Revoke: its key stops working; rotating gives it a new one (active again).
        revoked = await client.post("/v1/agencies/ppa-medan/revoke", headers=ONBOARDING)
        assert revoked.status_code == 200
        assert revoked.json()["active"] is False
        assert await referrals_with(client, new_key) == 401
        assert (await client.post("/v1/agencies/nobody/revoke", headers=ONBOARDING)).status_code == 404
        assert (await client.post("/v1/agencies/nobody/keys/rotate", headers=ONBOARDING)).status_code == 404
        back = await client.post("/v1/agencies/ppa-medan/keys/rotate", headers=ONBOARDING)
        assert await referrals_with(client, back.json()["api_key"]) == 200

        # Only the onboarding role: other operators 403, an agency or nobody 401.
        for key_, code in ((DIRECTORY_KEY, 403), (OPERATIONS_KEY, 403), (AUDIT_KEY, 403), (DEMO_KEY, 401)):
            assert (await client.get("/v1/agencies", headers=bearer(key_))).status_code == code
            r = await client.post("/v1/agencies", json={"name": "x"}, headers=bearer(key_))
            assert r.status_code == code
        assert (await client.get("/v1/agencies")).status_code == 401


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_demo_agency_lives_only_while_development_gives_its_key(
    database_url: str, redis_url: str, redis: Any
) -> None:
    async with running(create_app(settings(database_url, redis_url))) as client:
        assert await referrals_with(client, DEMO_KEY) == 200
    # DEMO_API_KEY removed: the demo agency is off at the next start.
    async with running(create_app(settings(database_url, redis_url, demo_api_key=None))) as client:
        assert await referrals_with(client, DEMO_KEY) == 401
        [demo] = [a for a in (await client.get("/v1/agencies", headers=ONBOARDING)).json()["items"]
                  if a["id"] == "demo"]
        assert demo["active"] is False
    # Outside development a demo key is refused at start.
    from shared.settings import DevelopmentValue

    with pytest.raises(DevelopmentValue, match="DEMO_API_KEY"):
        create_app(settings(database_url, redis_url, rujukan_env="production"))


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_the_migration_switches_off_agencies_whose_key_it_cannot_rehash(database_url: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    await asyncio.to_thread(command.upgrade, cfg, "d81bd5576f4e")
    engine = make_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO agency (id, name, api_key_sha256, active, created_at) "
            "VALUES ('old', 'Old agency', :digest, :on, CURRENT_TIMESTAMP)"),
            {"digest": hashlib.sha256(b"old-key").hexdigest(), "on": True})
    await engine.dispose()
    await upgrade(database_url, MIGRATIONS)
    [row] = await stored(database_url, "SELECT id, key_hmac, active FROM agency")
    assert row["key_hmac"] == "none:old"
    assert not row["active"]


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
async def test_agencies_from_the_command_line_are_audited(
    database_url: str, redis_url: str, redis: Any, tmp_path: Path
) -> None:
    runner = CliRunner()
    env = {"DATABASE_URL": database_url, "AGENCY_KEY_PEPPER": AGENCY_PEPPER, "RUJUKAN_OPERATOR": "ani"}

    def cli(*args: str, **extra: str) -> Any:
        return asyncio.to_thread(runner.invoke, rujukan, ["agencies", *args], env={**env, **extra})

    created = await cli("create", "UPTD PPA Kota Kupang", "--id", "ppa-kupang", "--json")
    assert created.exit_code == 0, created.output
    key = json.loads(created.stdout)["api_key"]
    assert (await cli("create", "again", "--id", "ppa-kupang")).exit_code == 1
    listed = await cli("list", "--json")
    assert listed.exit_code == 0
    assert [a["id"] for a in json.loads(listed.stdout)] == ["ppa-kupang"]
    assert key not in listed.stdout

    async with running(create_app(settings(database_url, redis_url, demo_api_key=None))) as client:
        assert await referrals_with(client, key) == 200
        rotated = await cli("rotate", "ppa-kupang", "--json")
        assert rotated.exit_code == 0, rotated.output
        new_key = json.loads(rotated.stdout)["api_key"]
        assert await referrals_with(client, key) == 401
        assert await referrals_with(client, new_key) == 200
        assert (await cli("revoke", "ppa-kupang")).exit_code == 0
        assert await referrals_with(client, new_key) == 401
        assert (await cli("revoke", "nobody")).exit_code == 1

        # Without the pepper the command line would issue keys that never work: refused.
        assert (await cli("list", AGENCY_KEY_PEPPER="")).exit_code == 2

        audit = (await client.get("/v1/ops/audit", params={"operator": "ani"}, headers=bearer(AUDIT_KEY))).json()
        seen = [(e["action"], e["target"].get("agency_id"), e["status"], e["role"]) for e in audit["items"]]
        assert seen == [
            ("agencies create", "ppa-kupang", 201, "cli"), ("agencies create", "ppa-kupang", 409, "cli"),
            ("agencies list", None, 200, "cli"), ("agencies rotate", "ppa-kupang", 200, "cli"),
            ("agencies revoke", "ppa-kupang", 200, "cli"), ("agencies revoke", "nobody", 404, "cli"),
        ]
