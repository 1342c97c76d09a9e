"""Referring agencies and their API keys: onboarding (create, rotate, revoke) and knowing
an agency by its key.

A key is shown once, when it is issued, and kept only as HMAC-SHA256(AGENCY_KEY_PEPPER,
key): whoever reads the table cannot test guesses of a key without the pepper, which lives
in the services' configuration, not in the database. One key per agency: rotating issues a
new one and the old one stops working at once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from contextlib import suppress
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from intake.adapters.orm import Agency
from shared.events import new_id, utcnow

KEY_PREFIX = "rja_"  # marks an agency key
HINT_CHARS = 8
AGENCY_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class AgencyExists(Exception):
    pass


class NoSuchAgency(Exception):
    pass


@dataclass(frozen=True)
class IssuedKey:
    """An agency with the key just issued to it: the only time the key is known."""

    agency: Agency
    api_key: str


def no_key(agency_id: str) -> str:
    """The stored value of an agency without a key: equal to no HMAC (64 hex digits)."""
    return f"none:{agency_id}"


@dataclass
class Agencies:
    sessions: async_sessionmaker[AsyncSession]
    pepper: str

    def key_hmac(self, api_key: str) -> str:
        return hmac.new(self.pepper.encode(), api_key.encode(), hashlib.sha256).hexdigest()

    def _issue(self, agency: Agency, api_key: str | None = None) -> str:
        key = api_key or KEY_PREFIX + secrets.token_urlsafe(32)
        agency.key_hmac, agency.key_hint = self.key_hmac(key), key[:HINT_CHARS]
        agency.key_issued_at, agency.active, agency.revoked_at = utcnow(), True, None
        return key

    async def for_key(self, api_key: str) -> Agency | None:
        """The active agency this key belongs to, or None."""
        async with self.sessions() as s:
            agency = await s.scalar(select(Agency).where(Agency.key_hmac == self.key_hmac(api_key)))
        return agency if agency is not None and agency.active else None

    async def create(self, name: str, agency_id: str | None = None) -> IssuedKey:
        agency = Agency(id=agency_id or new_id().lower(), name=name, created_at=utcnow())
        key = self._issue(agency)
        try:
            async with self.sessions() as s, s.begin():
                s.add(agency)
        except IntegrityError:
            raise AgencyExists(agency.id) from None
        return IssuedKey(agency, key)

    async def all(self) -> list[Agency]:
        async with self.sessions() as s:
            return list((await s.scalars(select(Agency).order_by(Agency.created_at, Agency.id))).all())

    async def rotate(self, agency_id: str) -> IssuedKey:
        """A new key for the agency (active again if it was revoked); the old key is dead."""
        async with self.sessions() as s, s.begin():
            agency = await s.get(Agency, agency_id, with_for_update=True)
            if agency is None:
                raise NoSuchAgency(agency_id)
            key = self._issue(agency)
        return IssuedKey(agency, key)

    async def revoke(self, agency_id: str) -> Agency:
        """The agency's key stops working; its referrals stay (and keep their timeline)."""
        async with self.sessions() as s, s.begin():
            agency = await s.get(Agency, agency_id, with_for_update=True)
            if agency is None:
                raise NoSuchAgency(agency_id)
            if agency.active:
                agency.active, agency.revoked_at = False, utcnow()
                agency.key_hmac, agency.key_hint = no_key(agency.id), None
        return agency

    async def ensure(self, agency_id: str, name: str, api_key: str) -> None:
        """The agency exists, active, with this key (the demo agency in development)."""
        for attempt in (1, 2):
            try:
                async with self.sessions() as s, s.begin():
                    agency = await s.get(Agency, agency_id)
                    if agency is None:
                        agency = Agency(id=agency_id, name=name, created_at=utcnow())
                        s.add(agency)
                    agency.name = name
                    if agency.key_hmac != self.key_hmac(api_key) or not agency.active:
                        self._issue(agency, api_key)
                return
            except IntegrityError:
                # Replicas starting together: another one created it first; update it instead.
                if attempt == 2:
                    raise

    async def deactivate(self, agency_id: str) -> None:
        """Revoke the agency if it exists (the demo agency outside development)."""
        with suppress(NoSuchAgency):
            await self.revoke(agency_id)
