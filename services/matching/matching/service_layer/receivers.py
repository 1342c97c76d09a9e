"""Receiver identities: who a proposal goes to, as every service identifies it.

Matching issues one receiver id per (organisation, service, receiving contact) when a
directory write brings that triple in (or, for a service written before receivers
existed, when it is first proposed), in the writing transaction, and announces it with
`receiver.registered` through the outbox so that notify can issue that receiver's
credentials. An HSDS contact id is the record writer's choice: it never identifies a
receiver on its own (see adapters.orm.Receiver). Issuing itself is
adapters.receiver_repository.issue: a directory write calls it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from matching.adapters.orm import Contact, Service
from matching.adapters.receiver_repository import issue
from matching.domain.directory_record import ServiceRecord


async def of_service(s: AsyncSession, service_id: str) -> str:
    """The receiver of a service's receiving contact, issued now for a service written
    before receivers were. A matchable service has a receiving contact (else it is flagged)."""
    row = (await s.execute(select(Service.receiver_id, Service.organization_id, Service.contact_id,
                                  Service.contact_email).where(Service.id == service_id))).one()
    if row.receiver_id is not None:
        return str(row.receiver_id)
    if not row.contact_id:
        raise LookupError(f"service {service_id} has no receiving contact")
    owner = (row.organization_id, service_id, row.contact_id)
    receiver_id = (await issue(s, [owner], {owner: row.contact_email or ""}))[owner]
    svc = await s.get(Service, service_id)
    if svc is not None:
        svc.receiver_id = receiver_id
    return receiver_id


@dataclass(frozen=True)
class Reuse:
    """A contact id given in a record that another organisation's service already uses."""

    contact_id: str
    other_service_id: str
    other_organization_id: str


async def reused_contacts(s: AsyncSession, records: Sequence[ServiceRecord]) -> dict[str, list[Reuse]]:
    """Per service id in `records`: its contact ids that a service of another organisation
    holds in the directory (a service moving to another organisation included)."""
    ids = sorted({c.id for r in records for c in r.contacts})
    if not ids:
        return {}
    held: dict[str, list[tuple[str, str]]] = {}
    for i in range(0, len(ids), 500):
        rows = (await s.execute(select(Contact.id, Contact.service_id, Service.organization_id)
                                .join(Service, Service.id == Contact.service_id)
                                .where(Contact.id.in_(ids[i:i + 500])))).all()
        for contact_id, service_id, org in rows:
            held.setdefault(contact_id, []).append((service_id, org))
    out: dict[str, list[Reuse]] = {}
    for r in records:
        for c in r.contacts:
            others = [(sid, org) for sid, org in held.get(c.id, []) if org != r.organization_id]
            if others:
                sid, org = sorted(others)[0]
                out.setdefault(r.id, []).append(Reuse(c.id, sid, org))
    return out
