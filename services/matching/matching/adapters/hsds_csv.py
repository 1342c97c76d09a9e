"""From the project's CSV (docs/directory-csv.md, kept in spreadsheets by Dinas Sosial staff)
to directory records: one service per row. Pure: no database, no I/O."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import replace

from pydantic import ValidationError

from matching.adapters.hsds_json import LANGUAGE_CODE, read_contact, region_code, unknown_code
from matching.adapters.hsds_schema import HsdsContact, validation_issues
from matching.domain.directory_record import (
    MAX_COUNT,
    PMKS,
    POLICY,
    RESOURCE_KIND,
    STATUSES,
    SUPPORT_TYPE,
    Address,
    Capacity,
    Location,
    OrganizationInfo,
    Schedule,
    ServiceAtLocation,
    ServiceRecord,
    stable_id,
)
from matching.domain.record_issues import Issue, Parsed
from shared.text import unstorable_strings

_SLUG = re.compile(r"[^a-z0-9]+")

CSV_COLUMNS = (
    "id", "name", "organization_id", "organization_name", "description", "status", "resource_kind", "pmks",
    "support_types", "policies", "areas", "online", "languages", "minimum_age", "maximum_age",
    "seats_available", "seats_max", "contact_name", "contact_email", "contact_webhook_url",
    "schedule", "location_name", "address", "city",
)
CSV_REQUIRED = ("id", "name", "organization_name")
_TRUE = {"1", "true", "yes", "y", "ya"}
_FALSE = {"", "0", "false", "no", "n", "tidak", "t"}


class CsvHeaderError(ValueError):
    """The file cannot be read as the project's CSV at all (no record can be)."""


def _split(cell: str) -> list[str]:
    return [x.strip() for x in re.split(r"[;,|]", cell) if x.strip()]


def _slug(text: str) -> str:
    return _SLUG.sub("-", text.lower()).strip("-")[:56] or "org"


def parse_csv(text: str) -> Iterator[Parsed]:
    """The project's CSV: one service per row, lists in a cell separated by ';' (or ',' or
    '|'). Comma or semicolon delimited (a spreadsheet in an Indonesian locale saves ';')."""
    text = text.removeprefix("\ufeff")
    first = text.split("\n", 1)[0]
    delimiter = ";" if first.count(";") > first.count(",") else ","
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    header = [(h or "").strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        raise CsvHeaderError(f"missing column(s) {', '.join(missing)} in the header line; the columns are: "
                             + ", ".join(CSV_COLUMNS))
    reader.fieldnames = header
    unknown = [h for h in header if h not in CSV_COLUMNS]
    for n, row in enumerate(reader):
        cells = {k: (v or "").strip() for k, v in row.items() if isinstance(k, str)}
        p = _csv_row(n, reader.line_num, cells)
        if n == 0 and unknown and p.record is not None:
            p.issues.insert(0, Issue(", ".join(unknown), "unknown column(s), ignored", "warning"))
        if None in row:
            p.issues.insert(0, Issue("(row)", "more cells than columns; the extra cells are ignored", "warning"))
        yield p


def count_csv_rows(text: str) -> int:
    return max(0, sum(1 for _ in csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))) - 1)


def _int(cells: dict[str, str], name: str, issues: list[Issue]) -> int | None:
    v = cells.get(name, "")
    if v == "":
        return None
    try:
        return int(v)
    except ValueError:
        issues.append(Issue(name, f"must be a whole number, not '{v[:20]}'", "reject"))
        return None


def _csv_row(n: int, line: int, cells: dict[str, str]) -> Parsed:
    p = Parsed(index=n, record=None, line=line, service_id=cells.get("id") or None)
    unstorable = [Issue(name, why, "reject") for name, why in unstorable_strings(cells)]
    if unstorable:
        p.issues.extend(unstorable)
        return p
    try:
        return _csv_record(p, cells)
    except ValidationError as e:
        for issue in validation_issues(e):
            p.issues.append(replace(issue, field=f"contact_{issue.field}" if issue.field in (
                "name", "email", "webhook_url") else issue.field))
        p.record = None
        return p


