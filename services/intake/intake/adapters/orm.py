"""Intake's tables. Personal data (initials, contact, narrative) is stored only as
ciphertext (`*_enc`), each value carrying the id of the key that sealed it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import AuditEntryMixin, OutboxMixin, ProcessedEventMixin, UTCDateTime, new_metadata
from shared.events import utcnow


class Base(DeclarativeBase):
    metadata = new_metadata()


class Agency(Base):
    """A referring agency and its one API key, kept as HMAC-SHA256(AGENCY_KEY_PEPPER, key):
    the key itself is shown once, when issued. An agency whose key is not known (revoked,
    or from before keys were peppered) has `active` false and `key_hmac` "none:<id>", which
    no HMAC can equal."""

    __tablename__ = "agency"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    key_hmac: Mapped[str] = mapped_column(String(80), unique=True)
    # The key's first characters, to tell keys apart in a list (not enough to guess it).
    key_hint: Mapped[str | None] = mapped_column(String(16), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    key_issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Referral(Base):
    __tablename__ = "referral"
    __table_args__ = (
        UniqueConstraint("agency_id", "external_ref", name="uq_referral_agency_external_ref"),
        # Polling (GET /v1/referrals?updated_since=...): an agency's referrals in (updated_at, id) order.
        Index("ix_referral_agency_updated", "agency_id", "updated_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agency.id"), index=True)
    external_ref: Mapped[str] = mapped_column(String(100))
    # The submission's keyed digest, for idempotency (FieldCipher.digest: "h1:" + HMAC under a
    # key derived from ENCRYPTION_KEYS); a plain SHA-256 in rows from before digests were keyed.
    request_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), index=True)
    pmks_category: Mapped[str] = mapped_column(String(64))
    urgency: Mapped[str] = mapped_column(String(16))
    needs: Mapped[list[str]] = mapped_column(JSON)
    risk_flags: Mapped[list[str]] = mapped_column(JSON)
    region_code: Mapped[str] = mapped_column(String(16))
    age: Mapped[int] = mapped_column(Integer)
    gender: Mapped[str] = mapped_column(String(16))
    languages: Mapped[list[str]] = mapped_column(JSON)
    modality: Mapped[str] = mapped_column(String(16))
    consent_share: Mapped[bool] = mapped_column(Boolean)
    consent_contact: Mapped[bool] = mapped_column(Boolean)
    consent_recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    initials_enc: Mapped[str] = mapped_column(Text)
    contact_enc: Mapped[str] = mapped_column(Text)
    narrative_enc: Mapped[str] = mapped_column(Text)
    matched_service: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Every service proposed, by decision id: with an escalation two proposals are open at
    # once, and the one accepted first becomes `matched_service`.
    proposals: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # The agency's caseworker (name, phone, email), sealed like the person's contact.
    caseworker_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Whom the agency calls once accepted: the receiving service's professional contact from
    # the directory (matching's `handover`), kept from the acceptance on, never before.
    handover: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TimelineEntry(Base):
    """Every step of a referral: who, when, why. `event_id` makes applying an event once."""

    __tablename__ = "timeline_entry"
    __table_args__ = (Index("ix_timeline_referral_at", "referral_id", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    referral_id: Mapped[str] = mapped_column(ForeignKey("referral.id"))
    event_id: Mapped[str] = mapped_column(String(32), unique=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    kind: Mapped[str] = mapped_column(String(40))
    status: Mapped[str | None] = mapped_column(String(20), nullable=True)
    actor: Mapped[str] = mapped_column(String(120))
    reason_id: Mapped[str] = mapped_column(Text, default="")
    reason_en: Mapped[str] = mapped_column(Text, default="")


class RevokedCredential(Base):
    """A receiver's session or token that notify revoked (`receiver.credential_revoked`):
    the personal-data grants it obtained are refused from then on."""

    __tablename__ = "revoked_credential"
    credential_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AgencyStaff(Base):
    """A member of an agency's staff, known by a professional e-mail address an onboarding
    operator registered: they sign in with a single-use link mailed there (no password,
    no shared API key). An address belongs to one agency."""

    __tablename__ = "agency_staff"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agency.id"), index=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)  # lower-cased
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class StaffSigninCode(Base):
    """A sign-in link's code, kept only as its SHA-256: single use, short-lived."""

    __tablename__ = "staff_signin_code"
    code_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    staff_id: Mapped[str] = mapped_column(ForeignKey("agency_staff.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StaffSession(Base):
    """A staff member's session on the agency pages, kept only as the SHA-256 of the
    cookie's random id; it ends at `expires_at` or when signed out (`ended_at`)."""

    __tablename__ = "staff_session"
    id_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    staff_id: Mapped[str] = mapped_column(ForeignKey("agency_staff.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebhookEndpoint(Base):
    """An agency's webhook receiver. The signing secret is sealed (FieldCipher, like personal
    data): intake must sign with it, so it cannot be kept as a hash. After a rotation the old
    secret still signs, next to the new one, until `previous_secret_until`."""

    __tablename__ = "webhook_endpoint"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    agency_id: Mapped[str] = mapped_column(ForeignKey("agency.id"), index=True)
    url: Mapped[str] = mapped_column(Text)
    secret_enc: Mapped[str] = mapped_column(Text)
    previous_secret_enc: Mapped[str | None] = mapped_column(Text, nullable=True)
    previous_secret_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | failing | deleted
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebhookDelivery(Base):
    """One timeline step for one endpoint, written in the step's transaction. Its id is the
    `webhook-id` header, the same on every attempt. `payload` holds ids and codes only."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (Index("ix_webhook_delivery_due", "status", "next_attempt_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoint.id"), index=True)
    agency_id: Mapped[str] = mapped_column(String(64))
    referral_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    event_type: Mapped[str] = mapped_column(String(60))
    payload: Mapped[str] = mapped_column(Text)
    # pending | delivered | failed (gave up) | cancelled (endpoint deleted)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Retries go on until WEBHOOK_GIVE_UP_HOURS after this (the step, or an asked redelivery).
    window_started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # A worker that claimed the row holds it until then (another replica takes it after).
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebhookAttempt(Base):
    """One HTTP attempt of a delivery: the receiver's status code or the error's kind."""

    __tablename__ = "webhook_attempt"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_delivery.id"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str] = mapped_column(String(200), default="")
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)


class Outbox(OutboxMixin, Base):
    pass


class ProcessedEvent(ProcessedEventMixin, Base):
    pass


class AuditEntry(AuditEntryMixin, Base):
    pass
