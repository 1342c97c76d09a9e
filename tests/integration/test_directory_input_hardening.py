"""Issue 8, finding 7: a NUL character (which PostgreSQL's TEXT cannot hold) or a lone
surrogate anywhere in a directory record is refused naming the field, through the real
matching app on SQLite and PostgreSQL: service_full, organization_full, CSV, and the URL."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from matching.bootstrap import create_app
from matching.settings import Settings
from tests.apps import OPERATOR_KEYS, running
from tests.integration.test_directory_api import AUTH, CSV, SEED, police_unit

JSON = {**AUTH, "Content-Type": "application/json"}


@pytest.fixture
async def client(database_url: str, redis_url: str, redis: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(database_url=database_url, redis_url=redis_url, operator_keys=OPERATOR_KEYS,
                              stream_block_ms=100, outbox_poll_interval_s=0.2))
    async with running(app) as client:
        yield client


def problem_fields(r: httpx.Response) -> dict[str, str]:
    body = r.json()
    return {e["field"]: e["reason"] for e in body.get("errors") or body.get("detail") or []}


async def test_a_nul_in_a_service_is_refused_naming_the_field(client: httpx.AsyncClient) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        (police_unit(name="Unit PPA\x00"), "name"),
        (police_unit(description="baris\x00"), "description"),
        (police_unit(x_catatan="kolom tambahan\x00"), "x_catatan"),  # kept as given: stored too
        (police_unit(x_nested={"k": ["a", "b\x00"]}), "x_nested.k[1]"),
    ]
    for doc, field in cases:
        r = await client.post("/v1/services", json=doc, headers=AUTH)
        assert r.status_code == 422, r.text
        assert "NUL" in problem_fields(r).get(field, ""), r.text
        r = await client.put(f"/v1/services/{doc['id']}", json=doc, headers=AUTH)
        assert r.status_code in (404, 422), r.text
    # A JSON \ud800 escape is no character either (json.loads lets it through).
    raw = json.dumps(police_unit(description="x")).replace('"description": "x"', '"description": "\\ud800"')
    r = await client.post("/v1/services", content=raw, headers=JSON)
    assert r.status_code == 422, r.text
    assert (await client.post("/v1/services", json=police_unit(), headers=AUTH)).status_code == 201


async def test_a_nul_in_an_import_rejects_that_record_only(client: httpx.AsyncClient) -> None:
    good, bad = police_unit(), police_unit(id="svc-nul", name="Unit \x00 PPA")
    r = await client.post("/v1/directory/import", content=json.dumps([good, bad]), headers=JSON)
    assert r.status_code == 200, r.text
    report = json.dumps(r.json())
    assert "NUL" in report, report
    assert r.json()["created"] == 1, report
    org_full = {"id": "org-x", "name": "Org\x00X", "services": [police_unit(id="svc-in-org")]}
    r = await client.post("/v1/directory/import", content=json.dumps(org_full), headers=JSON)
    assert r.status_code == 200, r.text
    assert "NUL" in json.dumps(r.json()), r.text
    assert r.json()["created"] == 0, r.text

    csv_text = (SEED / "example_directory.csv").read_text().splitlines()
    header, first = csv_text[0], csv_text[1].replace("UPTD PPA Kota Medan,", "UPTD PPA\x00 Kota Medan,", 1)
    r = await client.post("/v1/directory/import", content=f"{header}\n{first}\n".encode(), headers=CSV)
    assert r.status_code == 200, r.text
    assert "NUL" in json.dumps(r.json()), r.text
    assert r.json()["created"] == 0, r.text


async def test_a_nul_in_the_url_never_reaches_the_database(client: httpx.AsyncClient) -> None:
    for url in ("/v1/services/svc%00x", "/v1/services?search=a%00b", "/v1/services?taxonomy_term=%00",
                "/v1/decisions?referral_id=%00"):
        r = await client.get(url, headers=AUTH)
        assert r.status_code == 422, (url, r.text)
