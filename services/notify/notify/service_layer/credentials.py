"""How a receiver signs in, and what each way opens.

- A proposal mail carries one link with a single-use sign-in code (valid `code_ttl`, kept
  only as its SHA-256). Following it consumes the code and starts a session in that
  browser (a random id in a cookie, kept as its SHA-256, expiring after `session_ttl`),
  or adds the proposal to the session of the same receiver already there. A session opens
  only the proposals it was signed in for: a forwarded mail opens one proposal, once.
- An operator issues a token for a provider's own system: the receiver's whole inbox,
  until it expires or is revoked. The operator never sees it: it is mailed to the
  receiver's professional address (the directory contact's), minted when that mail goes
  out (as a proposal mail's code is), and kept as its SHA-256. The operator learns its id,
  its expiry and where it went, masked.

Every session and token can be listed (never its secret) and revoked by id; signing out
revokes the session. A revocation is published (`receiver.credential_revoked`, the id
only) in the same transaction, so that intake refuses the personal-data grants the
credential obtained.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from notify.adapters.orm import (
    Delivery,
    Outbox,
    Proposal,
    Receiver,
    ReceiverSession,
    ReceiverToken,
    SessionProposal,
    SigninCode,
)
from notify.domain.messages import masked_address, system_token
from notify.domain.states import OPEN_PROPOSALS, DeliveryState
from shared.db import insert_new
from shared.events import Envelope, ReceiverCredentialRevoked, ReceiverRegistered, new_id, utcnow
from shared.outbox import OutboxRelay, add_events

SOURCE = "rujukan/notify"
TOKEN_PREFIX = "rjk_"  # noqa: S105 - marks a receiver's system token, not a secret
SESSION_PREFIX = "rjs_"
# A sign-in code (and a session's entry) for the receiver's whole inbox rather than one
# proposal: the link a receiver asks for from its pages ("My referrals"), mailed only to its
# registered address, as a system token is.
WHOLE_INBOX = "*"
# One such link per receiver in this long at most (asking again changes nothing).
INBOX_LINK_EVERY = timedelta(minutes=5)
# How stale `last_used_at` may get before a request writes it again (one write a minute,
# not one per request).
LAST_USED_EVERY = timedelta(minutes=1)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class Credential:
    """Who is asking, and what it may open: a session (the proposals it was signed in
    for) or an operator's token (the whole inbox)."""

    id: str
    kind: Literal["session", "token"]
    receiver_id: str
    expires_at: datetime
    proposals: frozenset[str] | None  # None: every proposal of the receiver

    def opens(self, decision_id: str) -> bool:
        return self.proposals is None or decision_id in self.proposals

    @property
    def whole_inbox(self) -> bool:
        return self.proposals is None


@dataclass(frozen=True)
class SignedIn:
    session_id: str
    # The new session's cookie value; None when the proposal joined the session already there.
    cookie: str | None
    decision_id: str
    expires_at: datetime


@dataclass(frozen=True)
class CredentialInfo:
    """A credential as an operator sees it: never its secret."""

    id: str
    kind: Literal["session", "token"]
    source: str  # "mail" (a session from a proposal mail) or the operator who issued a token
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class LinkUnusable(Exception):
    """The sign-in link was used already, has expired, or never existed."""


class UnknownReceiver(LookupError):
    pass


class NoAddress(Exception):
    """The receiver has no address on file to mail its token to."""


@dataclass(frozen=True)
class TokenIssued:
    """What the operator who issued a system token learns: never the token."""

    id: str
    receiver_id: str
    expires_at: datetime
    delivered_to: str  # the receiver's address, masked


def mint_signin_code(s: AsyncSession, *, receiver_id: str, decision_id: str, delivery_id: str,
                     expires_at: datetime) -> tuple[str, str]:
    """A new sign-in code for one proposal mail: (its id, the code itself, never stored)."""
    code = secrets.token_urlsafe(32)
    code_id = new_id()
    s.add(SigninCode(id=code_id, code_sha256=digest(code), receiver_id=receiver_id, decision_id=decision_id,
                     delivery_id=delivery_id, expires_at=expires_at))
    return code_id, code


