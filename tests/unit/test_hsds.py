"""The directory's mapping from HSDS 3.0/3.1 and the project's CSV (pure, no database)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from matching.adapters.hsds_csv import CsvHeaderError, count_csv_rows, parse_csv
from matching.adapters.hsds_export import to_hsds
from matching.adapters.hsds_json import count_records, parse_document, parse_service
from matching.domain.directory_record import ServiceRecord
from matching.domain.record_issues import Parsed, matchability_flags

DATA = Path(__file__).parents[1] / "data" / "hsds"
SEED = Path(__file__).parents[2] / "services" / "matching" / "matching" / "seed"
EXAMPLE_ID = "ac148810-d857-441c-9679-408f346de14b"


def example(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def demo() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = json.loads((SEED / "demo_directory.json").read_text())
    return docs


def one(doc: Any) -> Parsed:
    items = list(parse_document(doc))
    assert len(items) == 1
    return items[0]


def fields(p: Parsed, severity: str) -> list[str]:
    return [i.field for i in p.issues if i.severity == severity]


def a_service(**over: Any) -> dict[str, Any]:
    """A project-shaped service_full (the demo's police unit), changed by `over`."""
    doc = copy.deepcopy(next(d for d in demo() if d["id"] == "svc-ppa-polrestabes-medan"))
    doc.update(over)
    return doc


# ----------------------------------------------------------------------------- official examples


@pytest.mark.parametrize("name", ["service_full.hsds-3.0.json", "organization_full.hsds-3.0.json",
                                  "service_full.hsds-3.1-dev.json"])
def test_official_examples_are_kept_and_flagged_as_not_matchable(name: str) -> None:
    p = one(example(name))
    assert p.record is not None
    assert p.service_id == EXAMPLE_ID
    rec = p.record
    assert rec.name == "Community Counselling"
    assert rec.organization_name == "Example Organization Inc."
    assert rec.contact_email == "email@example.com"
    assert rec.languages == ("ur",)
    assert (rec.minimum_age, rec.maximum_age) == (12, 100)
    # What the matcher needs is missing: kept, flagged, each flag naming the field and why.
    reasons = " ".join(i.reason for i in p.flags)
    assert "'pmks'" in reasons
    assert "'resource_kind'" in reasons
    assert "not online" in reasons
    assert rec.pmks == ()
    assert rec.areas == ()
    assert not rec.online
    # The example's own taxonomy term is kept as given.
    assert [(a.term.taxonomy, a.term.code) for a in rec.other_attributes] == [("taxonomy", "code")]
    assert "fees_description" in rec.extra
    assert "organization" not in rec.extra


def test_organization_full_gives_its_services_the_organization() -> None:
    p = one(example("organization_full.hsds-3.0.json"))
    assert p.pointer == "/services/0"
    assert p.record is not None
    assert p.record.organization_id == "d9d5e0f5-d3ce-4f73-9a2f-4dd0ecc6c610"


def test_the_odd_31_capacity_is_refused_and_the_service_kept_without_seats() -> None:
    """HSDS 3.1's example declares 12 available of a maximum of 10 (in kilograms)."""
    p = one(example("service_full.hsds-3.1-dev.json"))
    assert p.record is not None
    refused = [i for i in p.issues if i.severity == "reject"]
    assert [(i.field, i.reason) for i in refused] == [
        ("capacities[0].available", "greater than maximum (12 > 10): capacity refused")]
    assert p.record.capacities == ()
    assert (p.record.seats_available, p.record.seats_max) == (0, 0)


def test_a_capacity_in_another_unit_is_kept_but_is_not_seats() -> None:
    doc = example("service_full.hsds-3.1-dev.json")
    doc["capacities"][0]["available"] = 8
    p = one(doc)
    assert p.record is not None
    assert len(p.record.capacities) == 1
    assert p.record.seats is None
    assert p.record.seats_available == 0
    assert "capacities[0].unit" in fields(p, "warning")


# ----------------------------------------------------------------------------- project-shaped HSDS


def test_the_demo_directory_maps_every_fact_without_an_issue() -> None:
    items = list(parse_document(demo()))
    assert [p.service_id for p in items] == ["svc-ird-daring", "svc-prse-kupang", "svc-rekreasi-kediri",
                                             "svc-ppa-polrestabes-medan"]
    assert all(p.issues == [] for p in items)
    ird, _, _, ppa = (p.record for p in items)
    assert ird is not None
    assert ppa is not None
    assert ird.online
    assert ird.areas == ()
    assert ird.policies == ("women_only",)
    assert ird.resource_kind == "peer_support"
    assert (ird.seats_available, ird.seats_max) == (3, 12)
    assert ird.contact_id == "ct-ird-daring"
    assert ppa.areas == ("12.71",)
    assert not ppa.online
    assert "crisis_capable" in ppa.policies
    assert ppa.pmks == ("anak_korban_tindak_kekerasan", "anak_memerlukan_perlindungan_khusus",
                        "korban_tindak_kekerasan", "korban_trafficking")


@pytest.mark.parametrize("doc", [*demo(), example("service_full.hsds-3.0.json"),
                                 example("service_full.hsds-3.1-dev.json")], ids=lambda d: d["id"][:20])
def test_hsds_out_imports_back_to_the_same_record(doc: dict[str, Any]) -> None:
    rec = parse_service(doc).record
    assert rec is not None
    again = parse_service(json.loads(json.dumps(to_hsds(rec)))).record
    assert again == rec
    assert again.content_hash() == rec.content_hash()


def test_the_hash_follows_the_declared_content() -> None:
    rec = parse_service(a_service()).record
    assert rec is not None
    assert parse_service(a_service()).record.content_hash() == rec.content_hash()  # type: ignore[union-attr]
    fewer_seats = a_service(capacities=[{"id": "c", "available": 3, "maximum": 20}])
    renamed = a_service(name="Unit PPA")
    for doc in (fewer_seats, renamed):
        other = parse_service(doc).record
        assert other is not None
        assert other.content_hash() != rec.content_hash()


def test_a_virtual_location_makes_the_service_online_and_an_area_unneeded() -> None:
    doc = a_service(service_areas=[], service_at_locations=[
        {"id": "sal", "location": {"id": "room", "location_type": "virtual", "url": "https://meet.example/x"}}])
    p = parse_service(doc)
    assert p.record is not None
    assert p.record.online
    assert p.record.areas == ()
    assert p.flags == []


def test_areas_come_from_kemendagri_codes_only() -> None:
    doc = a_service(service_areas=[
        {"id": "a", "extent": "12.71.05", "extent_type": "text"},
        {"id": "b", "extent": "99.01", "extent_type": "text"},
        {"id": "c", "extent": "Kota Medan"},
        {"id": "d", "extent": "{}", "extent_type": "geojson"},
    ])
    p = parse_service(doc)
    assert p.record is not None
    assert p.record.areas == ("12.71.05",)
    assert fields(p, "warning") == ["service_areas[1].extent", "service_areas[2].extent",
                                    "service_areas[3].extent_type"]
    assert "unknown province code '99'" in p.issues[0].reason


def test_unknown_project_codes_are_ignored_and_the_record_flagged_when_nothing_is_left() -> None:
    doc = a_service(attributes=[
        {"id": "x", "taxonomy_term": {"id": "t1", "taxonomy": "pmks", "code": "korban_kekerasan"}},
        {"id": "y", "taxonomy_term": {"id": "t2", "taxonomy": "PMKS", "code": "fakir_miskin"}},
        {"id": "z", "taxonomy_term": {"id": "t3", "taxonomy": "resource_kind", "code": "dukun"}},
    ])
    p = parse_service(doc)
    assert p.record is not None
    assert p.record.pmks == ("fakir_miskin",)
    assert p.record.resource_kind == ""
    assert fields(p, "warning")[:2] == ["attributes[0].taxonomy_term.code", "attributes[2].taxonomy_term.code"]
    assert next(i.reason for i in p.flags).startswith("no taxonomy term of taxonomy 'resource_kind'")


def test_a_contact_without_a_valid_email_leaves_nobody_to_send_referrals_to() -> None:
    p = parse_service(a_service(contacts=[{"id": "c1", "name": "Petugas", "email": "not-an-email"}]))
    assert p.record is not None
    assert p.record.contact_email == ""
    assert "contacts[0].email" in fields(p, "warning")
    assert fields(p, "flag") == ["contacts"]


def test_a_webhook_is_kept_on_the_contact_when_it_is_an_http_url() -> None:
    good = parse_service(a_service(contacts=[{"id": "c1", "email": "a@b.example",
                                              "webhook_url": "https://hooks.example/r"}]))
    bad = parse_service(a_service(contacts=[{"id": "c1", "email": "a@b.example", "webhook_url": "ftp://x"}]))
    assert good.record is not None
    assert good.record.contacts[0].webhook_url == "https://hooks.example/r"
    assert bad.record is not None
    assert bad.record.contacts[0].webhook_url is None
    assert fields(bad, "warning") == ["contacts[0].webhook_url"]


# ----------------------------------------------------------------------------- refused records


@pytest.mark.parametrize(("change", "field", "reason"), [
    ({"id": None}, "id", "Input should be a valid string"),
    ({"name": ""}, "name", "String should have at least 1 character"),
    ({"name": 5}, "name", "Input should be a valid string"),
    ({"minimum_age": "twelve"}, "minimum_age", "Input should be a valid integer"),
    ({"minimum_age": 12.5}, "minimum_age", "Input should be a valid integer"),
    ({"maximum_age": 200}, "maximum_age", "must be between 0 and 150"),
    ({"minimum_age": 30, "maximum_age": 20}, "maximum_age", "less than minimum_age (20 < 30)"),
    ({"languages": "id"}, "languages", "Input should be a valid list"),
    ({"status": "open"}, "status", "Input should be 'active', 'inactive', 'defunct' or 'temporarily closed'"),
    ({"capacities": [{"id": "c", "available": "many", "maximum": 3}]}, "capacities[0].available",
     "Input should be a valid integer"),
    ({"contacts": [{"id": "c", "email": ["a@b.example"]}]}, "contacts[0].email", "Input should be a valid string"),
    ({"id": "x" * 65}, "id", "String should have at most 64 characters"),
    ({"organization": None}, "organization", "missing: a service_full needs its organization object"),
    ({"organization": {"id": "o"}}, "organization.name", "Field required"),
])
def test_a_record_with_a_missing_or_wrong_field_is_refused_naming_field_and_reason(
    change: dict[str, Any], field: str, reason: str
) -> None:
    p = parse_service(a_service(**change))
    assert p.record is None
    assert p.rejected
    refused = [i for i in p.issues if i.severity == "reject"]
    assert refused, refused
    assert refused[0].field == field, refused
    assert refused[0].reason.startswith(reason), refused


def test_a_record_that_is_not_an_object_is_refused_and_the_rest_of_the_list_read() -> None:
    items = list(parse_document([a_service(), "svc-x", 7, a_service(id="svc-2")]))
    assert [p.rejected for p in items] == [False, True, True, False]
    assert [p.pointer for p in items] == ["/0", "/1", "/2", "/3"]
    assert items[1].issues[0].reason == "must be a JSON object (a service_full), not str"


@pytest.mark.parametrize(("capacity", "field", "reason"), [
    ({"available": -1, "maximum": 5}, "capacities[0].available", "negative (-1)"),
    ({"available": 1, "maximum": -5}, "capacities[0].maximum", "negative (-5)"),
    ({"available": 6, "maximum": 5}, "capacities[0].available", "greater than maximum (6 > 5)"),
    ({"available": 3}, "capacities[0].maximum", "missing: a seat capacity needs its maximum"),
])
def test_an_impossible_capacity_is_refused_and_the_service_kept_with_no_seats(
    capacity: dict[str, Any], field: str, reason: str
) -> None:
    p = parse_service(a_service(capacities=[{"id": "c", **capacity}]))
    assert p.record is not None
    assert p.record.seats_available == 0
    assert p.record.capacities == ()
    refused = [i for i in p.issues if i.severity == "reject"]
    assert [i.field for i in refused] == [field]
    assert refused[0].reason.startswith(reason)


def test_counting_records_for_the_progress_bar() -> None:
    assert count_records(example("organization_full.hsds-3.0.json")) == 1
    assert count_records([a_service(), example("organization_full.hsds-3.0.json"), 5]) == 3


# ----------------------------------------------------------------------------- the flat record


def test_a_flat_record_still_gets_its_contact_seats_and_online_room() -> None:
    """Code that builds ServiceRecord from the walking skeleton's flat fields keeps working."""
    rec = ServiceRecord(id="s1", organization_id="o1", organization_name="Org", name="S", resource_kind="self_help",
                        pmks=("fakir_miskin",), areas=(), contact_id="c1", contact_email="c@x.example",
                        online=True, seats_available=2, seats_max=4, active=False)
    assert rec.contacts[0].email == "c@x.example"
    assert rec.seats is not None
    assert rec.seats.maximum == 4
    assert rec.status == "inactive"
    assert any(x.location.location_type == "virtual" for x in rec.locations)
    assert matchability_flags(rec) == []
    assert parse_service(to_hsds(rec)).record == rec


# ----------------------------------------------------------------------------- CSV


EXAMPLE_CSV = (SEED / "example_directory.csv").read_text()
HEADER = "id,name,organization_name,pmks,resource_kind,areas,contact_email,seats_available,seats_max"


def csv_rows(*rows: str, header: str = HEADER) -> list[Parsed]:
    return list(parse_csv("\n".join([header, *rows]) + "\n"))


def test_the_example_csv_imports_without_an_issue() -> None:
    items = list(parse_csv(EXAMPLE_CSV))
    assert len(items) == count_csv_rows(EXAMPLE_CSV) == 4
    assert all(p.issues == [] for p in items), [p.issues for p in items]
    ppa, kds, online, _ = (p.record for p in items)
    assert ppa is not None
    assert kds is not None
    assert online is not None
    assert ppa.policies == ("crisis_capable", "open_24h")
    assert ppa.areas == ("12.71",)
    assert (ppa.seats_available, ppa.seats_max) == (6, 10)
    assert ppa.contact_email == "pengaduan@uptdppa-medan.example"
    assert kds.online
    assert kds.languages == ("id", "jv")
    assert kds.minimum_age == 18
    assert online.contacts[0].webhook_url == "https://himpsi-jatim.example/rujukan/webhook"
    assert [p.line for p in items] == [2, 3, 4, 5]


def test_a_semicolon_csv_from_an_indonesian_spreadsheet_reads_the_same() -> None:
    import csv
    import io

    rows = list(csv.reader(io.StringIO(EXAMPLE_CSV)))
    buf = io.StringIO()
    csv.writer(buf, delimiter=";").writerows(rows)
    semi = "\ufeff" + buf.getvalue()  # with the byte-order mark a spreadsheet writes
    assert [p.record for p in parse_csv(semi)] == [p.record for p in parse_csv(EXAMPLE_CSV)]


def test_csv_rows_are_refused_with_line_field_and_reason() -> None:
    items = csv_rows(
        "s1,Satu,Org,fakir_miskin,self_help,12.71,a@b.example,lima,10",
        ",Dua,Org,fakir_miskin,self_help,12.71,a@b.example,1,10",
        "s3,Tiga,Org,fakir_miskin,self_help,12.71,a@b.example,12,10",
        "s4,Empat,Org,fakir_miskin,self_help,12.71,a@b.example,,10",
        "s5,Lima,Org,,,,,1,1",
    )
    assert [p.line for p in items] == [2, 3, 4, 5, 6]
    assert items[0].rejected
    assert fields(items[0], "reject") == ["seats_available"]
    assert items[0].issues[0].reason == "must be a whole number, not 'lima'"
    assert items[1].rejected
    assert fields(items[1], "reject") == ["id"]
    # An impossible capacity is refused alone: the row is kept, without seats.
    assert items[2].record is not None
    assert items[2].record.seats_available == 0
    assert [(i.field, i.reason) for i in items[2].issues if i.severity == "reject"] == [
        ("seats_available", "greater than seats_max (12 > 10): capacity refused")]
    assert items[3].record is not None
    assert fields(items[3], "reject") == ["seats_available"]
    # Nothing the matcher needs: kept and flagged, never dropped.
    assert items[4].record is not None
    assert len(items[4].flags) == 4


def test_a_csv_without_a_required_column_cannot_be_read() -> None:
    with pytest.raises(CsvHeaderError, match="missing column"):
        list(parse_csv("id,nama\ns1,Satu\n"))


def test_csv_cells_with_odd_values() -> None:
    header = HEADER + ",online,languages,status,colour"
    items = csv_rows("s1,Satu,Org,fakir_miskin;bogus,self_help,12.71|99,a@b.example,1,2,ya,ID;xx1,,red",
                     "s2,Dua,Org,fakir_miskin,self_help,12.71,a@b.example,1,2,maybe,id,,",
                     "s3,Tiga,Org,fakir_miskin,self_help,12.71,a@b.example,1,2,,id,closed,", header=header)
    s1 = items[0]
    assert s1.record is not None
    assert s1.record.online
    assert s1.record.pmks == ("fakir_miskin",)
    assert s1.record.areas == ("12.71",)
    assert s1.record.languages == ("id",)
    assert fields(s1, "warning") == ["colour", "pmks", "areas", "languages"]
    assert items[1].rejected
    assert fields(items[1], "reject") == ["online"]
    assert items[2].rejected
    assert fields(items[2], "reject") == ["status"]


def test_parts_given_twice_under_one_id_keep_the_first() -> None:
    sched = {"id": "s", "description": "Senin"}
    p = parse_service(a_service(schedules=[sched, {**sched, "description": "Selasa"}],
                                capacities=[{"id": "c", "available": 1, "maximum": 2},
                                            {"id": "c", "available": 2, "maximum": 2}]))
    assert p.record is not None
    assert [x.description for x in p.record.schedules] == ["Senin"]
    assert p.record.seats_available == 1
    assert fields(p, "warning") == ["capacities", "schedules"]


def test_a_capacity_too_large_to_be_true_is_refused() -> None:
    p = parse_service(a_service(capacities=[{"id": "c", "available": 5, "maximum": 10**12}]))
    assert p.record is not None
    assert p.record.capacities == ()
    assert fields(p, "reject") == ["capacities[0].maximum"]
