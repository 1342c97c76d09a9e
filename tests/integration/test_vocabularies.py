"""The vocabularies an agency's system reads from intake's API, against the real app."""

from __future__ import annotations

from enum import StrEnum

import pytest

from intake.bootstrap import create_app
from shared import pmks, regions
from shared.vocab import (
    REASON_LABELS,
    CancelReason,
    DeclineReason,
    Gender,
    Modality,
    Outcome,
    ReferralStatus,
    RiskFlag,
    SupportType,
    Urgency,
)
from tests.apps import running
from tests.integration.test_intake import AUTH, settings

ROUTES = ["/v1/vocabularies/pmks-categories", "/v1/vocabularies/regions", "/v1/vocabularies/codes"]


@pytest.mark.parametrize("path", ROUTES)
async def test_an_agency_key_is_required(database_url: str, redis_url: str, path: str) -> None:
    async with running(create_app(settings(database_url, redis_url))) as client:
        assert (await client.get(path)).status_code == 401
        assert (await client.get(path, headers={"Authorization": "Bearer not-a-key"})).status_code == 401
        assert (await client.get(path, headers=AUTH)).status_code == 200


async def test_vocabularies(database_url: str, redis_url: str) -> None:
    async with running(create_app(settings(database_url, redis_url))) as client:
        # The 26 PMKS categories, each named in both languages, in the regulation's order.
        r = await client.get("/v1/vocabularies/pmks-categories", headers=AUTH)
        items = r.json()["items"]
        assert len(items) == 26
        assert [c["no"] for c in items] == list(range(1, 27))
        assert all(c["name_id"] and c["name_en"] for c in items)
        assert {c["code"] for c in items} == set(pmks.categories())
        assert items[0] == {"no": 1, "code": "anak_balita_terlantar", "name_id": "Anak Balita Terlantar",
                            "name_en": "Neglected children under five"}

        # The provinces by default; the named regencies under one; a search by name.
        provinces = (await client.get("/v1/vocabularies/regions", headers=AUTH)).json()["items"]
        assert {p["code"] for p in provinces} == set(regions.PROVINCES)
        assert all(p["level"] == "province" and p["parent"] is None for p in provinces)
        children = (await client.get("/v1/vocabularies/regions", params={"parent": "12"}, headers=AUTH)).json()
        assert [(c["code"], c["name"], c["parent"]) for c in children["items"]] == [
            ("12.07", "Kabupaten Deli Serdang", "12"), ("12.71", "Kota Medan", "12")]
        found = (await client.get("/v1/vocabularies/regions", params={"q": "kupang"}, headers=AUTH)).json()
        assert [c["code"] for c in found["items"]] == ["53.01", "53.71"]
        found = (await client.get("/v1/vocabularies/regions", params={"q": "jawa"}, headers=AUTH)).json()
        assert {c["code"] for c in found["items"]} == {"32", "33", "35"}
        unknown = await client.get("/v1/vocabularies/regions", params={"parent": "99"}, headers=AUTH)
        assert unknown.status_code == 422
        assert unknown.json()["errors"][0]["field"] == "parent"

        # Every code list is exactly its enum, labelled where shared.vocab labels it.
        codes = (await client.get("/v1/vocabularies/codes", headers=AUTH)).json()
        enums: dict[str, type[StrEnum]] = {
            "support_types": SupportType, "urgencies": Urgency, "risk_flags": RiskFlag, "genders": Gender,
            "modalities": Modality, "decline_reasons": DeclineReason, "outcome_codes": Outcome,
            "cancel_reasons": CancelReason, "referral_statuses": ReferralStatus}
        assert set(codes) == set(enums)
        for key, values in enums.items():
            assert [c["code"] for c in codes[key]] == [v.value for v in values], key
        for key in ("decline_reasons", "outcome_codes", "cancel_reasons"):
            for c in codes[key]:
                assert (c["label_id"], c["label_en"]) == REASON_LABELS[c["code"]]
        assert {c["code"]: c["label_id"] for c in codes["support_types"]}["instrumental"] == "bantuan praktis"
