"""Intake's use cases: submit a referral, read it, and apply what other services said."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from intake.adapters.crypto import FieldCipher
from intake.adapters.orm import Agency, Outbox, ProcessedEvent, Referral, RevokedCredential, TimelineEntry
from intake.domain.model import REMATCHABLE, ReferralRequest, may_cancel, may_move
from intake.service_layer.agencies import Agencies
from intake.service_layer.webhooks import note_step_event
from shared.db import first_time
from shared.events import (
    Envelope,
    EventData,
    NotificationFailed,
    NotificationSent,
    ReceiverCredentialRevoked,
    ReferralCancelled,
    ReferralEscalated,
    ReferralMatched,
    ReferralProposalWithdrawn,
    ReferralRematchRequested,
    ReferralResponseRefused,
    ReferralStatusChanged,
    ReferralSubmitted,
    ReferralUnmatched,
    ReferralWaitlisted,
    new_id,
    utcnow,
)
from shared.outbox import OutboxRelay, add_events, outbox_row
from shared.streams.consumer import Message
from shared.vocab import ReferralStatus, age_band, reason_label

SOURCE = "rujukan/intake"


def _table(model: type) -> Table:
    table: Table = model.__table__  # type: ignore[attr-defined]
    return table


class ReferralConflict(Exception):
    """The agency reused an external_ref for a different referral."""


class NotFound(Exception):
    pass


class NotOpen(Exception):
    """The referral is closed (completed or cancelled): nothing left to cancel."""


class NotRematchable(Exception):
    """Only an unmatched or waitlisted referral is matched again (the status is the message)."""


@dataclass
class Intake:
    """The service layer's dependencies, wired by bootstrap."""

    sessions: async_sessionmaker[AsyncSession]
    cipher: FieldCipher
    relay: OutboxRelay
    agencies: Agencies

    # --- agencies -----------------------------------------------------------------------

    async def agency_for_key(self, api_key: str) -> Agency | None:
        return await self.agencies.for_key(api_key)

    async def ensure_agency(self, agency_id: str, name: str, api_key: str) -> None:
        await self.agencies.ensure(agency_id, name, api_key)

    # --- submission ---------------------------------------------------------------------

    async def submit(self, agency_id: str, req: ReferralRequest) -> tuple[Referral, bool]:
        """Record the referral and its `referral.submitted` event in one transaction.

        Returns (referral, created). The same agency sending the same external_ref again
        gets the same referral back; a different body under that number is a conflict.
        """
        body = request_bytes(req)
        # Keyed (an HMAC under the current key): the body holds personal data, and a plain
        # hash of it would let anyone who reads the table confirm a guess of that data.
        digest = self.cipher.digest(body)
        # No look-up first: a new referral is the common case, and the unique constraint on
        # (agency, external_ref) catches a repeat below, in the same round trips.
        rid = new_id()
        now = utcnow()
        c = req.client
        contact = c.contact.model_dump(mode="json")
        row: dict[str, Any] = dict(
            id=rid, agency_id=agency_id, external_ref=req.external_ref, request_sha256=digest,
            status=ReferralStatus.submitted, pmks_category=req.pmks_category, urgency=req.urgency,
            needs=list(req.needs), risk_flags=list(req.risk_flags), region_code=c.region_code, age=c.age,
            gender=c.gender, languages=c.languages, modality=c.modality,
            consent_share=c.consent.share_with_provider, consent_contact=c.consent.contact_by_provider,
            consent_recorded_at=now,
            initials_enc=self.cipher.seal(c.initials, f"{rid}:initials"),
            contact_enc=self.cipher.seal(json.dumps(contact), f"{rid}:contact"),
            narrative_enc=self.cipher.seal(req.narrative, f"{rid}:narrative"),
            caseworker_enc=None if req.caseworker is None else self.cipher.seal(
                req.caseworker.model_dump_json(), f"{rid}:caseworker"),
            created_at=now, updated_at=now,
        )
        referral = Referral(**row)  # what the caller answers from; the row is written below
        event = Envelope.wrap(ReferralSubmitted(
            referral_id=rid, agency_id=agency_id, pmks_category=req.pmks_category, needs=req.needs,
            urgency=req.urgency, risk_flags=req.risk_flags, region_code=c.region_code,
            age_band=age_band(c.age), gender=c.gender, languages=c.languages, modality=c.modality,
            consent_share=c.consent.share_with_provider,
        ), source=SOURCE, subject=rid)
        try:
            # Three plain INSERTs in one transaction, in order (the timeline refers to the
            # referral): the ORM's unit of work for them was a third of a submission's CPU
            # (see bench/README.md), and the hottest write path needs none of its tracking.
            async with self.sessions() as s, s.begin():
                await s.execute(insert(_table(Referral)), row)
                await s.execute(insert(_table(TimelineEntry)), dict(
                    referral_id=rid, event_id=event.id, at=now, kind="submitted",
                    status=ReferralStatus.submitted, actor=f"agency:{agency_id}",
                    reason_id="Rujukan diterima", reason_en="Referral received",
                ))
                await s.execute(insert(_table(Outbox)), outbox_row(event))
        except IntegrityError:
            # A repeat of an earlier submission, or two identical ones raced: return the one
            # that was recorded (or refuse a different body under the same number).
            existing = await self._by_external_ref(agency_id, req.external_ref)
            if existing is None:
                raise
            return self._same_or_conflict(existing, body), False
        self.relay.kick()
        return referral, True

    async def _by_external_ref(self, agency_id: str, external_ref: str) -> Referral | None:
        async with self.sessions() as s:
            return await s.scalar(select(Referral).where(
                Referral.agency_id == agency_id, Referral.external_ref == external_ref))

    def _same_or_conflict(self, existing: Referral, body: bytes) -> Referral:
        # Compared under every configured key (the row may be older than the current key),
        # and as a plain SHA-256 for rows written before digests were keyed.
        if not self.cipher.digest_matches(body, existing.request_sha256):
            raise ReferralConflict(existing.id)
        return existing

    # --- reading ------------------------------------------------------------------------

    async def get(self, agency_id: str, referral_id: str) -> tuple[Referral, list[TimelineEntry]]:
        """A referral and its timeline; an agency sees only its own (others: NotFound)."""
        async with self.sessions() as s:
            referral = await s.get(Referral, referral_id)
            if referral is None or referral.agency_id != agency_id:
                raise NotFound(referral_id)
            timeline = list((await s.scalars(
                select(TimelineEntry).where(TimelineEntry.referral_id == referral_id)
                .order_by(TimelineEntry.at, TimelineEntry.id))).all())
        return referral, timeline

    async def list_for_agency(self, agency_id: str, status: str | None, limit: int, offset: int) -> list[Referral]:
        q = select(Referral).where(Referral.agency_id == agency_id)
        if status:
            q = q.where(Referral.status == status)
        async with self.sessions() as s:
            return list((await s.scalars(q.order_by(Referral.id.desc()).limit(limit).offset(offset))).all())

    def client_contact(self, referral: Referral) -> dict[str, Any]:
        """Decrypted personal data, for the agency that submitted it."""
        return {
            "initials": self.cipher.open(referral.initials_enc, f"{referral.id}:initials"),
            "contact": json.loads(self.cipher.open(referral.contact_enc, f"{referral.id}:contact")),
        }

    def caseworker(self, referral: Referral) -> dict[str, Any] | None:
        """The agency's caseworker (name, phone, email), decrypted; None when none was given."""
        if referral.caseworker_enc is None:
            return None
        found: dict[str, Any] = json.loads(self.cipher.open(referral.caseworker_enc, f"{referral.id}:caseworker"))
        return found

    # --- matching again -----------------------------------------------------------------

    async def rematch(self, agency_id: str, referral_id: str) -> Referral:
        """The agency asks to match an unmatched or waitlisted referral again: a timeline step
        and `referral.rematch_requested` to matching (in the submissions' lane for its
        urgency), in one transaction."""
        now = utcnow()
        async with self.sessions() as s, s.begin():
            referral = await s.get(Referral, referral_id, with_for_update=True)
            if referral is None or referral.agency_id != agency_id:
                raise NotFound(referral_id)
            if referral.status not in REMATCHABLE:
                raise NotRematchable(referral.status)
            event = Envelope.wrap(ReferralRematchRequested(
                referral_id=referral_id, agency_id=agency_id, requested_at=now, urgency=referral.urgency,
                risk_flags=referral.risk_flags,
            ), source=SOURCE, subject=referral_id)
            referral.updated_at = now
            s.add(TimelineEntry(
                referral_id=referral_id, event_id=event.id, at=now, kind="rematch_requested", status=None,
                actor=f"agency:{agency_id}",
                reason_id="Lembaga perujuk meminta pencocokan ulang dengan layanan yang ada sekarang",
                reason_en="The referring agency asked to match again with the services there are now",
            ))
            add_events(s, Outbox, [event])
        self.relay.kick()
        return referral

    # --- cancellation -------------------------------------------------------------------

    async def cancel(self, agency_id: str, referral_id: str, reason_code: str) -> Referral:
        """Cancel an open referral of this agency: its status and timeline at once, and
        `referral.cancelled` to matching (releases the seat) and notify (tells the
        receiver), in one transaction. Cancelling a cancelled referral again changes nothing."""
        now = utcnow()
        async with self.sessions() as s, s.begin():
            referral = await s.get(Referral, referral_id, with_for_update=True)
            if referral is None or referral.agency_id != agency_id:
                raise NotFound(referral_id)
            if referral.status == ReferralStatus.cancelled:
                return referral
            if not may_cancel(referral.status):
                raise NotOpen(referral.status)
            event = Envelope.wrap(ReferralCancelled(
                referral_id=referral_id, agency_id=agency_id, reason_code=reason_code,
                urgency=referral.urgency, risk_flags=referral.risk_flags,
            ), source=SOURCE, subject=referral_id)
            label_id, label_en = reason_label(reason_code)
            referral.status, referral.updated_at = ReferralStatus.cancelled, now
            s.add(TimelineEntry(
                referral_id=referral_id, event_id=event.id, at=now, kind="cancelled",
                status=ReferralStatus.cancelled, actor=f"agency:{agency_id}",
                reason_id=f"Dibatalkan oleh lembaga perujuk: {label_id}",
                reason_en=f"Cancelled by the referring agency: {label_en}",
            ))
            add_events(s, Outbox, [event])
        self.relay.kick()
        return referral

    # --- events from matching and notify --------------------------------------------------

    async def handle(self, messages: list[Message]) -> None:
        """Apply a batch of events in one transaction; each event takes effect once."""
        async with self.sessions() as s, s.begin():
            for m in await first_time(s, ProcessedEvent, messages):
                handler = HANDLERS.get(type(m.data))
                if handler is not None:  # else an event intake has no use for
                    await handler(s, m.envelope, m.data)