async def mint_system_token(s: AsyncSession, token_id: str) -> str | None:
    """The token of an operator's issue, minted as its mail goes out: its hash is set on
    the row the operator was told of (a new one each send: a mail that went out before, and
    failed or was given back, holds nothing that works). None when the token was revoked or
    has expired meanwhile: nothing to mail."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    minted = await s.execute(update(ReceiverToken).where(
        ReceiverToken.id == token_id, ReceiverToken.revoked_at.is_(None), ReceiverToken.expires_at > utcnow())
        .values(token_sha256=digest(token)).execution_options(synchronize_session=False))
    return token if minted.rowcount else None  # type: ignore[attr-defined]


async def discard_system_tokens(s: AsyncSession, token_ids: list[str]) -> None:
    """Forget the tokens minted for mails that were not sent: nobody holds them."""
    if token_ids:
        await s.execute(update(ReceiverToken).where(ReceiverToken.id.in_(token_ids))
                        .values(token_sha256=None).execution_options(synchronize_session=False))


async def register(s: AsyncSession, e: ReceiverRegistered) -> None:
    """Learn (or complete) a receiver that matching issued. Its first proposal is handled at
    the same time on another stream: whichever comes first inserts, the other completes."""
    await insert_new(s, Receiver, id=e.receiver_id, service_id=e.service_id, organization_id=e.organization_id,
                     contact_id=e.contact_id, email=e.contact_email)
    known = await s.get(Receiver, e.receiver_id, populate_existing=True)
    if known is None:  # inserted, or there before: never
        raise LookupError(f"receiver {e.receiver_id} neither inserted nor found")
    known.service_id, known.organization_id, known.contact_id = e.service_id, e.organization_id, e.contact_id
    if e.contact_email:  # an event published before addresses were carried keeps the one known
        known.email = e.contact_email


async def learn_from_proposal(s: AsyncSession, receiver_id: str, service_id: str, contact_id: str,
                              email: str) -> None:
    """A receiver a proposal was sent to is known, even before its registration arrives;
    its address is the one the proposal went to (the directory's latest)."""
    await insert_new(s, Receiver, id=receiver_id, service_id=service_id, contact_id=contact_id, email=email)
    known = await s.get(Receiver, receiver_id, populate_existing=True)
    if known is not None and email and known.email != email:
        known.email = email


@dataclass
class Credentials:
    sessions: async_sessionmaker[AsyncSession]
    relay: OutboxRelay
    session_ttl: timedelta = timedelta(hours=12)

    # --- the mail's link -----------------------------------------------------------------

    async def sign_in(self, code: str, current_cookie: str | None) -> SignedIn:
        """Consume a mail's code and open its proposal in a session: the session already in
        this browser when it is the same receiver's (and still valid), else a new one."""
        now = utcnow()
        async with self.sessions() as s, s.begin():
            # One conditional UPDATE: of two requests with the same code, one wins.
            used = (await s.execute(
                update(SigninCode).where(SigninCode.code_sha256 == digest(code), SigninCode.used_at.is_(None),
                                         SigninCode.expires_at > now)
                .values(used_at=now).returning(SigninCode.receiver_id, SigninCode.decision_id)
                .execution_options(synchronize_session=False))).one_or_none()
            if used is None:
                raise LinkUnusable()
            receiver_id, decision_id = used
            session = None
            if current_cookie and current_cookie.startswith(SESSION_PREFIX):
                session = await s.scalar(select(ReceiverSession).where(
                    ReceiverSession.session_sha256 == digest(current_cookie), ReceiverSession.revoked_at.is_(None),
                    ReceiverSession.expires_at > now, ReceiverSession.receiver_id == receiver_id))
            cookie = None
            if session is None:
                cookie = SESSION_PREFIX + secrets.token_urlsafe(32)
                session = ReceiverSession(id=new_id(), session_sha256=digest(cookie), receiver_id=receiver_id,
                                          created_at=now, expires_at=now + self.session_ttl, last_used_at=now)
                s.add(session)
                await s.flush()
            if await s.get(SessionProposal, (session.id, decision_id)) is None:
                s.add(SessionProposal(session_id=session.id, decision_id=decision_id))
            return SignedIn(session.id, cookie, decision_id, session.expires_at)

    async def renew(self, code: str) -> bool:
        """Mail the proposal again, with a new link, to the address the code's mail went to,
        when the code is known (used or expired), its proposal still open, and no new link
        was asked for with it yet. The answer holds no secret: only the mailbox gets one."""
        now = utcnow()
        async with self.sessions() as s, s.begin():
            asked = (await s.execute(
                update(SigninCode).where(SigninCode.code_sha256 == digest(code), SigninCode.renewed_at.is_(None))
                .values(renewed_at=now).returning(SigninCode.delivery_id, SigninCode.decision_id,
                                                  SigninCode.receiver_id)
                .execution_options(synchronize_session=False))).one_or_none()
            if asked is None:
                return False
            delivery_id, decision_id, receiver_id = asked
            proposal = await s.get(Proposal, (decision_id, receiver_id))
            if proposal is None or proposal.status not in OPEN_PROPOSALS:
                return False
            # The proposal's delivery goes out again: a claim mints a new code for it.
            again = await s.execute(update(Delivery)
                                    .where(Delivery.id == delivery_id, Delivery.state != DeliveryState.pending)
                                    .values(state=DeliveryState.pending, next_attempt_at=now)
                                    .execution_options(synchronize_session=False))
            return bool(again.rowcount)  # type: ignore[attr-defined]

    async def mail_inbox_link(self, receiver_id: str) -> str | None:
        """Mail the receiver, at its registered address only, a link whose session opens its
        whole inbox. Returns where it went, masked; None when it has no address on file, or
        when such a link was queued within INBOX_LINK_EVERY (asking again sends nothing)."""
        now = utcnow()
        async with self.sessions() as s, s.begin():
            known = await s.get(Receiver, receiver_id)
            if known is None or not known.email:
                return None
            recent = await s.scalar(select(Delivery.id).where(
                Delivery.receiver_id == receiver_id, Delivery.kind == "inbox_link",
                Delivery.created_at > now - INBOX_LINK_EVERY))
            if recent is None:
                # The subject and body are made as the mail goes out, with its single-use code.
                s.add(Delivery(id=new_id(), referral_id="", decision_id=new_id(), receiver_id=receiver_id,
                               kind="inbox_link", email=known.email, subject="Rujukan", body="", urgent=False,
                               created_at=now, next_attempt_at=now))
            return masked_address(known.email)

    # --- who is asking ---------------------------------------------------------------------

    async def by_session(self, cookie: str) -> Credential | None:
        if not cookie.startswith(SESSION_PREFIX):
            return None
        now = utcnow()
        async with self.sessions() as s, s.begin():
            found = await s.scalar(select(ReceiverSession).where(ReceiverSession.session_sha256 == digest(cookie)))
            if found is None or found.revoked_at is not None or found.expires_at <= now:
                return None
            opens = frozenset((await s.scalars(select(SessionProposal.decision_id)
                                               .where(SessionProposal.session_id == found.id))).all())
            if found.last_used_at is None or now - found.last_used_at > LAST_USED_EVERY:
                found.last_used_at = now
            return Credential(found.id, "session", found.receiver_id, found.expires_at,
                              None if WHOLE_INBOX in opens else opens)

    async def by_token(self, token: str) -> Credential | None:
        if not token.startswith(TOKEN_PREFIX):
            return None
        now = utcnow()
        async with self.sessions() as s, s.begin():
            found = await s.scalar(select(ReceiverToken).where(ReceiverToken.token_sha256 == digest(token)))
            if found is None or found.revoked_at is not None or found.expires_at <= now:
                return None
            if found.last_used_at is None or now - found.last_used_at > LAST_USED_EVERY:
                found.last_used_at = now
            return Credential(found.id, "token", found.receiver_id, found.expires_at, None)

    # --- operators: tokens for systems, and every credential by receiver ------------------

    async def issue_token(self, receiver_id: str, valid_for: timedelta, issued_by: str) -> TokenIssued:
        """A token for a provider's system, mailed to the receiver's own address: the token
        row (no hash yet: it opens nothing) and its mail are queued together; the delivery
        worker mints the token as the mail goes out. The operator is told where, masked."""
        token_id = new_id()
        expires_at = utcnow() + valid_for
        async with self.sessions() as s, s.begin():
            known = await s.get(Receiver, receiver_id)
            if known is None:
                raise UnknownReceiver(receiver_id)
            if not known.email:
                raise NoAddress(receiver_id)
            s.add(ReceiverToken(id=token_id, receiver_id=receiver_id, token_sha256=None, issued_by=issued_by,
                                expires_at=expires_at))
            subject, body = system_token(token_id=token_id, service_id=known.service_id, expires_at=expires_at)
            s.add(Delivery(id=new_id(), referral_id="", decision_id=token_id, receiver_id=receiver_id,
                           kind="system_token", email=known.email, subject=subject, body=body, urgent=False))
        return TokenIssued(token_id, receiver_id, expires_at, masked_address(known.email))

    async def of_receiver(self, receiver_id: str) -> list[CredentialInfo]:
        async with self.sessions() as s:
            if await s.get(Receiver, receiver_id) is None:
                raise UnknownReceiver(receiver_id)
            tokens = (await s.scalars(select(ReceiverToken).where(ReceiverToken.receiver_id == receiver_id))).all()
            sessions = (await s.scalars(select(ReceiverSession)
                                        .where(ReceiverSession.receiver_id == receiver_id))).all()
        out = [CredentialInfo(t.id, "token", t.issued_by, t.created_at, t.expires_at, t.last_used_at, t.revoked_at)
               for t in tokens]
        out += [CredentialInfo(x.id, "session", "mail", x.created_at, x.expires_at, x.last_used_at, x.revoked_at)
                for x in sessions]
        return sorted(out, key=lambda c: (c.created_at, c.id), reverse=True)

    async def revoke(self, receiver_id: str, credential_id: str) -> bool:
        """Revoke one of the receiver's tokens or sessions; False if it has no such live one."""
        async with self.sessions() as s, s.begin():
            done = await self._revoke(s, ReceiverToken, credential_id, receiver_id) or await self._revoke(
                s, ReceiverSession, credential_id, receiver_id)
        if done:
            self.relay.kick()
        return done

    async def sign_out(self, cookie: str) -> bool:
        """Revoke the session of this cookie; False if it was not a live session."""
        if not cookie.startswith(SESSION_PREFIX):
            return False
        async with self.sessions() as s, s.begin():
            session_id = await s.scalar(select(ReceiverSession.id).where(
                ReceiverSession.session_sha256 == digest(cookie)))
            done = session_id is not None and await self._revoke(s, ReceiverSession, session_id, None)
        if done:
            self.relay.kick()
        return done

    @staticmethod
    async def _revoke(s: AsyncSession, model: type[ReceiverToken] | type[ReceiverSession], credential_id: str,
                      receiver_id: str | None) -> bool:
        q = update(model).where(model.id == credential_id, model.revoked_at.is_(None))
        if receiver_id is not None:
            q = q.where(model.receiver_id == receiver_id)
        res = await s.execute(q.values(revoked_at=utcnow()).execution_options(synchronize_session=False))
        if not res.rowcount:  # type: ignore[attr-defined]
            return False
        add_events(s, Outbox, [Envelope.wrap(ReceiverCredentialRevoked(credential_id=credential_id),
                                             source=SOURCE, subject=credential_id)])
        return True
