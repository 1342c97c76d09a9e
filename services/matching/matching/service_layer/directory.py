"""Keeping the directory: the admin's changes to one service, each in its own transaction,
the HSDS answer for a service, search, and imports in batches.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from itertools import islice
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from matching.adapters import directory_repository
from matching.adapters.directory_repository import BATCH, Written, load, record_of, write_records
from matching.adapters.hsds_export import to_hsds
from matching.adapters.orm import Service
from matching.domain import directory_record
from matching.domain.directory_record import Capacity, ServiceRecord
from matching.domain.record_issues import Issue, Parsed
from matching.service_layer import receivers
from shared.events import utcnow

__all__ = ["AlreadyExists", "NotFound", "Written", "import_parsed"]

log = logging.getLogger("rujukan.matching.directory")


def render(svc: Service) -> dict[str, Any]:
    """HSDS service_full, and what the directory knows on top of it under `rujukan`."""
    out = to_hsds(record_of(svc), seats_available=svc.seats_available)
    out["rujukan"] = {
        "matchable": svc.active, "flags": list(svc.flags), "seats_available": svc.seats_available,
        # Who receives its proposals (an operator issues this receiver's system tokens at notify).
        "receiver_id": svc.receiver_id,
        "seats_max": svc.seats_max, "online": svc.online, "updated_at": svc.updated_at.isoformat(),
    }
    return out


class NotFound(LookupError):
    pass


class AlreadyExists(ValueError):
    pass


async def create(s: AsyncSession, rec: ServiceRecord) -> Written:
    if await s.scalar(select(Service.id).where(Service.id == rec.id)) is not None:
        raise AlreadyExists(rec.id)
    return (await write_records(s, [rec]))[0]


async def replace_record(s: AsyncSession, rec: ServiceRecord) -> Written:
    if await s.scalar(select(Service.id).where(Service.id == rec.id)) is None:
        raise NotFound(rec.id)
    return (await write_records(s, [rec]))[0]


async def _current(s: AsyncSession, service_id: str) -> ServiceRecord:
    svc = await load(s, service_id)
    if svc is None:
        raise NotFound(service_id)
    return record_of(svc)


async def set_status(s: AsyncSession, service_id: str, status: str) -> Written:
    rec = await _current(s, service_id)
    return (await write_records(s, [replace(rec, status=status)]))[0]


async def set_capacity(s: AsyncSession, service_id: str, available: int, maximum: int) -> Written:
    """Declare the seat capacity (the live count is this less the seats held now)."""
    rec = await _current(s, service_id)
    seats = rec.seats
    new = Capacity(id=seats.id if seats else directory_record.stable_id(rec.id, "capacity", "seats"),
                   available=available, maximum=maximum, unit=seats.unit if seats else None,
                   description=seats.description if seats else None, updated=utcnow().isoformat())
    caps = tuple(new if c is seats else c for c in rec.capacities) if seats else (*rec.capacities, new)
    return (await write_records(s, [replace(rec, capacities=caps)], facts_changed=False))[0]


# ------------------------------------------------------------------------------------------
# What the admin API asks, each in its own transaction
# ------------------------------------------------------------------------------------------

Sessions = async_sessionmaker[AsyncSession]


async def service_full(sessions: Sessions, service_id: str) -> dict[str, Any]:
    """The service as the admin API answers it (`render`); NotFound when there is none."""
    async with sessions() as s:
        svc = await load(s, service_id)
        if svc is None:
            raise NotFound(service_id)
        return render(svc)


@dataclass
class Found:
    total: int
    services: list[dict[str, Any]]


async def find(sessions: Sessions, *, taxonomy_term: str | None, taxonomy_term_id: str | None, region: str | None,
               organization_id: str | None, text: str | None, matchable: bool | None, page: int,
               per_page: int) -> Found:
    async with sessions() as s:
        found = await directory_repository.search(
            s, taxonomy_term=taxonomy_term, taxonomy_term_id=taxonomy_term_id, region=region,
            organization_id=organization_id, text=text, matchable=matchable, page=page, per_page=per_page)
        return Found(found.total, [render(x) for x in found.items])


async def add_service(sessions: Sessions, rec: ServiceRecord) -> Written:
    async with sessions() as s, s.begin():
        return await create(s, rec)


async def replace_service(sessions: Sessions, rec: ServiceRecord) -> Written:
    async with sessions() as s, s.begin():
        return await replace_record(s, rec)


async def change_status(sessions: Sessions, service_id: str, status: str) -> Written:
    async with sessions() as s, s.begin():
        return await set_status(s, service_id, status)


async def declare_capacity(sessions: Sessions, service_id: str, available: int, maximum: int) -> Written:
    async with sessions() as s, s.begin():
        return await set_capacity(s, service_id, available, maximum)


# ------------------------------------------------------------------------------------------
# Import
# ------------------------------------------------------------------------------------------


@dataclass
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    flagged: int = 0
    rejected: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)
    # Services with more free seats, or matchable anew: the waitlist may be served.
    woke: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"created": self.created, "updated": self.updated, "unchanged": self.unchanged,
                "flagged": self.flagged, "rejected": self.rejected, "records": self.records}


def _entry(p: Parsed, outcome: str) -> dict[str, Any]:
    d: dict[str, Any] = {"index": p.index}
    if p.line is not None:
        d["line"] = p.line
    if p.pointer:
        d["pointer"] = p.pointer
    d["id"] = p.service_id
    d["outcome"] = outcome
    if p.issues:
        d["issues"] = [i.as_dict() for i in p.issues]
    return d


def _take(items: Iterator[Parsed], n: int) -> list[Parsed]:
    return list(islice(items, n))


async def import_parsed(
    sessions: async_sessionmaker[AsyncSession], items: Iterator[Parsed], *, batch: int = BATCH,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Write parsed records in batches, each batch in its own transaction (a long import
    never holds the matcher up for long; stopped halfway, running it again finishes it:
    what was written reports unchanged). Parsing runs in a worker thread, so that a big
    import leaves the event loop (and crisis referrals) free."""
    report = ImportReport()
    seen: dict[str, str] = {}
    contacts_seen: dict[str, receivers.Reuse] = {}  # contact id -> its first (service, organisation) here
    while chunk := await asyncio.to_thread(_take, items, batch):
        ready = []
        for p in chunk:
            if p.record is not None:
                where = f"line {p.line}" if p.line is not None else f"record {p.pointer or p.index}"
                if p.record.id in seen:
                    p.reject("id", f"duplicate: '{p.record.id}' is also at {seen[p.record.id]}; this one is refused")
                else:
                    seen[p.record.id] = where
                    ready.append(p)
        await _report_reused_contacts(sessions, ready, contacts_seen)
        written, refused = await _write_batch(sessions, [p.record for p in ready if p.record is not None])
        by_id = {w.id: w for w in written}
        for p in chunk:
            if p.record is not None and p.record.id in refused:
                p.reject("(record)", refused[p.record.id])
            w = by_id.get(p.service_id or "") if p.record is not None else None
            if w is None:
                report.rejected += 1
                report.records.append(_entry(p, "rejected"))
                continue
            setattr(report, w.outcome, getattr(report, w.outcome) + 1)
            report.flagged += bool(w.flags)
            if w.woke:
                report.woke.append(w.id)
            report.records.append(_entry(p, w.outcome))
        if progress:
            progress(len(chunk))
    log.info("directory import: %d created, %d updated, %d unchanged, %d flagged, %d rejected",
             report.created, report.updated, report.unchanged, report.flagged, report.rejected)
    return report