async def revoke_credential(s: AsyncSession, env: Envelope, data: ReceiverCredentialRevoked) -> None:
    """The grants that credential obtained are refused from now on (sharing.py)."""
    if await s.get(RevokedCredential, data.credential_id) is None:
        s.add(RevokedCredential(credential_id=data.credential_id))


async def record_step(s: AsyncSession, env: Envelope, data: EventData) -> None:
    """Add the event's step to its referral's timeline, moving the status where allowed."""
    step = TIMELINE_STEPS[type(data)](data)
    referral = await s.get(Referral, step.referral_id, with_for_update=True)
    if referral is None:
        return  # not ours (another intake's referral, or purged)
    moved = step.status is not None and may_move(referral.status, step.status)
    if moved:
        assert step.status is not None
        referral.status = step.status
        referral.updated_at = utcnow()
        if step.matched_service is not None:
            referral.matched_service = step.matched_service
            decision = step.matched_service["decision_id"]
            referral.proposals = {**(referral.proposals or {}), decision: step.matched_service}
        if step.status == ReferralStatus.accepted:
            # The proposal accepted first is the referral's service (an escalation may have
            # proposed another since), and its contact is the agency's handover from now on.
            accepted = (referral.proposals or {}).get(step.decision_id or "")
            if accepted is not None:
                referral.matched_service = accepted
            referral.handover = step.handover
    s.add(TimelineEntry(
        referral_id=step.referral_id, event_id=env.id, at=env.time, kind=step.kind,
        status=step.status if moved else None, actor=step.actor, reason_id=step.reason_id,
        reason_en=step.reason_en,
    ))
    note_step_event(s, env.id, data)  # the step's codes for its webhooks (service_layer/webhooks.py)


