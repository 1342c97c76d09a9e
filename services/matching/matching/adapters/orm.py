"""Matching's tables: the directory (after Open Referral HSDS), decisions and seat holds.

Category and area live in their own indexed tables so that finding candidates is an index
lookup (category x the region's ancestors, plus online services), never a scan.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint, false, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.db import AuditEntryMixin, OutboxMixin, ProcessedEventMixin, UTCDateTime, new_metadata
from shared.events import utcnow


class Base(DeclarativeBase):
    metadata = new_metadata()


class Organization(Base):
    __tablename__ = "organization"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    alternate_name: Mapped[str | None] = mapped_column(String(300), nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    website: Mapped[str | None] = mapped_column(String(500), nullable=True)


class Service(Base):
    """An HSDS service, with the facts the matcher reads kept in plain columns.

    `active` is what the matcher filters on: the HSDS `status` is active *and* the record has
    no flags (a flagged record lacks a fact the matcher needs: it is kept, never matched).
    `seats_available` is the live count (holds take seats from it); `seats_declared` and
    `seats_max` are the capacity last declared by the provider. `content_hash` is the hash
    of the declared record: re-importing the same content changes nothing.
    """

    __tablename__ = "service"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organization.id"))
    name: Mapped[str] = mapped_column(String(300))
    description: Mapped[str] = mapped_column(Text, default="")
    resource_kind: Mapped[str] = mapped_column(String(40))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    support_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    languages: Mapped[list[str]] = mapped_column(JSON, default=list)
    policies: Mapped[list[str]] = mapped_column(JSON, default=list)
    minimum_age: Mapped[int | None] = mapped_column(Integer, nullable=True)
    maximum_age: Mapped[int | None] = mapped_column(Integer, nullable=True)
    seats_available: Mapped[int] = mapped_column(Integer, default=0)
    seats_max: Mapped[int] = mapped_column(Integer, default=0)
    contact_id: Mapped[str] = mapped_column(String(64))
    contact_email: Mapped[str] = mapped_column(String(320))
    # The receiver identity of the receiving contact (see Receiver); None without one.
    receiver_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(32), default="active", server_default="active")
    flags: Mapped[list[str]] = mapped_column(JSON, default=list, server_default=text("'[]'"))
    seats_declared: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    content_hash: Mapped[str] = mapped_column(String(64), default="", server_default="")
    contact_webhook_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    alternate_name: Mapped[str | None] = mapped_column(String(300), nullable=True)
    url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    # HSDS fields the directory does not model, kept as imported (fees, eligibility, ...).
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)

    organization: Mapped[Organization] = relationship(lazy="joined")
    categories: Mapped[list[ServiceCategory]] = relationship(lazy="selectin", cascade="all, delete-orphan")
    areas: Mapped[list[ServiceArea]] = relationship(lazy="selectin", cascade="all, delete-orphan")
    # The HSDS detail is loaded only where it is shown (never by the matcher's candidates()).
    contacts: Mapped[list[Contact]] = relationship(lazy="raise", order_by="Contact.position")
    schedules: Mapped[list[Schedule]] = relationship(lazy="raise", order_by="Schedule.position")
    capacities: Mapped[list[ServiceCapacity]] = relationship(lazy="raise", order_by="ServiceCapacity.position")
    attributes: Mapped[list[Attribute]] = relationship(lazy="raise", order_by="Attribute.position")
    service_at_locations: Mapped[list[ServiceAtLocation]] = relationship(
        lazy="raise", order_by="ServiceAtLocation.position")

    # A decision reads the online services of the person's category: this small partial
    # index (online and matchable only) keeps that an index lookup, never a scan.
    __table_args__ = (Index("ix_service_online_matchable", "id",
                            postgresql_where=text("online AND active"),
                            sqlite_where=text("online = 1 AND active = 1")),)


class ServiceCategory(Base):
    __tablename__ = "service_category"
    service_id: Mapped[str] = mapped_column(ForeignKey("service.id", ondelete="CASCADE"), primary_key=True)
    pmks_code: Mapped[str] = mapped_column(String(64), primary_key=True)
    __table_args__ = (Index("ix_service_category_code", "pmks_code", "service_id"),)


class ServiceArea(Base):
    __tablename__ = "service_area"
    service_id: Mapped[str] = mapped_column(ForeignKey("service.id", ondelete="CASCADE"), primary_key=True)
    region_code: Mapped[str] = mapped_column(String(16), primary_key=True)
    __table_args__ = (Index("ix_service_area_code", "region_code", "service_id"),)


class Receiver(Base):
    """Who receives a service's proposals, as matching identifies it end to end (events,
    the inbox, sign-ins, grants, the timeline): an id issued here, once per (organisation,
    service, HSDS contact id).

    Issued rather than derived: an HSDS contact id is chosen by whoever writes the record,
    so another organisation's service can reuse it; a keyed hash of the triple would need
    a secret that may never change. A row issued by the server is stable, can be listed,
    and the unique constraint is what keeps two records from sharing one identity. A
    service that moves to another organisation, or changes its receiving contact, gets a
    new receiver: the old one keeps the proposals it was sent."""

    __tablename__ = "receiver"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    organization_id: Mapped[str] = mapped_column(String(64))
    service_id: Mapped[str] = mapped_column(String(64))
    contact_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("organization_id", "service_id", "contact_id",
                                       name="uq_receiver_organization_service_contact"),)


class DirectoryVersion(Base):
    """One row whose `version` moves in the same transaction as every directory write
    (adapters.directory_repository.write_records): each matching replica keeps its own in-memory
    index of the directory and compares this number, one cheap read per decision, to know
    whether the index is still the directory's. Seat counts are not part of it (read live)."""

    __tablename__ = "directory_version"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # Moved by every directory write that could serve a waiting referral (a service created,
    # edited, activated, or its capacity declared), capacity included; writers queue on this
    # row, so generations commit in their order (see DirectoryChange).
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class DirectoryChange(Base):
    """One directory write that could serve an unmatched or waitlisted referral, recorded in
    the same transaction as the write: the rematch pass runs right after the commit (in the
    process that wrote it) and marks it done; any replica's rematch worker takes one that is
    left (a crash, or an import from the command line)."""

    __tablename__ = "directory_change"
    generation: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    service_ids: Mapped[list[str]] = mapped_column(JSON)
    done: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    __table_args__ = (Index("ix_directory_change_done", "done", "generation"),)


