"""Receiver grants: a short-lived, signed permission for one receiver to read one
referral's personal data at intake.

Personal data never travels on a stream, so a receiving social worker who accepted a
referral reads the person's details from intake directly. notify (which knows the
receiver) signs a grant naming the referral, the decision, the receiver (the identity
matching issued, never an HSDS contact id) and the credential that obtained it (a
session or a token); intake (which holds the data) checks the signature, that this
receiver is the one the referral was proposed to, that the credential was not revoked
since, that the referral is accepted or in progress, and the person's consent, and
records every reading on the timeline. The two services share only the secret
(RECEIVER_GRANT_SECRET), never a database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.events import utcnow

PREFIX = "rjg2."
# Short: a grant outlives the revocation of its credential only until intake has heard of
# it, and never longer than this.
DEFAULT_TTL = timedelta(minutes=10)


class InvalidGrant(ValueError):
    pass


@dataclass(frozen=True)
class Grant:
    referral_id: str
    decision_id: str
    receiver_id: str
    credential_id: str  # the session or token it was obtained with
    expires_at: datetime


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: str, *, referral_id: str, decision_id: str, receiver_id: str, credential_id: str,
         ttl: timedelta = DEFAULT_TTL, not_after: datetime | None = None) -> tuple[str, datetime]:
    """A grant, valid for `ttl` and never past `not_after` (when the credential expires)."""
    if not secret:
        raise InvalidGrant("RECEIVER_GRANT_SECRET is not set")
    expires = utcnow() + ttl
    if not_after is not None:
        expires = min(expires, not_after)
    body = _b64(json.dumps({"r": referral_id, "d": decision_id, "v": receiver_id, "k": credential_id,
                            "e": int(expires.timestamp())}, separators=(",", ":")).encode())
    mac = _b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())
    return f"{PREFIX}{body}.{mac}", expires


def verify(secret: str, token: str, now: datetime | None = None) -> Grant:
    if not secret:
        raise InvalidGrant("receiver grants are not enabled (RECEIVER_GRANT_SECRET is not set)")
    if not token.startswith(PREFIX) or token.count(".") != 2:
        raise InvalidGrant("not a receiver grant")
    body, mac = token[len(PREFIX):].split(".")
    expected = _b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(mac, expected):
        raise InvalidGrant("bad signature")
    try:
        claims = json.loads(_unb64(body))
        grant = Grant(str(claims["r"]), str(claims["d"]), str(claims["v"]), str(claims["k"]),
                      datetime.fromtimestamp(int(claims["e"]), tz=utcnow().tzinfo))
    except (ValueError, KeyError, TypeError):
        raise InvalidGrant("malformed grant") from None
    if (now or utcnow()) >= grant.expires_at:
        raise InvalidGrant("grant expired")
    return grant