def request_bytes(req: ReferralRequest) -> bytes:
    """The submission as its idempotency digest covers it (validated and normalised). Without
    a caseworker, as before there was one: a repeat of an older submission still matches."""
    return req.model_dump_json(exclude={"caseworker"} if req.caseworker is None else None).encode()


@dataclass(frozen=True, slots=True)
class TimelineStep:
    """What an event adds to its referral's timeline, and the status it moves to (if any)."""

    referral_id: str
    kind: str
    status: ReferralStatus | None
    actor: str
    reason_id: str  # in Bahasa Indonesia
    reason_en: str
    # A proposal's service, kept on the referral when it moves to proposed.
    matched_service: dict[str, Any] | None = None
    # With an acceptance: the proposal accepted, and whom the agency calls (the directory's contact).
    decision_id: str | None = None
    handover: dict[str, Any] | None = None


def proposed_step(d: ReferralMatched) -> TimelineStep:
    return TimelineStep(
        d.referral_id, "proposed", ReferralStatus.proposed, "matching",
        f"Diusulkan ke {d.service_name} ({d.organization_name}): " + "; ".join(d.reasons_id),
        f"Proposed to {d.service_name} ({d.organization_name}): " + "; ".join(d.reasons_en),
        matched_service={
            "decision_id": d.decision_id,
            "service_id": d.service_id, "service_name": d.service_name,
            "organization_name": d.organization_name, "resource_kind": d.resource_kind,
            "hold_expires_at": d.hold_expires_at.isoformat() if d.hold_expires_at else None,
            # Who may read the person's details once they accept (see sharing.py).
            "recipient_receiver_ids": [r.receiver_id for r in d.recipients],
        })


