"""Matching's tables: the directory (after Open Referral HSDS), decisions and seat holds.

Category and area live in their own indexed tables so that finding candidates is an index
lookup (category x the region's ancestors, plus online services), never a scan.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, false, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from shared.db import OutboxMixin, ProcessedEventMixin, UTCDateTime, new_metadata
from shared.events import utcnow


class Base(DeclarativeBase):
    metadata = new_metadata()


class Organization(Base):
    __tablename__ = "organization"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))


class Service(Base):
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
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    organization: Mapped[Organization] = relationship(lazy="joined")
    categories: Mapped[list[ServiceCategory]] = relationship(lazy="selectin", cascade="all, delete-orphan")
    areas: Mapped[list[ServiceArea]] = relationship(lazy="selectin", cascade="all, delete-orphan")


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


class ReferralCase(Base):
    """What matching knows of a referral (no personal data), for re-matching later.

    Every change to a case happens with its row locked (see service_layer.cases), so that
    a response, an expiry and a cancellation of one referral never interleave.
    """

    __tablename__ = "referral_case"
    referral_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON)
    # proposed, accepted, in_progress, completed, waitlisted, unmatched, cancelled
    state: Mapped[str] = mapped_column(String(20))
    declined_service_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    # Services whose hold expired unanswered: not proposed this referral again either.
    lapsed_service_ids: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    current_decision_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    pmks_category: Mapped[str] = mapped_column(String(64), default="", server_default="")
    urgent: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The waitlist is served urgent first, then oldest first, per category.
    __table_args__ = (Index("ix_referral_case_waitlist", "state", "pmks_category", "urgent", "created_at"),)


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


class SeatHold(Base):
    """One seat of a service, held for a referral's proposal, then confirmed (accepted) or
    released (declined, expired, cancelled, completed). A referral holds at most one seat."""

    __tablename__ = "seat_hold"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    referral_id: Mapped[str] = mapped_column(String(32), index=True)
    service_id: Mapped[str] = mapped_column(ForeignKey("service.id"))
    decision_id: Mapped[str] = mapped_column(String(32), unique=True)
    state: Mapped[str] = mapped_column(String(16))  # held, confirmed, released
    release_reason: Mapped[str | None] = mapped_column(String(20), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    __table_args__ = (
        Index("ix_seat_hold_state_expires", "state", "expires_at"),
        # The database itself refuses a second live seat for one referral.
        Index("uq_seat_hold_one_live_per_referral", "referral_id", unique=True,
              sqlite_where=text("state IN ('held', 'confirmed')"),
              postgresql_where=text("state IN ('held', 'confirmed')")),
        Index("ix_seat_hold_service_state", "service_id", "state"),
    )


class Outbox(OutboxMixin, Base):
    pass


class ProcessedEvent(ProcessedEventMixin, Base):
    pass
