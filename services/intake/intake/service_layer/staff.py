"""Agency staff signing in as themselves: an onboarding operator registers a member's
professional e-mail address for an agency; they ask for a sign-in link on the agency pages,
get it by mail, and following it starts a session that opens their agency's referrals only.

Neither the link's code nor the session's id is kept: only their SHA-256. A code is
single use and short-lived; a session expires and can be ended. A removed member, or an
agency revoked, opens nothing any more."""

from __future__ import annotations

import hashlib
import logging
import secrets
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from pydantic import BaseModel, Field
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from intake.adapters.orm import Agency, AgencyStaff, StaffSession, StaffSigninCode
from intake.service_layer.agencies import NoSuchAgency
from shared.events import new_id, utcnow

log = logging.getLogger("rujukan.intake.staff")


class StaffExists(Exception):
    """This address is registered already (an address belongs to one agency)."""


class NoSuchStaff(Exception):
    pass


class Sender(Protocol):
    async def send(self, *, to: str, subject: str, body: str) -> None: ...


class StaffMember(BaseModel):
    id: str
    agency_id: str
    email: str = Field(description="the professional address sign-in links are mailed to")
    created_at: datetime


class StaffList(BaseModel):
    items: list[StaffMember]


@dataclass(frozen=True)
class SignedIn:
    """Who a session belongs to, as the agency pages need it."""

    staff_id: str
    email: str
    agency_id: str
    agency_name: str
    expires_at: datetime


@dataclass(frozen=True)
class NewSession:
    session_id: str  # the cookie's value: known only to the browser from now on
    expires_at: datetime


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def normal_email(email: str) -> str:
    return email.strip().lower()


SUBJECT = "Tautan masuk Rujukan / Your Rujukan sign-in link"
BODY = """Halo,

Ini tautan untuk masuk ke halaman lembaga {agency} di Rujukan:

{link}

Tautan ini hanya dapat dipakai sekali dan berlaku {minutes} menit. Jangan teruskan surel ini.
Jika Anda tidak meminta tautan ini, abaikan saja surel ini.

---

Hello,

This is the link to sign in to the pages of {agency} on Rujukan (above). It works once and
for {minutes} minutes. Do not forward this mail. If you did not ask for it, ignore it.
"""


def _member(row: AgencyStaff) -> StaffMember:
    return StaffMember(id=row.id, agency_id=row.agency_id, email=row.email, created_at=row.created_at)


@dataclass
class Staff:
    sessions: async_sessionmaker[AsyncSession]
    mail: Sender
    public_url: str
    code_minutes: float = 30.0
    session_hours: float = 12.0

    # --- onboarding -----------------------------------------------------------------------

    async def add(self, agency_id: str, email: str) -> StaffMember:
        row = AgencyStaff(id=new_id(), agency_id=agency_id, email=normal_email(email), created_at=utcnow())
        try:
            async with self.sessions() as s, s.begin():
                if await s.get(Agency, agency_id) is None:
                    raise NoSuchAgency(agency_id)
                s.add(row)
        except IntegrityError:
            raise StaffExists(row.email) from None
        return _member(row)

    async def all(self, agency_id: str) -> StaffList:
        async with self.sessions() as s:
            if await s.get(Agency, agency_id) is None:
                raise NoSuchAgency(agency_id)
            rows = (await s.scalars(select(AgencyStaff).where(AgencyStaff.agency_id == agency_id)
                                    .order_by(AgencyStaff.created_at, AgencyStaff.id))).all()
        return StaffList(items=[_member(r) for r in rows])

    async def remove(self, agency_id: str, staff_id: str) -> None:
        """The member's links and sessions stop working now."""
        async with self.sessions() as s, s.begin():
            row = await s.get(AgencyStaff, staff_id, with_for_update=True)
            if row is None or row.agency_id != agency_id:
                raise NoSuchStaff(staff_id)
            await s.execute(delete(StaffSigninCode).where(StaffSigninCode.staff_id == staff_id))
            await s.execute(delete(StaffSession).where(StaffSession.staff_id == staff_id))
            await s.delete(row)

    async def ensure(self, agency_id: str, email: str) -> None:
        """The address is registered for the agency (the demo staff in development)."""
        async with self.sessions() as s:
            found = await s.scalar(select(AgencyStaff).where(AgencyStaff.email == normal_email(email)))
        if found is None:
            with suppress(StaffExists):  # replicas starting together: another one added it
                await self.add(agency_id, email)

    # --- signing in -------------------------------------------------------------------------

    async def mail_signin_link(self, email: str) -> None:
        """Mail a single-use sign-in link to the address if it is a registered member's of an
        active agency; otherwise nothing (the page says the same either way)."""
        now = utcnow()
        code = secrets.token_urlsafe(32)
        async with self.sessions() as s, s.begin():
            found = (await s.execute(
                select(AgencyStaff.id, AgencyStaff.email, Agency.name).join(Agency, Agency.id == AgencyStaff.agency_id)
                .where(AgencyStaff.email == normal_email(email), Agency.active.is_(True)))).first()
            if found is None:
                return
            staff_id, address, agency_name = found
            s.add(StaffSigninCode(code_sha256=sha256(code), staff_id=staff_id,
                                  expires_at=now + timedelta(minutes=self.code_minutes)))
        link = f"{self.public_url.rstrip('/')}/agency/signin/{code}"
        body = BODY.format(agency=agency_name, link=link, minutes=round(self.code_minutes))
        try:
            await self.mail.send(to=address, subject=SUBJECT, body=body)
        except Exception as e:  # the address is not logged; the member asks again
            log.warning("agency sign-in mail not sent (%s)", type(e).__name__)

    async def start_session(self, code: str) -> NewSession | None:
        """Spend the code (once, before it expires) for a new session; None when it is
        unknown, used or expired."""
        now = utcnow()
        session_id = secrets.token_urlsafe(32)
        expires = now + timedelta(hours=self.session_hours)
        async with self.sessions() as s, s.begin():
            spent = await s.execute(
                update(StaffSigninCode).where(StaffSigninCode.code_sha256 == sha256(code),
                                              StaffSigninCode.used_at.is_(None), StaffSigninCode.expires_at > now)
                .values(used_at=now).returning(StaffSigninCode.staff_id))
            staff_id = spent.scalar_one_or_none()
            if staff_id is None:
                return None
            s.add(StaffSession(id_sha256=sha256(session_id), staff_id=staff_id, created_at=now, expires_at=expires))
        return NewSession(session_id, expires)

    async def signed_in(self, session_id: str) -> SignedIn | None:
        """The member a live session belongs to, while their agency is active; else None."""
        now = utcnow()
        async with self.sessions() as s:
            found = (await s.execute(
                select(AgencyStaff.id, AgencyStaff.email, Agency.id, Agency.name, StaffSession.expires_at)
                .join(AgencyStaff, AgencyStaff.id == StaffSession.staff_id)
                .join(Agency, Agency.id == AgencyStaff.agency_id)
                .where(StaffSession.id_sha256 == sha256(session_id), StaffSession.ended_at.is_(None),
                       StaffSession.expires_at > now, Agency.active.is_(True)))).first()
        return None if found is None else SignedIn(*found)

    async def end(self, session_id: str) -> None:
        async with self.sessions() as s, s.begin():
            await s.execute(update(StaffSession).where(StaffSession.id_sha256 == sha256(session_id),
                                                       StaffSession.ended_at.is_(None)).values(ended_at=utcnow()))
