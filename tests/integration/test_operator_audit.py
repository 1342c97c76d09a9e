"""Issue 8, finding 4: operators have roles with keys of their own, and every operator
action, allowed or refused, is in an append-only audit log an auditor can query (real Redis;
SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from intake.bootstrap import create_app as intake_app
from intake.settings import Settings as IntakeSettings
from matching.bootstrap import create_app as matching_app
from matching.settings import Settings as MatchingSettings
from notify.bootstrap import create_app as notify_app
from notify.settings import Settings as NotifySettings
from shared.db import make_engine
from tests.apps import (
    AGENCY_PEPPER,
    AUDIT_KEY,
    DEMO_KEY,
    DIRECTORY_KEY,
    GRANT_SECRET,
    ONBOARDING_KEY,
    OPERATIONS_KEY,
    OPERATOR_KEYS,
    TEST_KEYS,
    bearer,
    running,
)

AUDITOR = bearer(AUDIT_KEY)


def app_for(service: str, database_url: str, redis_url: str) -> Any:
    common: dict[str, Any] = dict(database_url=database_url, redis_url=redis_url, operator_keys=OPERATOR_KEYS,
                                  stream_block_ms=100, outbox_poll_interval_s=0.2)
    if service == "intake":
        return intake_app(IntakeSettings(encryption_keys=TEST_KEYS, demo_api_key=DEMO_KEY,
                                         agency_key_pepper=AGENCY_PEPPER, receiver_grant_secret=GRANT_SECRET,
                                         **common))
    if service == "matching":
        return matching_app(MatchingSettings(**common))
    return notify_app(NotifySettings(receiver_grant_secret=GRANT_SECRET, **common))


async def audit(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    r = await client.get("/v1/ops/audit", params=params, headers=AUDITOR)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def test_each_role_does_its_own_work_only_and_every_call_is_audited(
    database_url: str, redis_url: str, redis: Any
) -> None:
    async with running(app_for("matching", database_url, redis_url)) as client:
        # The directory is the directory role's; dead letters and streams the operations role's.
        assert (await client.get("/v1/services", headers=bearer(DIRECTORY_KEY))).status_code == 200
        assert (await client.get("/v1/services/svc-nowhere", headers=bearer(DIRECTORY_KEY))).status_code == 404
        assert (await client.get("/v1/services", headers=bearer(OPERATIONS_KEY))).status_code == 403
        assert (await client.get("/v1/ops/dead-letters", headers=bearer(DIRECTORY_KEY))).status_code == 403
        assert (await client.get("/v1/ops/dead-letters", headers=bearer(OPERATIONS_KEY))).status_code == 200
        assert (await client.post("/v1/ops/dead-letters/1-1/replay", headers=bearer(OPERATIONS_KEY))).status_code \
            == 404
        for key in (ONBOARDING_KEY, AUDIT_KEY):
            assert (await client.get("/v1/services", headers=bearer(key))).status_code == 403
        # The audit log is the audit role's alone.
        for key in (DIRECTORY_KEY, OPERATIONS_KEY, ONBOARDING_KEY):
            assert (await client.get("/v1/ops/audit", headers=bearer(key))).status_code == 403
        # No operator named: nothing to audit (and nothing learned).
        assert (await client.get("/v1/services", headers=bearer("rjo_unknown"))).status_code == 401
        assert (await client.get("/v1/services")).status_code == 401

        entries = await audit(client)
        seen = [(e["operator"], e["role"], e["method"], e["action"], e["target"], e["status"]) for e in entries]
        assert seen == [
            ("test-directory", "directory", "GET", "/v1/services", {}, 200),
            ("test-directory", "directory", "GET", "/v1/services/{service_id}", {"service_id": "svc-nowhere"}, 404),
            ("test-operations", "operations", "GET", "/v1/services", {}, 403),
            ("test-directory", "directory", "GET", "/v1/ops/dead-letters", {}, 403),
            ("test-operations", "operations", "GET", "/v1/ops/dead-letters", {}, 200),
            ("test-operations", "operations", "POST", "/v1/ops/dead-letters/{dead_id}/replay", {"dead_id": "1-1"}, 404),
            ("test-onboarding", "onboarding", "GET", "/v1/services", {}, 403),
            ("test-audit", "audit", "GET", "/v1/services", {}, 403),
            ("test-directory", "directory", "GET", "/v1/ops/audit", {}, 403),
            ("test-operations", "operations", "GET", "/v1/ops/audit", {}, 403),
            ("test-onboarding", "onboarding", "GET", "/v1/ops/audit", {}, 403),
        ]
        assert all(e["client"] == "127.0.0.1" for e in entries)
        at = [datetime.fromisoformat(e["at"]) for e in entries]
        assert at == sorted(at)
        assert all(t.tzinfo is not None for t in at)

        # The auditor's own reading is an operator action too.
        last = (await audit(client, operator="test-audit"))[-1]
        assert (last["action"], last["status"]) == ("/v1/ops/audit", 200)
        # Filters: by operator, from a time on, at most `limit`.
        assert {e["operator"] for e in await audit(client, operator="test-operations")} == {"test-operations"}
        assert len(await audit(client, limit=2)) == 2
        assert await audit(client, since=(datetime.now(UTC) + timedelta(minutes=1)).isoformat()) == []
        since = entries[4]["at"]
        assert (await audit(client, since=since))[0]["id"] == entries[4]["id"]
        assert (await client.get("/v1/ops/audit", params={"limit": 0}, headers=AUDITOR)).status_code == 422


async def test_the_audit_log_refuses_to_be_changed_or_emptied(database_url: str, redis_url: str, redis: Any) -> None:
    async with running(app_for("matching", database_url, redis_url)) as client:
        assert (await client.get("/v1/services", headers=bearer(DIRECTORY_KEY))).status_code == 200
    engine = make_engine(database_url)
    try:
        for sql in ("UPDATE audit_entry SET operator = 'someone-else'", "DELETE FROM audit_entry"):
            with pytest.raises(Exception, match="append-only"):
                async with engine.begin() as conn:
                    await conn.execute(text(sql))
        async with engine.connect() as conn:
            rows = (await conn.execute(text("SELECT operator FROM audit_entry"))).all()
        assert [r[0] for r in rows] == ["test-directory"]
    finally:
        await engine.dispose()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("service", ["intake", "matching", "notify"])
async def test_every_service_audits_its_operator_routes(
    service: str, database_url: str, redis_url: str, redis: Any, tmp_path: Path
) -> None:
    async with running(app_for(service, database_url, redis_url)) as client:
        assert (await client.get("/v1/ops/streams", headers=bearer(OPERATIONS_KEY))).status_code == 200
        assert (await client.get("/v1/ops/streams", headers=bearer(DIRECTORY_KEY))).status_code == 403
        if service == "notify":
            r = await client.get("/v1/deliveries", params={"referral_id": "x"}, headers=bearer(OPERATIONS_KEY))
            assert r.status_code == 200
            r = await client.get("/v1/deliveries", params={"referral_id": "x"}, headers=bearer(DIRECTORY_KEY))
            assert r.status_code == 403
        if service == "intake":
            assert (await client.get("/v1/agencies", headers=bearer(ONBOARDING_KEY))).status_code == 200
            # An agency's own calls are not operator actions.
            assert (await client.get("/v1/referrals", headers=bearer(DEMO_KEY))).status_code == 200
        entries = await audit(client)
        assert [(e["role"], e["action"], e["status"]) for e in entries] == [
            ("operations", "/v1/ops/streams", 200), ("directory", "/v1/ops/streams", 403),
            *([("operations", "/v1/deliveries", 200), ("directory", "/v1/deliveries", 403)]
              if service == "notify" else []),
            *([("onboarding", "/v1/agencies", 200)] if service == "intake" else []),
        ]