def waitlisted_step(d: ReferralWaitlisted) -> TimelineStep:
    return TimelineStep(d.referral_id, "waitlisted", ReferralStatus.waitlisted, "matching",
                        "; ".join(d.reasons_id), "; ".join(d.reasons_en))


def unmatched_step(d: ReferralUnmatched) -> TimelineStep:
    return TimelineStep(d.referral_id, "unmatched", ReferralStatus.unmatched, "matching",
                        "; ".join(d.reasons_id), "; ".join(d.reasons_en))


def refused_step(d: ReferralResponseRefused) -> TimelineStep:
    why_id, why_en = reason_label(d.reason_code)
    return TimelineStep(d.referral_id, "response_refused", None, f"receiver:{d.responder_receiver_id}",
                        f"Tanggapan '{d.response}' dari penerima tidak diterapkan: {why_id}",
                        f"The receiver's '{d.response}' was not applied: {why_en}")


def notification_failed_step(d: NotificationFailed) -> TimelineStep:
    return TimelineStep(d.referral_id, "notification_failed", None, "notify",
                        f"Pemberitahuan gagal dikirim: {d.reason}", f"Notification failed: {d.reason}")


def notified_step(d: NotificationSent) -> TimelineStep:
    what_id, what_en = NOTICES.get(d.kind, ("Pemberitahuan", "Notification"))
    return TimelineStep(d.referral_id, "notified", None, "notify",
                        f"{what_id} terkirim ke penerima", f"{what_en} sent to the receiver")


# What notify sent to the receiver, by kind.
NOTICES = {
    "proposal": ("Pemberitahuan usulan rujukan", "The proposal"),
    "hold_expired": ("Pemberitahuan batas waktu habis", "The notice that the hold expired"),
    "cancelled": ("Pemberitahuan pembatalan", "The notice of cancellation"),
    "response_refused": ("Pemberitahuan tanggapan tidak diterapkan", "The notice that a response was not applied"),
    "withdrawn": ("Pemberitahuan usulan ditarik (layanan lain menerima lebih dulu)",
                  "The notice that the proposal was withdrawn (another service accepted first)"),
    "reminder": ("Pengingat sebelum batas waktu", "The reminder before the hold runs out"),
}