def _csv_record(p: Parsed, cells: dict[str, str]) -> Parsed:
    for name, limit in (("id", 64), ("organization_id", 64), ("name", 300), ("organization_name", 300)):
        if len(cells.get(name, "")) > limit:
            p.issues.append(Issue(name, f"longer than {limit} characters", "reject"))
    for name in CSV_REQUIRED:
        if not cells.get(name):
            p.issues.append(Issue(name, "missing: required", "reject"))
    status = cells.get("status", "").lower() or "active"
    if status not in STATUSES:
        p.issues.append(Issue("status", f"must be one of {', '.join(STATUSES)}", "reject"))
    online_cell = cells.get("online", "").lower()
    if online_cell not in _TRUE | _FALSE:
        p.issues.append(Issue("online", f"must be yes or no (ya/tidak), not '{online_cell[:20]}'", "reject"))
    ages = {k: _int(cells, k, p.issues) for k in ("minimum_age", "maximum_age")}
    seats = {k: _int(cells, k, p.issues) for k in ("seats_available", "seats_max")}
    for k, age in ages.items():
        if age is not None and not 0 <= age <= 150:
            p.issues.append(Issue(k, "must be between 0 and 150", "reject"))
    if None not in ages.values() and ages["minimum_age"] > ages["maximum_age"]:  # type: ignore[operator]
        p.issues.append(Issue("maximum_age", "less than minimum_age", "reject"))
    if any(i.severity == "reject" for i in p.issues):
        p.record = None
        return p

    sid = cells["id"]
    facts: dict[str, list[str]] = {}
    for taxonomy, column in ((PMKS, "pmks"), (SUPPORT_TYPE, "support_types"), (RESOURCE_KIND, "resource_kind"),
                             (POLICY, "policies")):
        facts[taxonomy] = []
        for code in _split(cells.get(column, "")):
            reason = unknown_code(taxonomy, code)
            if reason:
                p.issues.append(Issue(column, reason + "; ignored", "warning"))
            elif code not in facts[taxonomy]:
                facts[taxonomy].append(code)
    if len(facts[RESOURCE_KIND]) > 1:
        p.issues.append(Issue("resource_kind", f"one kind only; '{facts[RESOURCE_KIND][0]}' is kept", "warning"))
    areas = [a for a in (region_code(c, "areas", p.issues) for c in _split(cells.get("areas", ""))) if a]
    languages = []
    for code in _split(cells.get("languages", "").lower()):
        if LANGUAGE_CODE.match(code):
            languages.append(code)
        else:
            p.issues.append(Issue("languages", f"'{code[:20]}' is not an ISO 639 code such as 'id'; ignored",
                                  "warning"))
    if not languages:
        languages = ["id"]

    capacities: list[Capacity] = []
    avail, most = seats["seats_available"], seats["seats_max"]
    if avail is not None or most is not None:
        if avail is None or most is None:
            p.issues.append(Issue("seats_available" if avail is None else "seats_max",
                                  "missing: seats_available and seats_max go together; capacity refused", "reject"))
        elif avail < 0 or most < 0:
            p.issues.append(Issue("seats_available" if avail < 0 else "seats_max", "negative; capacity refused",
                                  "reject"))
        elif most > MAX_COUNT:
            p.issues.append(Issue("seats_max", f"more than {MAX_COUNT:,}; capacity refused", "reject"))
        elif avail > most:
            p.issues.append(Issue("seats_available", f"greater than seats_max ({avail} > {most}): capacity refused",
                                  "reject"))
        else:
            capacities.append(Capacity(id=stable_id(sid, "capacity", "seats"), available=avail, maximum=most))

    contacts = []
    if cells.get("contact_email") or cells.get("contact_name"):
        contacts.append(read_contact(
            HsdsContact(name=cells.get("contact_name") or None, email=cells.get("contact_email") or None,
                        webhook_url=cells.get("contact_webhook_url") or None),
            "contact", stable_id(sid, "contact", "0"), p.issues))
        # Its id comes from the row's id: the same row under another organisation reuses it.
        p.contact_fields[contacts[0].id] = "contact_email"
    links = []
    if cells.get("location_name") or cells.get("address"):
        addr = (Address(address_1=cells.get("address") or None, city=cells.get("city") or None, country="ID"),)
        links.append(ServiceAtLocation(id=stable_id(sid, "service_at_location", "0"), location=Location(
            id=stable_id(sid, "location", "0"), name=cells.get("location_name") or None,
            addresses=addr if cells.get("address") else ())))
    online = online_cell in _TRUE  # a virtual location is added for it (ServiceRecord.__post_init__)
    schedules = ([Schedule(id=stable_id(sid, "schedule", "0"), description=cells["schedule"])]
                 if cells.get("schedule") else [])
    org_name = cells["organization_name"]
    org_id = cells.get("organization_id") or f"org-{_slug(org_name)}"
    rec = ServiceRecord(
        id=sid, organization_id=org_id, organization_name=org_name, name=cells["name"],
        resource_kind=facts[RESOURCE_KIND][0] if facts[RESOURCE_KIND] else "", pmks=tuple(facts[PMKS]),
        areas=tuple(areas), contact_id="", contact_email="", online=online,
        support_types=tuple(facts[SUPPORT_TYPE]), languages=tuple(languages), policies=tuple(facts[POLICY]),
        minimum_age=ages["minimum_age"], maximum_age=ages["maximum_age"], description=cells.get("description", ""),
        status=status, organization=OrganizationInfo(org_id, org_name), contacts=tuple(contacts),
        schedules=tuple(schedules), locations=tuple(links), capacities=tuple(capacities),
    )
    return p.accept(rec)
