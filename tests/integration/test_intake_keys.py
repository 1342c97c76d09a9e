"""Issue 8, finding 9: `rujukan keys rotate` re-encrypts every sealed value under the first
key of ENCRYPTION_KEYS, resumably, so that the old key can be removed (SQLite and
PostgreSQL, real Redis, the real app before and after)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from intake.adapters.crypto import FieldCipher
from intake.bootstrap import create_app
from intake.cli import app as keys_cli
from intake.service_layer import keys
from shared.db import make_engine, sessions
from shared.grants import sign
from tests.apps import GRANT_SECRET, running
from tests.integration.test_intake import AUTH, body, settings

K1, K2 = FieldCipher.generate("k1"), FieldCipher.generate("k2")
runner = CliRunner()


async def rows(database_url: str) -> list[dict[str, Any]]:
    engine = make_engine(database_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text(
                "SELECT id, initials_enc, contact_enc, narrative_enc, request_sha256 FROM referral ORDER BY id"))
            return [dict(r) for r in result.mappings()]
    finally:
        await engine.dispose()


async def cli(database_url: str, *args: str) -> Any:
    env = {"DATABASE_URL": database_url, "ENCRYPTION_KEYS": f"{K2},{K1}"}
    return await asyncio.to_thread(runner.invoke, keys_cli, list(args), env=env)


def test_keys_new_prints_an_entry_that_encryption_keys_accepts() -> None:
    from intake.operator_cli import app as rujukan

    result = runner.invoke(rujukan, ["keys", "new", "--id", "k9"])
    assert result.exit_code == 0, result.output
    entry = result.stdout.strip().splitlines()[0]
    assert entry.startswith("k9:")
    assert FieldCipher(entry).current == "k9"


async def test_rotate_then_remove_the_old_key_and_everything_still_reads(
    database_url: str, redis_url: str, redis: Any
) -> None:
    n = 7
    async with running(create_app(settings(database_url, redis_url).model_copy(
            update={"encryption_keys": K1}))) as client:
        for i in range(n):
            r = await client.post("/v1/referrals", json=body(f"ROT-{i}", narrative=f"cerita {i}"), headers=AUTH)
            assert r.status_code == 202, r.text
    before = await rows(database_url)
    assert all(r["initials_enc"].startswith("v1:k1:") for r in before)

    # k2 first, k1 kept: an interrupted rotation (Ctrl-C after the first batch) keeps what
    # it committed ...
    engine = make_engine(database_url)
    cipher = FieldCipher(f"{K2},{K1}")
    assert await keys.pending(sessions(engine), cipher) == n

    def interrupt(_: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        await keys.rotate(sessions(engine), cipher, batch=3, on_batch=interrupt)
    assert await keys.pending(sessions(engine), cipher) == n - 3
    await engine.dispose()

    # ... and running it again finishes the job, skipping what was done.
    result = await cli(database_url, "rotate", "--batch", "2")
    assert result.exit_code == 0, result.output
    assert f"{n - 3} referral(s) re-encrypted with 'k2'" in result.output
    status = await cli(database_url, "status")
    assert "0 referral(s) to rotate" in status.output, status.output
    again = await cli(database_url, "rotate")
    assert again.exit_code == 0
    assert "0 referral(s) re-encrypted" in again.output

    after = await rows(database_url)
    only_k2 = FieldCipher(K2)
    for old, new in zip(before, after, strict=True):
        for col in ("initials_enc", "contact_enc", "narrative_enc"):
            assert new[col].startswith("v1:k2:")
        assert new["request_sha256"] != old["request_sha256"]
        assert only_k2.open(new["narrative_enc"], f"{new['id']}:narrative").startswith("cerita ")
        assert json.loads(only_k2.open(new["contact_enc"], f"{new['id']}:contact"))["name"] == "Siti"

    # k1 removed: intake reads every value, and a repeat of a submission is still the same
    # referral (its digest was re-keyed to k2), a changed one still a conflict.
    app = create_app(settings(database_url, redis_url).model_copy(update={"encryption_keys": K2}))
    async with running(app) as client:
        for r in after:
            referral, _ = await app.state.intake.get("demo", r["id"])
            assert app.state.intake.client_contact(referral)["initials"] == "SN"
        repeat = await client.post("/v1/referrals", json=body("ROT-0", narrative="cerita 0"), headers=AUTH)
        assert repeat.status_code == 200, repeat.text
        changed = await client.post("/v1/referrals", json=body("ROT-0", narrative="lain"), headers=AUTH)
        assert changed.status_code == 409


async def test_rotate_reports_a_value_no_configured_key_opens(database_url: str, redis_url: str, redis: Any) -> None:
    k0 = FieldCipher.generate("k0")
    async with running(create_app(settings(database_url, redis_url).model_copy(
            update={"encryption_keys": k0}))) as client:
        assert (await client.post("/v1/referrals", json=body("LOST-1"), headers=AUTH)).status_code == 202
    result = await cli(database_url, "rotate")
    assert result.exit_code == 1
    assert "sealed with key 'k0', which is not configured" in result.output
    assert "Siti" not in result.output


async def test_reading_personal_data_sealed_with_a_removed_key_answers_409_naming_the_key(
    database_url: str, redis_url: str, redis: Any, caplog: pytest.LogCaptureFixture
) -> None:
    def with_keys(k: str) -> Any:
        return create_app(settings(database_url, redis_url).model_copy(
            update={"encryption_keys": k, "receiver_grant_secret": GRANT_SECRET}))

    async with running(with_keys(K1)) as client:
        rid = (await client.post("/v1/referrals", json=body("GONE-1", narrative="cerita rahasia"),
                                 headers=AUTH)).json()["id"]
    # The referral was proposed to receiver R1 and accepted (as matching and notify would say).
    engine = make_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE referral SET status = 'accepted', matched_service = :m"), {"m": json.dumps(
            {"decision_id": "D1", "service_id": "svc-1", "recipient_receiver_ids": ["R1"]})})
    await engine.dispose()
    grant, _ = sign(GRANT_SECRET, referral_id=rid, decision_id="D1", receiver_id="R1", credential_id="C1")
    url, auth = f"/v1/receivers/referrals/{rid}", {"Authorization": f"Bearer {grant}"}

    # k1 removed without a rotation: a clear refusal, and one log line without the data.
    async with running(with_keys(K2)) as client:
        r = await client.get(url, headers=auth)
    assert r.status_code == 409, r.text
    assert "'k1'" in r.json()["detail"]
    assert "rujukan keys rotate" in r.json()["detail"]
    for secret in ("Siti", "cerita", "SN"):
        assert secret not in r.text
        assert secret not in caplog.text
    lines = [rec for rec in caplog.records if "sealed with key 'k1'" in rec.getMessage()]
    assert len(lines) == 1
    assert lines[0].exc_info is None  # no traceback

    # Restored (after the current key), it reads again.
    async with running(with_keys(f"{K2},{K1}")) as client:
        r = await client.get(url, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["narrative"] == "cerita rahasia"


async def test_rotate_takes_the_optional_caseworker_and_the_agencies_webhook_secrets_along(
    database_url: str, redis_url: str, redis: Any
) -> None:
    worker = {"name": "Ani", "phone": "+62 811 000 111", "email": "ani@ppa.example"}
    async with running(create_app(settings(database_url, redis_url).model_copy(
            update={"encryption_keys": K1}))) as client:
        with_one = body("CW-1") | {"caseworker": worker}
        assert (await client.post("/v1/referrals", json=with_one, headers=AUTH)).status_code == 202
        assert (await client.post("/v1/referrals", json=body("CW-2"), headers=AUTH)).status_code == 202
        hook = await client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"}, headers=AUTH)
        assert hook.status_code == 201, hook.text
    engine = make_engine(database_url)
    try:
        cipher = FieldCipher(f"{K2},{K1}")
        assert set(await keys.sealed_by_key(sessions(engine), cipher)) == {"k2", "k1", "(not configured)"}
        report = await keys.rotate(sessions(engine), cipher)
        assert report.unreadable == []
        assert report.webhook_secrets == 1
        counts = await keys.sealed_by_key(sessions(engine), cipher)
        assert counts["k1"] == 0  # k1 can go: it seals nothing, the webhook secret included
        assert counts["(not configured)"] == 0  # a missing caseworker is nothing sealed, not a lost key
        assert counts["k2"] == 3 + 1 + 3 + 1  # two referrals' fields, one caseworker, one secret
    finally:
        await engine.dispose()
    app = create_app(settings(database_url, redis_url).model_copy(update={"encryption_keys": K2}))
    async with running(app) as client:
        listed = (await client.get("/v1/referrals", headers=AUTH)).json()["items"]
        by_ref = {r["external_ref"]: r["id"] for r in listed}
        referral, _ = await app.state.intake.get("demo", by_ref["CW-1"])
        assert app.state.intake.caseworker(referral) == worker
        repeat = await client.post("/v1/referrals", json=body("CW-1") | {"caseworker": worker}, headers=AUTH)
        assert repeat.status_code == 200, repeat.text  # its digest was re-keyed with the caseworker in it
