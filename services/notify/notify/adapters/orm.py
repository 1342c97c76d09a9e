"""Notify's tables: one delivery per recipient, decision and kind of message (unique), so a
redelivered decision never mails anyone twice; the recipients' inbox (the proposals sent
to each contact, and their responses) and the tokens recipients authenticate with."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import AuditEntryMixin, OutboxMixin, ProcessedEventMixin, UTCDateTime, new_metadata
from shared.events import utcnow


class Base(DeclarativeBase):
    metadata = new_metadata()


class Delivery(Base):
    __tablename__ = "delivery"
    __table_args__ = (
        UniqueConstraint("decision_id", "recipient_contact_id", "kind", name="uq_delivery_decision_recipient_kind"),
        Index("ix_delivery_state_next", "state", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    referral_id: Mapped[str] = mapped_column(String(32), index=True)
    decision_id: Mapped[str] = mapped_column(String(32))
    recipient_contact_id: Mapped[str] = mapped_column(String(64))
    # proposal, or a notice that closes it: hold_expired, cancelled, response_refused
    kind: Mapped[str] = mapped_column(String(20), default="proposal", server_default="proposal")
    email: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    urgent: Mapped[bool] = mapped_column(default=False)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending, sent, failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Proposal(Base):
    """A proposal in a recipient's inbox: what was sent to that contact (no personal data of
    the person referred), and where it stands from the recipient's side."""

    __tablename__ = "proposal"
    __table_args__ = (Index("ix_proposal_contact_created", "contact_id", "created_at"),)

    decision_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    contact_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    referral_id: Mapped[str] = mapped_column(String(32), index=True)
    service_id: Mapped[str] = mapped_column(String(64))
    service_name: Mapped[str] = mapped_column(String(300))
    organization_name: Mapped[str] = mapped_column(String(300))
    pmks_category: Mapped[str] = mapped_column(String(64))
    region_code: Mapped[str] = mapped_column(String(16))
    urgency: Mapped[str] = mapped_column(String(16))
    risk_flags: Mapped[list[str]] = mapped_column(JSON, default=list)
    reasons_id: Mapped[list[str]] = mapped_column(JSON, default=list)
    reasons_en: Mapped[list[str]] = mapped_column(JSON, default=list)
    hold_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # proposed, accepted, in_progress, completed, declined, expired, cancelled, withdrawn
    status: Mapped[str] = mapped_column(String(20), default="proposed")
    # Why it was closed from elsewhere (a cancel reason, a refusal), as a code.
    status_reason: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Response(Base):
    """Each response a recipient gave, with the token it came with (audit)."""

    __tablename__ = "response"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the event's id
    decision_id: Mapped[str] = mapped_column(String(32), index=True)
    contact_id: Mapped[str] = mapped_column(String(64))
    referral_id: Mapped[str] = mapped_column(String(32))
    response: Mapped[str] = mapped_column(String(20))
    reason_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    outcome_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    token_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RecipientToken(Base):
    """A recipient's credential for its inbox: only its SHA-256 is kept. Issued by an
    operator (for a provider's own system) or with each proposal mail (a personal link)."""

    __tablename__ = "recipient_token"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    contact_id: Mapped[str] = mapped_column(String(64), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    source: Mapped[str] = mapped_column(String(16))  # operator, mail
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Outbox(OutboxMixin, Base):
    pass


class ProcessedEvent(ProcessedEventMixin, Base):
    pass


class AuditEntry(AuditEntryMixin, Base):
    pass
