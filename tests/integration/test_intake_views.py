"""Intake's routes answer typed read models (service_layer/views.py) and never see the ORM:
the JSON an agency reads is byte for byte what the hand-built dicts answered before, and
every route documents its answer and its errors in the OpenAPI."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

from intake.adapters.orm import Referral, TimelineEntry
from intake.bootstrap import create_app
from shared.db import make_engine, sessions
from shared.streams.topology import publish
from tests.apps import eventually, running
from tests.integration.test_intake import AUTH, body, matched, settings

ENTRYPOINTS = Path(__file__).parents[2] / "services/intake/intake/entrypoints"


def before(r: Referral, timeline: list[TimelineEntry] | None = None) -> dict[str, Any]:
    """The view as the routes built it by hand before the read models (the contract)."""
    view: dict[str, Any] = {
        "id": r.id, "external_ref": r.external_ref, "status": r.status,
        "pmks_category": r.pmks_category, "urgency": r.urgency, "needs": r.needs, "risk_flags": r.risk_flags,
        "region_code": r.region_code, "created_at": r.created_at.isoformat(),
        "updated_at": r.updated_at.isoformat(), "match": r.matched_service,
    }
    if timeline is not None:
        view["timeline"] = [
            {"at": t.at.isoformat(), "kind": t.kind, "status": t.status, "actor": t.actor,
             "reason": {"id": t.reason_id, "en": t.reason_en}}
            for t in timeline
        ]
        view["handover"] = r.handover  # added with issue 11: null until accepted
    return view


async def stored(database_url: str, rid: str) -> tuple[Referral, list[TimelineEntry]]:
    engine = make_engine(database_url)
    try:
        async with sessions(engine)() as s:
            referral = await s.get(Referral, rid)
            assert referral is not None
            timeline = list((await s.scalars(select(TimelineEntry).where(TimelineEntry.referral_id == rid)
                                             .order_by(TimelineEntry.at, TimelineEntry.id))).all())
        return referral, timeline
    finally:
        await engine.dispose()


async def test_the_json_is_what_the_hand_built_views_answered(database_url: str, redis_url: str, redis: Any) -> None:
    async with running(create_app(settings(database_url, redis_url))) as client:
        submitted = await client.post("/v1/referrals", json=body("PPA-VIEW-1"), headers=AUTH)
        assert submitted.status_code == 202, submitted.text
        rid = submitted.json()["id"]
        repeat = await client.post("/v1/referrals", json=body("PPA-VIEW-1"), headers=AUTH)
        assert repeat.status_code == 200, repeat.text
        await publish(redis, [matched(rid)])

        async def proposed() -> dict[str, Any] | None:
            view = (await client.get(f"/v1/referrals/{rid}", headers=AUTH)).json()
            return view if view["status"] == "proposed" else None

        await eventually(proposed)
        got = await client.get(f"/v1/referrals/{rid}", headers=AUTH)
        listed = await client.get("/v1/referrals", headers=AUTH)
        referral, timeline = await stored(database_url, rid)
        cancelled = await client.post(f"/v1/referrals/{rid}/cancel", json={"reason_code": "duplicate"},
                                      headers=AUTH)
        after_cancel = await stored(database_url, rid)

    # Same keys in the same order, same values, same timestamp form (+00:00, not Z).
    assert list(got.json()) == list(before(referral, timeline))
    assert got.json() == before(referral, timeline)
    assert list(got.json()["match"]) == list(referral.matched_service or {})
    assert got.json()["created_at"].endswith("+00:00")
    assert [e["kind"] for e in got.json()["timeline"]] == ["submitted", "proposed"]
    assert listed.json() == {"items": [before(referral)], "limit": 50, "offset": 0}
    assert submitted.json().keys() == before(referral).keys()
    assert repeat.json()["id"] == rid
    assert "timeline" not in repeat.json()
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json() == before(*after_cancel)


async def test_errors_keep_their_problem_shape(database_url: str, redis_url: str) -> None:
    async with running(create_app(settings(database_url, redis_url))) as client:
        missing = await client.get("/v1/referrals/01NOSUCHREFERRAL000000000", headers=AUTH)
        first = await client.post("/v1/referrals", json=body("PPA-VIEW-2"), headers=AUTH)
        conflict = await client.post("/v1/referrals", json=body("PPA-VIEW-2", narrative="lain"), headers=AUTH)
        rid = first.json()["id"]
        cancel_missing = await client.post("/v1/referrals/01NOSUCHREFERRAL000000000/cancel",
                                           json={"reason_code": "duplicate"}, headers=AUTH)
        no_key = await client.get("/v1/referrals", headers={"Authorization": "Bearer rja_not-a-key"})
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["detail"] == "no such referral for this agency"
    assert conflict.status_code == 409
    assert conflict.json()["errors"] == [{
        "field": "external_ref", "reason": "this external_ref was already used for a referral with different content",
        "referral_id": rid}]
    assert cancel_missing.status_code == 404
    assert no_key.status_code == 401


async def test_every_route_declares_its_answer_and_documents_its_errors(database_url: str, redis_url: str) -> None:
    async with running(create_app(settings(database_url, redis_url))) as client:
        spec = (await client.get("/openapi.json")).json()
    documented = {
        ("post", "/v1/referrals"): ("ReferralView", {409}),
        ("get", "/v1/referrals/{referral_id}"): ("ReferralWithTimeline", {404}),
        ("get", "/v1/referrals"): ("ReferralPage", set()),
        ("post", "/v1/referrals/{referral_id}/cancel"): ("ReferralWithTimeline", {404, 409}),
        ("post", "/v1/referrals/{referral_id}/rematch"): ("ReferralWithTimeline", {404, 409}),
        ("post", "/v1/agencies"): ("AgencyWithKey", {409}),
        ("get", "/v1/agencies"): ("AgencyList", set()),
        ("post", "/v1/agencies/{agency_id}/keys/rotate"): ("AgencyWithKey", {404}),
        ("post", "/v1/agencies/{agency_id}/revoke"): ("AgencyView", {404}),
    }
    for (method, path), (model, errors) in documented.items():
        responses = spec["paths"][path][method]["responses"]
        ok = next(r for code, r in responses.items() if code.startswith("2") and "content" in r)
        assert ok["content"]["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model}"}, path
        for code in errors | {401, 422}:
            problem = responses[str(code)]["content"]["application/problem+json"]
            assert problem["schema"] == {"$ref": "#/components/schemas/Problem"}, (path, code)
        for code in errors:
            example = responses[str(code)]["content"]["application/problem+json"]["example"]
            assert example["status"] == code, (path, code)
    timestamp = spec["components"]["schemas"]["ReferralView"]["properties"]["created_at"]
    assert timestamp["format"] == "date-time"


def test_routes_never_import_the_orm() -> None:
    for module in ENTRYPOINTS.glob("*.py"):
        tree = ast.parse(module.read_text())
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert "intake.adapters.orm" not in imported, module.name


async def test_a_match_stored_with_fewer_keys_is_answered_as_stored(database_url: str, redis_url: str) -> None:
    partial = {"decision_id": "D-old", "service_id": "svc-old", "recipient_receiver_ids": ["R-old"]}
    async with running(create_app(settings(database_url, redis_url))) as client:
        rid = (await client.post("/v1/referrals", json=body("PPA-VIEW-3"), headers=AUTH)).json()["id"]
        engine = make_engine(database_url)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE referral SET matched_service = :m WHERE id = :id"),
                               {"m": json.dumps(partial), "id": rid})
        await engine.dispose()
        got = await client.get(f"/v1/referrals/{rid}", headers=AUTH)
        listed = await client.get("/v1/referrals", headers=AUTH)
    assert got.status_code == 200, got.text
    assert got.json()["match"] == partial
    assert listed.json()["items"][0]["match"] == partial
