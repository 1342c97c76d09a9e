"""Receiver identities issued in the writing transaction: one receiver id per
(organisation, service, receiving contact), each new one announced with
`receiver.registered` through the outbox (see service_layer.receivers for when)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from matching.adapters.orm import Outbox, Receiver
from shared.events import Envelope, ReceiverRegistered, new_id, utcnow
from shared.outbox import outbox_row

SOURCE = "rujukan/matching"

# (organization_id, service_id, contact_id)
Owner = tuple[str, str, str]


async def issue(s: AsyncSession, owners: Iterable[Owner],
                emails: Mapping[Owner, str] | None = None) -> dict[Owner, str]:
    """The receiver id of each owner, issuing (and announcing, with the contact's address
    from `emails`) those not issued yet, inside the caller's transaction."""
    wanted = {o for o in owners if o[2]}
    if not wanted:
        return {}
    service_ids = sorted({o[1] for o in wanted})
    found: dict[Owner, str] = {}
    for i in range(0, len(service_ids), 500):
        issued = (await s.execute(select(Receiver.organization_id, Receiver.service_id, Receiver.contact_id,
                                         Receiver.id).where(Receiver.service_id.in_(service_ids[i:i + 500])))).all()
        found.update({(r[0], r[1], r[2]): r[3] for r in issued if (r[0], r[1], r[2]) in wanted})
    rows: list[dict[str, object]] = []
    events: list[dict[str, str]] = []
    for org, service, contact in sorted(wanted - found.keys()):
        receiver_id = new_id()
        rows.append({"id": receiver_id, "organization_id": org, "service_id": service, "contact_id": contact,
                     "created_at": utcnow()})
        found[(org, service, contact)] = receiver_id
        events.append(outbox_row(Envelope.wrap(ReceiverRegistered(
            receiver_id=receiver_id, organization_id=org, service_id=service, contact_id=contact,
            contact_email=(emails or {}).get((org, service, contact), ""),
        ), source=SOURCE, subject=receiver_id)))
    if rows:  # plain INSERTs: an import issues thousands at once
        await s.execute(insert(Receiver), rows)
        await s.execute(insert(Outbox), events)
    return found