async def _report_reused_contacts(sessions: async_sessionmaker[AsyncSession], ready: list[Parsed],
                                  contacts_seen: dict[str, receivers.Reuse]) -> None:
    """Tell the importer about each contact whose id another organisation's service already
    uses (in the directory, or earlier in this import). The record is still written: its
    receiver is its own (see service_layer.receivers), so the reuse borrows nothing; but the
    directory's keeper should know, and give the contact an id of its own."""
    records = [p.record for p in ready if p.record is not None]
    async with sessions() as s:
        reused = await receivers.reused_contacts(s, records)
    for p in ready:
        rec = p.record
        if rec is None:
            continue
        others = {x.contact_id: x for x in reused.get(rec.id, [])}
        for c in rec.contacts:
            first = contacts_seen.setdefault(c.id, receivers.Reuse(c.id, rec.id, rec.organization_id))
            if c.id not in others and first.other_organization_id != rec.organization_id:
                others[c.id] = first
        for contact_id, other in others.items():
            p.issues.append(Issue(
                p.contact_fields.get(contact_id, "contacts"),
                f"contact id '{contact_id}' is already used by service '{other.other_service_id}' of another "
                f"organisation ('{other.other_organization_id}'): here it is a receiver of its own (its own "
                "inbox and sign-in), never that one's", "warning"))


async def _write_batch(
    sessions: async_sessionmaker[AsyncSession], records: list[ServiceRecord]
) -> tuple[list[Written], dict[str, str]]:
    """The batch in one transaction; what the database refuses for one record is reported
    against that record (written one by one), never lost in a failed batch."""
    if not records:
        return [], {}
    try:
        # A concurrent import that created the same service, or a deadlock with the matcher
        # broken by PostgreSQL: the batch is read afresh and written again once.
        for attempt in (1, 2):
            try:
                async with sessions() as s, s.begin():
                    return await write_records(s, records), {}
            except DBAPIError:
                if attempt == 2:
                    raise
                log.warning("directory import: batch of %d retried after a database conflict", len(records))
    except DBAPIError:
        log.warning("directory import: batch of %d refused by the database; writing one by one", len(records))
    written, refused = [], {}
    for rec in records:
        try:
            async with sessions() as s, s.begin():
                written += await write_records(s, [rec])
        except DBAPIError as e:
            cause = str(getattr(e, "orig", None) or e).strip().splitlines()[0][:200]
            refused[rec.id] = f"the database refused it ({type(e.orig).__name__ if e.orig else 'error'}: {cause})"
    return written, refused