def status_step(d: ReferralStatusChanged) -> TimelineStep:
    """A step of the closed loop: who (the receiver, or matching for an expiry) and why."""
    svc = f"{d.service_name} ({d.organization_name})" if d.service_name else d.service_id
    if d.status == "hold_expired":
        return TimelineStep(d.referral_id, "hold_expired", None, d.actor,
                            f"{svc} tidak menanggapi dalam batas waktu; kursi dilepas dan rujukan dialihkan",
                            f"{svc} did not answer in time; the seat was released and the referral moves on")
    why_id, why_en = reason_label(d.reason_code or d.outcome_code)
    words = {
        "accepted": ("Diterima oleh", "Accepted by"),
        "declined": ("Ditolak oleh", "Declined by"),
        "in_progress": ("Layanan dimulai oleh", "Service started by"),
        "completed": ("Selesai di", "Completed at"),
    }[d.status]
    return TimelineStep(d.referral_id, d.status, ReferralStatus(d.status), d.actor,
                        f"{words[0]} {svc}" + (f": {why_id}" if why_id else ""),
                        f"{words[1]} {svc}" + (f": {why_en}" if why_en else ""),
                        decision_id=d.decision_id,
                        handover=d.handover.model_dump() if d.status == "accepted" and d.handover else None)


def escalated_step(d: ReferralEscalated) -> TimelineStep:
    """Why a crisis proposal escalated: nobody accepted it in time; who was proposed as well."""
    why_id, why_en = reason_label(d.reason_code)
    waited = round(d.minutes_waited)
    if d.service_id:
        then_id = "layanan lain yang menangani krisis juga diusulkan; yang pertama menerima mendapat rujukan"
        then_en = "another crisis-capable service was proposed as well; the first to accept takes the referral"
    else:
        then_id = "tidak ada lagi layanan lain yang menangani krisis; operator yang bertugas diberi tahu"
        then_en = "no other crisis-capable service is left; the operators on duty are alerted"
    return TimelineStep(d.referral_id, "escalated", None, "matching",
                        f"Eskalasi tingkat {d.level}: {why_id} setelah {waited} menit; {then_id}",
                        f"Escalation level {d.level}: {why_en} after {waited} minutes; {then_en}")


def withdrawn_step(d: ReferralProposalWithdrawn) -> TimelineStep:
    why_id, why_en = reason_label(d.reason_code)
    return TimelineStep(d.referral_id, "withdrawn", None, "matching",
                        f"Usulan kepada layanan lain ditarik dan kursinya dilepas: {why_id}",
                        f"The proposal to another service was withdrawn and its seat released: {why_en}")


# Which step each event adds to the timeline, by its exact type.
TIMELINE_STEPS: dict[type[EventData], Callable[[Any], TimelineStep]] = {
    ReferralMatched: proposed_step,
    ReferralWaitlisted: waitlisted_step,
    ReferralUnmatched: unmatched_step,
    ReferralStatusChanged: status_step,
    ReferralEscalated: escalated_step,
    ReferralProposalWithdrawn: withdrawn_step,
    ReferralResponseRefused: refused_step,
    NotificationSent: notified_step,
    NotificationFailed: notification_failed_step,
}


def timeline_step(data: EventData) -> TimelineStep | None:
    """The step an event adds to the timeline; None for an event that adds none."""
    step_of = TIMELINE_STEPS.get(type(data))
    return step_of(data) if step_of is not None else None


# Which handler answers each event intake reads, by its exact type.
HANDLERS: dict[type[EventData], Callable[[AsyncSession, Envelope, Any], Awaitable[None]]] = {
    ReceiverCredentialRevoked: revoke_credential,
    **{event_type: record_step for event_type in TIMELINE_STEPS},
}