# HSDS parts of a service. Their ids are HSDS ids, unique only within the service (the
# official examples reuse one contact id across entities), hence (service_id, id) keys;
# `position` keeps the order they were given in.


class Contact(Base):
    """Who receives referrals for the service: a facilitator or social worker."""

    __tablename__ = "contact"
    service_id: Mapped[str] = mapped_column(ForeignKey("service.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    name: Mapped[str | None] = mapped_column(String(300), nullable=True)
    title: Mapped[str | None] = mapped_column(String(300), nullable=True)
    department: Mapped[str | None] = mapped_column(String(300), nullable=True)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    webhook_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    phones: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class Schedule(Base):
    __tablename__ = "schedule"
    service_id: Mapped[str] = mapped_column(ForeignKey("service.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    freq: Mapped[str | None] = mapped_column(String(300), nullable=True)
    interval: Mapped[int | None] = mapped_column(Integer, nullable=True)
    byday: Mapped[str | None] = mapped_column(String(300), nullable=True)
    opens_at: Mapped[str | None] = mapped_column(String(300), nullable=True)
    closes_at: Mapped[str | None] = mapped_column(String(300), nullable=True)
    valid_from: Mapped[str | None] = mapped_column(String(300), nullable=True)
    valid_to: Mapped[str | None] = mapped_column(String(300), nullable=True)
    dtstart: Mapped[str | None] = mapped_column(String(300), nullable=True)
    until: Mapped[str | None] = mapped_column(String(300), nullable=True)
    wkst: Mapped[str | None] = mapped_column(String(300), nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    attending_type: Mapped[str | None] = mapped_column(Text, nullable=True)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)


class ServiceCapacity(Base):
    """HSDS 3.1 service_capacity as declared (the live seat count is on the service)."""

    __tablename__ = "service_capacity"
    service_id: Mapped[str] = mapped_column(ForeignKey("service.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    available: Mapped[int] = mapped_column(Integer)
    maximum: Mapped[int | None] = mapped_column(Integer, nullable=True)
    unit: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated: Mapped[str | None] = mapped_column(String(300), nullable=True)


class Location(Base):
    """A place (physical) or an online room (virtual); shared by the services held there."""

    __tablename__ = "location"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    location_type: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(300), nullable=True)
    alternate_name: Mapped[str | None] = mapped_column(String(300), nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    latitude: Mapped[float | None] = mapped_column(Float, nullable=True)
    longitude: Mapped[float | None] = mapped_column(Float, nullable=True)
    addresses: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class ServiceAtLocation(Base):
    __tablename__ = "service_at_location"
    service_id: Mapped[str] = mapped_column(ForeignKey("service.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    location_id: Mapped[str] = mapped_column(ForeignKey("location.id"), index=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    location: Mapped[Location] = relationship(lazy="raise")


class TaxonomyTerm(Base):
    """A term of a taxonomy. The project's facts are terms of the taxonomies pmks,
    support_type, resource_kind and policy whose code is the value."""

    __tablename__ = "taxonomy_term"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    taxonomy: Mapped[str] = mapped_column(String(300))
    code: Mapped[str] = mapped_column(String(300))
    name: Mapped[str | None] = mapped_column(String(300), nullable=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    parent_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    term_uri: Mapped[str | None] = mapped_column(String(500), nullable=True)
    __table_args__ = (Index("ix_taxonomy_term_code", "code", "taxonomy"),)


class Attribute(Base):
    __tablename__ = "attribute"
    service_id: Mapped[str] = mapped_column(ForeignKey("service.id", ondelete="CASCADE"), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    taxonomy_term_id: Mapped[str] = mapped_column(ForeignKey("taxonomy_term.id"))
    value: Mapped[str | None] = mapped_column(Text, nullable=True)
    label: Mapped[str | None] = mapped_column(String(300), nullable=True)
    term: Mapped[TaxonomyTerm] = relationship(lazy="raise")
    # Search by term: every service with a term (taxonomy_term=... in GET /v1/services).
    __table_args__ = (Index("ix_attribute_term", "taxonomy_term_id", "service_id"),)


class ReferralCase(Base):
    """What matching knows of a referral (no personal data), for re-matching later.

    Every change to a case happens with its row locked (see service_layer.cases), so that
    a response, an expiry and a cancellation of one referral never interleave.
    """

    __tablename__ = "referral_case"
    referral_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(20))  # a CaseState
    declined_service_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Services whose hold expired unanswered: not proposed this referral again either.
    lapsed_service_ids: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    current_decision_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    pmks_category: Mapped[str] = mapped_column(String(64), default="", server_default="")
    # Where the person is: capacity freed in a service is offered to those its area covers.
    region_code: Mapped[str] = mapped_column(String(16), default="", server_default="")
    urgent: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # When the referral was submitted (its event's time): carried on every proposal, for the
    # time to notification (None: a case kept before it was recorded).
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The directory generation a rematch pass last tried this case at (each change once).
    rematch_generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # A crisis proposal not accepted by this time escalates (None: nothing to escalate);
    # how many times it has escalated so far.
    escalate_after: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    escalation_level: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The waitlist is served urgent first, then oldest first, per category.
    __table_args__ = (Index("ix_referral_case_waitlist", "state", "pmks_category", "urgent", "created_at"),
                      Index("ix_referral_case_waiting_region", "state", "region_code"),
                      Index("ix_referral_case_escalate", "state", "escalate_after"))


class Decision(Base):
    """Every decision with its reasons and the candidates considered, kept for audit."""

    __tablename__ = "decision"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    referral_id: Mapped[str] = mapped_column(String(32), index=True)
    outcome: Mapped[str] = mapped_column(String(20))
    service_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reasons_id: Mapped[list[str]] = mapped_column(JSON)
    reasons_en: Mapped[list[str]] = mapped_column(JSON)
    candidates: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    # What led to it: submitted, declined, hold_expired, capacity_freed.
    trigger: Mapped[str] = mapped_column(String(20), default="submitted", server_default="submitted")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# As in the migration that made the index: one confirmed seat per referral.
_CONFIRMED_HOLD_SQL = "state = 'confirmed'"

class SeatHold(Base):
    """One seat of a service, held for a referral's proposal, then confirmed (accepted) or
    released (declined, expired, cancelled, completed, withdrawn). A referral holds one seat,
    or, while an unanswered crisis is escalated, one per open proposal until one is accepted."""

    __tablename__ = "seat_hold"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    referral_id: Mapped[str] = mapped_column(String(32), index=True)
    service_id: Mapped[str] = mapped_column(ForeignKey("service.id"))
    decision_id: Mapped[str] = mapped_column(String(32), unique=True)
    # Whom the proposal went to: only this receiver's responses move the seat.
    receiver_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    state: Mapped[str] = mapped_column(String(16))  # a HoldState
    release_reason: Mapped[str | None] = mapped_column(String(20), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    __table_args__ = (
        Index("ix_seat_hold_state_expires", "state", "expires_at"),
        # The database itself refuses a second accepted seat for one referral.
        Index("uq_seat_hold_one_confirmed_per_referral", "referral_id", unique=True,
              sqlite_where=text(_CONFIRMED_HOLD_SQL), postgresql_where=text(_CONFIRMED_HOLD_SQL)),
        Index("ix_seat_hold_service_state", "service_id", "state"),
    )


class Outbox(OutboxMixin, Base):
    pass


class ProcessedEvent(ProcessedEventMixin, Base):
    pass


class AuditEntry(AuditEntryMixin, Base):
    pass
