"""Notify's tables: one delivery per receiver, decision and kind of message (unique), so a
redelivered decision never mails anyone twice; the receivers' inbox (the proposals sent
to each receiver, and their responses); and how receivers sign in: single-use codes in
proposal mails, the sessions they start, and the tokens operators issue for systems.

A receiver is the identity matching issued (`receiver_id`), never an HSDS contact id."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from notify.domain.states import DeliveryState, ProposalStatus
from shared.db import AuditEntryMixin, OutboxMixin, ProcessedEventMixin, UTCDateTime, new_metadata
from shared.events import utcnow
from shared.tracing import current_traceparent


class Base(DeclarativeBase):
    metadata = new_metadata()


class Delivery(Base):
    __tablename__ = "delivery"
    __table_args__ = (
        UniqueConstraint("decision_id", "receiver_id", "kind", name="uq_delivery_decision_receiver_kind"),
        Index("ix_delivery_state_next", "state", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    referral_id: Mapped[str] = mapped_column(String(32), index=True)
    decision_id: Mapped[str] = mapped_column(String(32))
    receiver_id: Mapped[str] = mapped_column(String(64))
    # proposal, or a notice that closes it: hold_expired, cancelled, response_refused; or
    # system_token, the mail of an operator's token for a system, which belongs to no
    # referral (its referral_id is empty and its decision_id is the token's id).
    kind: Mapped[str] = mapped_column(String(20), default="proposal", server_default="proposal")
    email: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text)
    urgent: Mapped[bool] = mapped_column(default=False)
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.pending)  # a DeliveryState
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The trace of what queued it (a W3C traceparent, ids only: the handling of the event or
    # the request), taken when the row is written; its mail and its outcome continue it.
    traceparent: Mapped[str | None] = mapped_column(String(64), nullable=True, default=current_traceparent)


class ChannelDelivery(Base):
    """A message on a receiver's other channel (its webhook, SMS, WhatsApp), or an alert to
    the operators' webhook: one per decision, receiver, kind and channel (unique), with its
    attempts recorded like a mail's. Its text is built when it is sent (the sign-in link is
    never stored); `address` is the URL or phone number it goes to (for the operators'
    webhook, empty: the setting's URL when it is sent)."""

    __tablename__ = "channel_delivery"
    __table_args__ = (
        UniqueConstraint("decision_id", "receiver_id", "kind", "channel",
                         name="uq_channel_delivery_decision_receiver_kind_channel"),
        Index("ix_channel_delivery_state_next", "state", "next_attempt_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    referral_id: Mapped[str] = mapped_column(String(32), index=True)
    decision_id: Mapped[str] = mapped_column(String(32))
    receiver_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(20))  # proposal, operator_alert
    channel: Mapped[str] = mapped_column(String(16))  # webhook, sms, whatsapp
    address: Mapped[str] = mapped_column(String(2000), default="")
    urgent: Mapped[bool] = mapped_column(default=False)
    # What the message says besides its link: ids and codes only (JSON), never personal data.
    payload: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.pending)  # a DeliveryState
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Proposal(Base):
    """A proposal in a receiver's inbox: what was sent to that receiver (no personal data of
    the person referred), and where it stands from the receiver's side."""

    __tablename__ = "proposal"
    __table_args__ = (Index("ix_proposal_receiver_created", "receiver_id", "created_at"),)

    decision_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    receiver_id: Mapped[str] = mapped_column(String(64), primary_key=True)
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
    status: Mapped[str] = mapped_column(String(20), default=ProposalStatus.proposed)  # a ProposalStatus
    # Why it was closed from elsewhere (a cancel reason, a refusal), as a code.
    status_reason: Mapped[str | None] = mapped_column(String(40), nullable=True)
    # When its referral was submitted (None from an older matching): the time to notification.
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReceiverResponse(Base):
    """Each response a receiver gave, with the credential (session or token) it came with."""

    __tablename__ = "response"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the event's id
    decision_id: Mapped[str] = mapped_column(String(32), index=True)
    receiver_id: Mapped[str] = mapped_column(String(64))
    referral_id: Mapped[str] = mapped_column(String(32))
    response: Mapped[str] = mapped_column(String(20))
    reason_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    outcome_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    credential_id: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Receiver(Base):
    """A receiver matching issued (from `receiver.registered`, or a proposal sent to it):
    notify issues credentials only to receivers it knows."""

    __tablename__ = "receiver"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    service_id: Mapped[str] = mapped_column(String(64))
    organization_id: Mapped[str] = mapped_column(String(64), default="")
    contact_id: Mapped[str] = mapped_column(String(64), default="")  # the HSDS id, informational
    # The receiving contact's professional address (from its registration, refreshed by each
    # proposal): where a system token is mailed, so that only the receiver holds it.
    email: Mapped[str] = mapped_column(String(320), default="", server_default="")
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SigninCode(Base):
    """The single-use code of one proposal mail's link: only its SHA-256 is kept. Following
    the link consumes it (`used_at`) and opens that proposal in a session."""

    __tablename__ = "signin_code"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    code_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    receiver_id: Mapped[str] = mapped_column(String(32))
    decision_id: Mapped[str] = mapped_column(String(32))
    delivery_id: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When a new link was asked for with this one (once per code).
    renewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ReceiverSession(Base):
    """A receiver's session in a browser, started from a mail's link: its cookie's SHA-256
    is kept. It opens only the proposals it was signed in for (SessionProposal)."""

    __tablename__ = "receiver_session"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    session_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    receiver_id: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SessionProposal(Base):
    __tablename__ = "session_proposal"
    session_id: Mapped[str] = mapped_column(ForeignKey("receiver_session.id", ondelete="CASCADE"),
                                            primary_key=True)
    decision_id: Mapped[str] = mapped_column(String(32), primary_key=True)


class ReceiverToken(Base):
    """A token an operator issued for a provider's own system: the receiver's whole inbox,
    until it expires or is revoked. It is never shown to the operator: it is minted when its
    mail to the receiver's address goes out, and only its SHA-256 is kept (None until then,
    or again when that mail was not sent: the token opens nothing)."""

    __tablename__ = "receiver_token"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    receiver_id: Mapped[str] = mapped_column(String(32), index=True)
    token_sha256: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    issued_by: Mapped[str] = mapped_column(String(120))  # the operator
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Outbox(OutboxMixin, Base):
    pass


class ProcessedEvent(ProcessedEventMixin, Base):
    pass


class AuditEntry(AuditEntryMixin, Base):
    pass
