"""Matching's directory admin API and import, through the real app (lifespan: migrations,
Redis streams, consumer) on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from matching.adapters.directory_repository import candidates
from matching.adapters.orm import SeatHold, Service
from matching.bootstrap import create_app
from matching.settings import Settings
from shared.events import new_id, utcnow
from tests.apps import DIRECTORY_KEY, OPERATOR_KEYS, running

DATA = Path(__file__).parents[1] / "data" / "hsds"
SEED = Path(__file__).parents[2] / "services" / "matching" / "matching" / "seed"
AUTH = {"Authorization": f"Bearer {DIRECTORY_KEY}"}
CSV = {**AUTH, "Content-Type": "text/csv"}
EXAMPLE_ID = "ac148810-d857-441c-9679-408f346de14b"


def demo() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = json.loads((SEED / "demo_directory.json").read_text())
    return docs


def police_unit(**over: Any) -> dict[str, Any]:
    doc = copy.deepcopy(next(d for d in demo() if d["id"] == "svc-ppa-polrestabes-medan"))
    doc.update(over)
    return doc


@pytest.fixture
async def app_client(database_url: str, redis_url: str, redis: Any) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    app = create_app(Settings(database_url=database_url, redis_url=redis_url, operator_keys=OPERATOR_KEYS,
                              stream_block_ms=100, outbox_poll_interval_s=0.2))
    async with running(app) as client:
        yield app, client


@pytest.fixture
async def client(app_client: tuple[Any, httpx.AsyncClient]) -> httpx.AsyncClient:
    return app_client[1]


class Kicks:
    """Records which services the directory says have room now, through the matcher's
    kick_waitlist (the real one still runs)."""

    def __init__(self, app: Any) -> None:
        self.woken: list[list[str]] = []
        matching = app.state.matching
        self._real = getattr(matching, "kick_waitlist", None)
        matching.kick_waitlist = self

    @property
    def calls(self) -> int:
        return len(self.woken)

    def __call__(self, service_ids: Any = None) -> Any:
        if service_ids:  # the waitlist worker's stop kicks with none, to wake itself
            self.woken.append(sorted(service_ids))
        return self._real(service_ids) if self._real else None


# ----------------------------------------------------------------------------- credentials


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/services"), ("POST", "/v1/services"), ("GET", "/v1/services/x"), ("PUT", "/v1/services/x"),
    ("POST", "/v1/services/x/deactivate"), ("POST", "/v1/services/x/activate"),
    ("PUT", "/v1/services/x/capacity"), ("POST", "/v1/directory/import"),
])
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_every_directory_endpoint_needs_the_admin_key(client: httpx.AsyncClient, method: str, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": "Bearer test-demo-key"}):
        r = await client.request(method, path, headers=headers, json={})
        assert r.status_code == 401, (headers, r.text)
    assert (await client.get("/health")).status_code == 200


# ----------------------------------------------------------------------------- one service


async def test_create_get_replace_a_service(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/services", json=police_unit(), headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/v1/services/svc-ppa-polrestabes-medan"
    body = r.json()
    assert body["rujukan"]["matchable"] is True
    assert body["rujukan"]["flags"] == []
    assert body["capacities"][0]["available"] == 20
    assert body["service_areas"][0]["extent"] == "12.71"
    codes = {(a["taxonomy_term"]["taxonomy"], a["taxonomy_term"]["code"]) for a in body["attributes"]}
    assert ("policy", "crisis_capable") in codes
    assert ("resource_kind", "police_ppa") in codes

    assert (await client.post("/v1/services", json=police_unit(), headers=AUTH)).status_code == 409

    got = (await client.get("/v1/services/svc-ppa-polrestabes-medan", headers=AUTH)).json()
    assert got == body

    renamed = police_unit(name="Unit PPA Polrestabes Medan (Satreskrim)")
    del renamed["id"]  # the path names the service
    r = await client.put("/v1/services/svc-ppa-polrestabes-medan", json=renamed, headers=AUTH)
    assert r.status_code == 200
    assert r.json()["name"] == "Unit PPA Polrestabes Medan (Satreskrim)"
    assert (await client.put("/v1/services/svc-nope", json=renamed, headers=AUTH)).status_code == 404
    assert (await client.get("/v1/services/svc-nope", headers=AUTH)).status_code == 404


@pytest.mark.parametrize(("doc", "field", "reason"), [
    (police_unit(minimum_age="dewasa"), "minimum_age", "Input should be a valid integer"),
    (police_unit(name=""), "name", "String should have at least 1 character"),
    (police_unit(organization=None), "organization", "missing"),
    (police_unit(capacities=[{"id": "c", "available": 25, "maximum": 20}]), "capacities[0].available",
     "greater than maximum (25 > 20)"),
    (police_unit(capacities=[{"id": "c", "available": -2, "maximum": 20}]), "capacities[0].available",
     "negative (-2)"),
])
async def test_a_bad_service_is_refused_with_422_naming_field_and_reason(
    client: httpx.AsyncClient, doc: dict[str, Any], field: str, reason: str
) -> None:
    r = await client.post("/v1/services", json=doc, headers=AUTH)
    assert r.status_code == 422, r.text
    detail = r.json()["errors"]
    assert detail[0]["field"] == field, detail
    assert detail[0]["reason"].startswith(reason), detail
    assert (await client.get(f"/v1/services/{doc['id']}", headers=AUTH)).status_code == 404


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_body_that_is_not_an_object_or_names_another_service_is_refused(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/services", json=[police_unit()], headers=AUTH)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "(body)"
    await client.post("/v1/services", json=police_unit(), headers=AUTH)
    r = await client.put("/v1/services/svc-ppa-polrestabes-medan", json=police_unit(id="svc-other"), headers=AUTH)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "id"


async def test_a_service_without_what_the_matcher_needs_is_created_flagged_and_never_a_candidate(
    app_client: tuple[Any, httpx.AsyncClient],
) -> None:
    app, client = app_client
    doc = police_unit(contacts=[], attributes=[a for a in police_unit()["attributes"]
                                               if a["taxonomy_term"]["taxonomy"] != "pmks"])
    r = await client.post("/v1/services", json=doc, headers=AUTH)
    assert r.status_code == 201, r.text
    assert r.json()["rujukan"]["matchable"] is False
    assert [f.split(":")[0] for f in r.json()["rujukan"]["flags"]] == ["attributes", "contacts"]
    # Activating does not make it matchable: the flags still say what is missing.
    r = await client.post("/v1/services/svc-ppa-polrestabes-medan/activate", headers=AUTH)
    assert r.json()["status"] == "active"
    assert r.json()["rujukan"]["matchable"] is False
    listed = (await client.get("/v1/services?matchable=false", headers=AUTH)).json()
    assert [s["id"] for s in listed["contents"]] == ["svc-ppa-polrestabes-medan"]
    async with app.state.runtime.sessions() as s:
        assert await candidates(s, "korban_tindak_kekerasan", "12.71.05") == []


async def test_deactivate_takes_a_service_out_of_matching_and_activate_brings_it_back(
    app_client: tuple[Any, httpx.AsyncClient],
) -> None:
    app, client = app_client
    kicks = Kicks(app)
    await client.post("/v1/services", json=police_unit(), headers=AUTH)
    assert kicks.woken == [["svc-ppa-polrestabes-medan"]]  # a new service with free seats

    async def candidate_ids() -> list[str]:
        async with app.state.runtime.sessions() as s:
            return [x.id for x in await candidates(s, "korban_tindak_kekerasan", "12.71.05")]

    assert await candidate_ids() == ["svc-ppa-polrestabes-medan"]
    r = await client.post("/v1/services/svc-ppa-polrestabes-medan/deactivate", headers=AUTH)
    assert r.status_code == 200
    assert r.json()["status"] == "inactive"
    assert r.json()["rujukan"]["matchable"] is False
    assert await candidate_ids() == []
    assert kicks.calls == 1
    r = await client.post("/v1/services/svc-ppa-polrestabes-medan/activate", headers=AUTH)
    assert r.json()["rujukan"]["matchable"] is True
    assert await candidate_ids() == ["svc-ppa-polrestabes-medan"]
    assert kicks.calls == 2
    assert (await client.post("/v1/services/svc-nope/deactivate", headers=AUTH)).status_code == 404


# ----------------------------------------------------------------------------- capacity


async def test_capacity_updates_count_the_seats_held_and_wake_the_waitlist(
    app_client: tuple[Any, httpx.AsyncClient],
) -> None:
    app, client = app_client
    await client.post("/v1/services", json=police_unit(capacities=[{"id": "c", "available": 3, "maximum": 12}]),
                      headers=AUTH)
    # One proposal holds a seat (as the matcher does it: a hold row and one seat less).
    async with app.state.runtime.sessions() as s, s.begin():
        s.add(SeatHold(id=new_id(), referral_id=new_id(), service_id="svc-ppa-polrestabes-medan",
                       decision_id=new_id(), state="held", expires_at=utcnow()))
        await s.execute(update(Service).where(Service.id == "svc-ppa-polrestabes-medan")
                        .values(seats_available=Service.seats_available - 1))
    kicks = Kicks(app)
    url = "/v1/services/svc-ppa-polrestabes-medan/capacity"
    r = await client.put(url, json={"available": 5, "maximum": 12}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["rujukan"]["seats_available"] == 4  # 5 declared free, 1 held
    assert r.json()["capacities"][0]["available"] == 4
    assert r.json()["capacities"][0]["maximum"] == 12
    assert kicks.calls == 1
    r = await client.put(url, json={"available": 1, "maximum": 12}, headers=AUTH)
    assert r.json()["rujukan"]["seats_available"] == 0
    assert kicks.calls == 1  # fewer seats: nobody to wake

    for body, field, reason in [
        ({"available": 13, "maximum": 12}, "available", "greater than maximum (13 > 12)"),
        ({"available": -1, "maximum": 12}, "available", "Input should be greater than or equal to 0"),
        ({"available": 1}, "maximum", "Field required"),
        ({"available": "dua", "maximum": 12}, "available", "Input should be a valid integer"),
    ]:
        r = await client.put(url, json=body, headers=AUTH)
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == field
        assert r.json()["errors"][0]["reason"].startswith(reason)
    assert (await client.put("/v1/services/svc-nope/capacity", json={"available": 1, "maximum": 2},
                             headers=AUTH)).status_code == 404


# ----------------------------------------------------------------------------- search


async def test_search_by_term_and_region_in_hsds_pages(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/directory/import", json=demo(), headers=AUTH)
    assert r.json()["created"] == 4

    async def ids(query: str) -> list[str]:
        r = await client.get(f"/v1/services?{query}", headers=AUTH)
        assert r.status_code == 200, r.text
        return [s["id"] for s in r.json()["contents"]]

    assert await ids("taxonomy_term=korban_tindak_kekerasan") == ["svc-ird-daring", "svc-ppa-polrestabes-medan"]
    assert await ids("taxonomy_term=policy:crisis_capable") == ["svc-ppa-polrestabes-medan"]
    assert await ids("taxonomy_term=pmks:crisis_capable") == []
    assert await ids("taxonomy_term=resource_kind:recreation_group") == ["svc-rekreasi-kediri"]
    assert await ids("region=12.71.05") == ["svc-ppa-polrestabes-medan"]  # its area covers the district
    assert await ids("region=35") == ["svc-rekreasi-kediri"]  # areas within the province
    assert await ids("region=53.71&taxonomy_term=fakir_miskin") == ["svc-prse-kupang"]
    assert await ids("search=sebaya") == ["svc-ird-daring", "svc-rekreasi-kediri"]

    page = (await client.get("/v1/services?per_page=3&page=2", headers=AUTH)).json()
    assert {k: v for k, v in page.items() if k != "contents"} == {
        "total_items": 4, "total_pages": 2, "page_number": 2, "size": 1, "first_page": False, "last_page": True,
        "empty": False}
    beyond = (await client.get("/v1/services?per_page=3&page=3", headers=AUTH)).json()
    assert beyond["empty"] is True
    assert beyond["contents"] == []

    for query, field in [("region=Medan", "region"), ("page=0", "page"), ("per_page=1000", "per_page")]:
        r = await client.get(f"/v1/services?{query}", headers=AUTH)
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == field, r.text


# ----------------------------------------------------------------------------- import


async def test_the_official_hsds_examples_import_flagged_and_reimport_unchanged(
    app_client: tuple[Any, httpx.AsyncClient],
) -> None:
    app, client = app_client
    docs = {p.name: json.loads(p.read_text()) for p in sorted(DATA.glob("*.json"))}
    r = await client.post("/v1/directory/import", json=docs["service_full.hsds-3.0.json"], headers=AUTH)
    assert r.status_code == 200, r.text
    assert {k: r.json()[k] for k in ("created", "updated", "unchanged", "flagged", "rejected")} == {
        "created": 1, "updated": 0, "unchanged": 0, "flagged": 1, "rejected": 0}
    record = r.json()["records"][0]
    assert record["id"] == EXAMPLE_ID
    assert record["outcome"] == "created"
    assert {i["field"] for i in record["issues"] if i["severity"] == "flag"} == {"attributes", "service_areas"}

    r = await client.post("/v1/directory/import", json=docs["organization_full.hsds-3.0.json"], headers=AUTH)
    assert r.json()["unchanged"] == 1
    assert r.json()["records"][0]["pointer"] == "/services/0"

    r = await client.post("/v1/directory/import", json=docs["service_full.hsds-3.1-dev.json"], headers=AUTH)
    assert r.json()["updated"] == 1
    assert r.json()["rejected"] == 0
    refused = [i for i in r.json()["records"][0]["issues"] if i["severity"] == "reject"]
    assert refused == [{"field": "capacities[0].available", "severity": "reject",
                        "reason": "greater than maximum (12 > 10): capacity refused"}]
    r = await client.post("/v1/directory/import", json=docs["service_full.hsds-3.1-dev.json"], headers=AUTH)
    assert r.json()["unchanged"] == 1
    assert r.json()["updated"] == 0

    got = (await client.get(f"/v1/services/{EXAMPLE_ID}", headers=AUTH)).json()
    assert got["rujukan"]["matchable"] is False
    assert got["fees_description"]  # HSDS fields kept as given
    assert got["capacities"] == []
    assert got["contacts"][0]["email"] == "email@example.com"
    async with app.state.runtime.sessions() as s:
        assert await candidates(s, "korban_tindak_kekerasan", "12.71.05") == []


async def test_a_mixed_list_reports_each_record_and_stores_the_good_ones(client: httpx.AsyncClient) -> None:
    docs = [police_unit(), "not a service", police_unit(), police_unit(id="svc-2", minimum_age="x"),
            police_unit(id="svc-3", capacities=[{"id": "c", "available": 21, "maximum": 20}])]
    r = await client.post("/v1/directory/import", json=docs, headers=AUTH)
    assert r.status_code == 200, r.text
    rep = r.json()
    assert (rep["created"], rep["rejected"], rep["flagged"]) == (2, 3, 0)
    outcomes = [(x["index"], x["id"], x["outcome"]) for x in rep["records"]]
    assert outcomes == [(0, "svc-ppa-polrestabes-medan", "created"), (1, None, "rejected"),
                        (2, "svc-ppa-polrestabes-medan", "rejected"), (3, "svc-2", "rejected"),
                        (4, "svc-3", "created")]
    assert rep["records"][2]["issues"][0] == {
        "field": "id", "severity": "reject",
        "reason": "duplicate: 'svc-ppa-polrestabes-medan' is also at record /0; this one is refused"}
    assert rep["records"][3]["issues"][0]["field"] == "minimum_age"
    svc3 = (await client.get("/v1/services/svc-3", headers=AUTH)).json()
    assert svc3["capacities"] == []
    assert svc3["rujukan"]["seats_available"] == 0


async def test_csv_import_reports_lines_and_reimport_changes_nothing(
    app_client: tuple[Any, httpx.AsyncClient],
) -> None:
    app, client = app_client
    text = (SEED / "example_directory.csv").read_text()
    kicks = Kicks(app)
    r = await client.post("/v1/directory/import", content=text.encode(), headers=CSV)
    assert r.status_code == 200, r.text
    assert (r.json()["created"], r.json()["rejected"], r.json()["flagged"]) == (4, 0, 0)
    assert [x["line"] for x in r.json()["records"]] == [2, 3, 4, 5]
    assert kicks.woken == [["svc-kds-odgj-sleman", "svc-prse-kupang-2", "svc-psikolog-daring-jatim",
                            "svc-uptd-ppa-medan"]]

    r = await client.post("/v1/directory/import", content=text.encode(), headers=CSV)
    assert (r.json()["unchanged"], r.json()["created"], r.json()["updated"]) == (4, 0, 0)
    assert kicks.calls == 1

    # A Dinas Sosial officer edits one row: that service alone is updated.
    edited = text.replace("Pertemuan bulanan", "Pertemuan dua mingguan")
    r = await client.post("/v1/directory/import", content=edited.encode(), headers=CSV)
    assert (r.json()["unchanged"], r.json()["updated"]) == (3, 1)
    assert [x["id"] for x in r.json()["records"] if x["outcome"] == "updated"] == ["svc-kds-odgj-sleman"]

    async with app.state.runtime.sessions() as s:
        found = {x.id for x in await candidates(s, "korban_tindak_kekerasan", "12.71.05")}
    assert found == {"svc-uptd-ppa-medan", "svc-psikolog-daring-jatim"}


async def test_a_capacity_change_on_import_keeps_the_seats_held(app_client: tuple[Any, httpx.AsyncClient]) -> None:
    app, client = app_client
    header = "id,name,organization_name,pmks,resource_kind,areas,contact_email,seats_available,seats_max\n"
    row = "svc-a,Kelompok A,Dinsos,fakir_miskin,self_help,12.71,a@dinsos.example,{},10\n"
    await client.post("/v1/directory/import", content=(header + row.format(2)).encode(), headers=CSV)
    async with app.state.runtime.sessions() as s, s.begin():
        for _ in range(2):
            s.add(SeatHold(id=new_id(), referral_id=new_id(), service_id="svc-a", decision_id=new_id(),
                           state="held", expires_at=utcnow()))
        await s.execute(update(Service).where(Service.id == "svc-a").values(seats_available=0))
    # The same file again: unchanged, and the seats taken by the matcher stay taken.
    r = await client.post("/v1/directory/import", content=(header + row.format(2)).encode(), headers=CSV)
    assert r.json()["unchanged"] == 1
    assert (await client.get("/v1/services/svc-a", headers=AUTH)).json()["rujukan"]["seats_available"] == 0
    r = await client.post("/v1/directory/import", content=(header + row.format(5)).encode(), headers=CSV)
    assert r.json()["updated"] == 1
    assert (await client.get("/v1/services/svc-a", headers=AUTH)).json()["rujukan"]["seats_available"] == 3


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_an_unreadable_import_is_refused_whole(client: httpx.AsyncClient) -> None:
    cases = [
        (b"id;nama\ns1;Satu\n", CSV, 422, "header"),
        (b"id,name,organization_name\ns1,Dinas \xff,Org\n", CSV, 422, "(body)"),
        (b'{"id": ', {**AUTH, "Content-Type": "application/json"}, 422, "(body)"),
        (b"<services/>", {**AUTH, "Content-Type": "application/xml"}, 415, None),
    ]
    for body, headers, status, field in cases:
        r = await client.post("/v1/directory/import", content=body, headers=headers)
        assert r.status_code == status, r.text
        if field:
            assert r.json()["errors"][0]["field"] == field
    assert (await client.get("/v1/services", headers=AUTH)).json()["total_items"] == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_demo_seed_goes_in_through_the_importer(database_url: str, redis_url: str, redis: Any) -> None:
    settings = Settings(database_url=database_url, redis_url=redis_url, operator_keys=OPERATOR_KEYS, seed_demo=True,
                        stream_block_ms=100)
    for _ in range(2):  # a restart seeds again and changes nothing
        async with running(create_app(settings)) as client:
            page = (await client.get("/v1/services", headers=AUTH)).json()
            assert [s["id"] for s in page["contents"]] == [
                "svc-ird-daring", "svc-ppa-polrestabes-medan", "svc-prse-kupang", "svc-rekreasi-kediri"]
            assert all(s["rujukan"]["matchable"] for s in page["contents"])


async def test_what_the_database_refuses_is_reported_against_its_record(
    client: httpx.AsyncClient, database_url: str
) -> None:
    """PostgreSQL cannot store a NUL character in text: refused before the database on every
    backend, naming the field; the rest of the batch is still stored."""
    docs = [police_unit(id="svc-1"), police_unit(id="svc-2", description="Unit\x00PPA"), police_unit(id="svc-3")]
    r = await client.post("/v1/directory/import", json=docs, headers=AUTH)
    assert r.status_code == 200, r.text
    assert [x["outcome"] for x in r.json()["records"]] == ["created", "rejected", "created"]
    issue = r.json()["records"][1]["issues"][0]
    assert issue["field"] == "description"
    assert "NUL" in issue["reason"]
    r = await client.post("/v1/directory/import", json=docs, headers=AUTH)
    assert r.json()["unchanged"] == 2
