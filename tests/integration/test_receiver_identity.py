"""Receiver identities in matching's directory (SQLite and PostgreSQL): one id issued per
(organisation, service, receiving contact), announced through the outbox; an import that
reuses another organisation's contact id is reported for that contact (JSON and CSV) and
gets an identity of its own."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from matching.adapters.hsds_csv import parse_csv
from matching.adapters.hsds_json import parse_document
from matching.adapters.orm import Outbox, Receiver, Service
from matching.bootstrap import MIGRATIONS
from matching.service_layer.directory import ImportReport, import_parsed
from shared.db import make_engine, sessions, upgrade

CSV_HEADER = ("id,name,organization_id,organization_name,resource_kind,pmks,areas,contact_email,"
              "seats_available,seats_max\n")


def service(sid: str, org: str, contact: str, email: str) -> dict[str, Any]:
    return {
        "id": sid, "name": f"Layanan {sid}", "organization": {"id": org, "name": f"Lembaga {org}"},
        "contacts": [{"id": contact, "email": email}],
        "service_areas": [{"extent": "12.71", "extent_type": "text"}],
        "capacities": [{"available": 2, "maximum": 4}],
        "attributes": [{"taxonomy_term": {"taxonomy": t, "code": c}} for t, c in (
            ("pmks", "korban_tindak_kekerasan"), ("resource_kind", "police_ppa"))],
    }


def reuse_issues(report: ImportReport) -> dict[str, list[dict[str, str]]]:
    return {r["id"]: [i for i in r.get("issues", []) if "already used by service" in i["reason"]]
            for r in report.records}


async def test_reused_contact_ids_are_reported_and_never_share_a_receiver(database_url: str) -> None:
    await upgrade(database_url, MIGRATIONS)
    engine = make_engine(database_url)
    db = sessions(engine)
    try:
        first = await import_parsed(db, parse_document([
            service("svc-medan", "org-medan", "ct-ppa-medan", "ppa@medan.example"),
            # The same organisation's second service may name the same contact: not reported.
            service("svc-medan-2", "org-medan", "ct-ppa-medan", "ppa@medan.example"),
            # Another organisation reusing it in the same import: reported.
            service("svc-copy-1", "org-copy", "ct-ppa-medan", "copy1@copy.example"),
        ]))
        assert first.created == 3
        issues = reuse_issues(first)
        assert issues["svc-medan"] == issues["svc-medan-2"] == []
        [issue] = issues["svc-copy-1"]
        assert issue["field"] == "contacts[0].id"
        assert issue["severity"] == "warning"
        assert "'ct-ppa-medan'" in issue["reason"]
        assert "'svc-medan'" in issue["reason"]

        # Reusing it later, against what the directory holds: reported too.
        later = await import_parsed(db, parse_document(
            service("svc-copy-2", "org-copy", "ct-ppa-medan", "copy2@copy.example")))
        [issue] = reuse_issues(later)["svc-copy-2"]
        assert issue["field"] == "contacts[0].id"
        assert "another organisation ('org-medan')" in issue["reason"]

        async with db() as s:
            receivers = {r.service_id: r for r in (await s.scalars(select(Receiver))).all()}
            services = {x.id: x.receiver_id for x in (await s.scalars(select(Service))).all()}
            announced = [json.loads(o.envelope)["data"] for o in (await s.scalars(
                select(Outbox).where(Outbox.event_type == "receiver.registered.v1"))).all()]
        assert len({r.id for r in receivers.values()}) == 4  # one per (organisation, service, contact)
        assert all(services[sid] == r.id for sid, r in receivers.items())
        assert sorted(a["receiver_id"] for a in announced) == sorted(r.id for r in receivers.values())
        assert {a["service_id"]: a["organization_id"] for a in announced}["svc-copy-1"] == "org-copy"
        # Each announcement carries its contact's address: where notify mails a system token.
        assert {a["service_id"]: a["contact_email"] for a in announced} == {
            "svc-medan": "ppa@medan.example", "svc-medan-2": "ppa@medan.example",
            "svc-copy-1": "copy1@copy.example", "svc-copy-2": "copy2@copy.example"}

        # Re-importing changes nothing; the same record keeps its receiver.
        again = await import_parsed(db, parse_document(
            service("svc-medan", "org-medan", "ct-ppa-medan", "ppa@medan.example")))
        assert again.unchanged == 1
        async with db() as s:
            assert await s.scalar(select(Service.receiver_id).where(Service.id == "svc-medan")) == \
                receivers["svc-medan"].id
    finally:
        await engine.dispose()


async def test_a_csv_row_moved_to_another_organisation_gets_a_new_receiver(database_url: str) -> None:
    await upgrade(database_url, MIGRATIONS)
    engine = make_engine(database_url)
    db = sessions(engine)
    try:
        row = "svc-kds,KDS Medan,{org},Lembaga {org},police_ppa,korban_tindak_kekerasan,12.71,kds@{org}.example,1,5\n"
        await import_parsed(db, parse_csv(CSV_HEADER + row.format(org="org-a")))
        async with db() as s:
            before = await s.scalar(select(Service.receiver_id).where(Service.id == "svc-kds"))
        moved = await import_parsed(db, parse_csv(CSV_HEADER + row.format(org="org-b")))
        assert moved.updated == 1
        [issue] = reuse_issues(moved)["svc-kds"]
        assert issue["field"] == "contact_email"
        assert "another organisation ('org-a')" in issue["reason"]
        async with db() as s:
            after = await s.scalar(select(Service.receiver_id).where(Service.id == "svc-kds"))
            owners = (await s.execute(select(Receiver.id, Receiver.organization_id)
                                      .where(Receiver.service_id == "svc-kds"))).all()
        assert before
        assert after
        assert before != after  # org-a's inbox is not handed to org-b
        assert dict(owners) == {before: "org-a", after: "org-b"}
    finally:
        await engine.dispose()
