"""Re-encrypting personal data under the current key, so that an old key can be removed.

Every sealed column of a referral (`*_enc`) not sealed with the first key of
ENCRYPTION_KEYS is opened and sealed again with it, and the idempotency digest is re-keyed
with it, a batch of referrals per transaction. A batch commits as a whole, and a referral
already under the current key is not selected again, so an interrupted rotation (a crash,
Ctrl-C) is finished by running it again.

The digest cannot be re-keyed from itself: the submission is rebuilt from the row (what
intake stored is the validated request) and its digest under the old key checked first;
only a rebuilt submission that matches is digested under the current key. One that does
not (a row from before a change of the request's shape) keeps its old digest, which
compares while its key is configured.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from pydantic import ValidationError
from sqlalchemy import Column, and_, func, not_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from intake.adapters.crypto import DIGEST_PREFIX, FieldCipher, KeyringError
from intake.adapters.orm import Referral
from intake.domain.model import ReferralRequest
from intake.service_layer import webhooks
from intake.service_layer.referrals import request_bytes

log = logging.getLogger("rujukan.intake.keys")

# Every sealed column of a referral, and the field its associated data names
# (`<referral id>:<field>`): a column added later is rotated without a change here.
SEALED: dict[str, str] = {
    c.name: c.name.removesuffix("_enc")
    for c in Referral.__table__.columns
    if c.name.endswith("_enc")
}


@dataclass
class Rotation:
    """What a rotation did."""

    key_id: str
    rotated: int = 0  # referrals re-sealed (and their digest re-keyed)
    webhook_secrets: int = 0  # agencies' webhook endpoints whose secrets were re-sealed
    digests_kept: int = 0  # referrals whose digest could not be rebuilt (see the module's doc)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (referral id, why)


def _needs_rotation(cipher: FieldCipher) -> ColumnElement[bool]:
    current = f"v1:{cipher.current}:"
    # An optional sealed field (the caseworker) may be NULL: nothing to rotate there.
    sealed_elsewhere = [and_(col.is_not(None), not_(col.startswith(current, autoescape=True)))
                        for col in (getattr(Referral, name) for name in SEALED)]
    return or_(*sealed_elsewhere, not_(Referral.request_sha256.startswith(DIGEST_PREFIX, autoescape=True)))


async def pending(sessions: async_sessionmaker[AsyncSession], cipher: FieldCipher) -> int:
    """How many referrals hold a value not yet under the current key."""
    async with sessions() as s:
        return int(await s.scalar(select(func.count()).select_from(Referral).where(_needs_rotation(cipher))) or 0)


async def sealed_by_key(sessions: async_sessionmaker[AsyncSession], cipher: FieldCipher) -> dict[str, int]:
    """How many sealed values each configured key holds, and under "(not configured)" how
    many no configured key opens: a key can go once it holds none."""
    counts: dict[str, int] = {}
    async with sessions() as s:
        total = 0
        for name in SEALED:
            total += int(await s.scalar(select(func.count(getattr(Referral, name)))) or 0)  # non-NULL values
        for kid in cipher.key_ids:
            counts[kid] = 0
            for name in SEALED:
                col: Column[str] = getattr(Referral, name)
                counts[kid] += int(await s.scalar(
                    select(func.count()).select_from(Referral).where(col.startswith(f"v1:{kid}:", autoescape=True))
                ) or 0)
    counts["(not configured)"] = total - sum(counts.values())
    # Agencies' webhook secrets are sealed with the same keys: a key can go once it holds none.
    for kid, n in (await webhooks.secrets_by_key(sessions)).items():
        where = kid if kid in counts and kid != "(not configured)" else "(not configured)"
        counts[where] += n
    return counts


async def rotate(sessions: async_sessionmaker[AsyncSession], cipher: FieldCipher, *, batch: int = 200,
                 on_batch: Callable[[int], None] | None = None) -> Rotation:
    """Re-seal every referral not under the current key, `batch` referrals per transaction;
    `on_batch(n)` after each committed batch (a progress bar)."""
    report = Rotation(key_id=cipher.current)
    after = ""
    while True:
        async with sessions() as s, s.begin():
            rows = list((await s.scalars(
                select(Referral).where(and_(Referral.id > after, _needs_rotation(cipher)))
                .order_by(Referral.id).limit(batch))).all())
            if not rows:
                break
            for referral in rows:
                _rotate_one(cipher, referral, report)
            after = rows[-1].id
        if on_batch is not None:
            on_batch(len(rows))
    report.webhook_secrets = await webhooks.reseal_secrets(sessions, cipher)
    return report


def _rotate_one(cipher: FieldCipher, referral: Referral, report: Rotation) -> None:
    try:
        plain = {name: None if getattr(referral, name) is None else cipher.open(getattr(referral, name),
                                                                                 f"{referral.id}:{what}")
                 for name, what in SEALED.items()}
    except KeyringError as e:
        report.unreadable.append((referral.id, str(e)))
        return
    except InvalidTag:
        report.unreadable.append((referral.id, "a sealed value does not open (altered, or moved from another row)"))
        return
    changed = False
    body = _rebuilt(referral, plain)
    if body is not None and cipher.digest_key_id(body, referral.request_sha256) not in (None, cipher.current):
        referral.request_sha256 = cipher.digest(body)
        changed = True
    elif body is None or not cipher.digest_matches(body, referral.request_sha256):
        report.digests_kept += 1
    for name, what in SEALED.items():
        value = plain[name]
        if value is not None and not cipher.is_current(getattr(referral, name)):
            setattr(referral, name, cipher.seal(value, f"{referral.id}:{what}"))
            changed = True
    report.rotated += changed


def _rebuilt(referral: Referral, plain: dict[str, str | None]) -> bytes | None:
    """The submission as it was validated, from what the row holds; None if it no longer
    validates (a rule added since)."""
    try:
        req = ReferralRequest.model_validate({
            "external_ref": referral.external_ref, "pmks_category": referral.pmks_category,
            "needs": referral.needs, "urgency": referral.urgency, "risk_flags": referral.risk_flags,
            "client": {
                "initials": plain["initials_enc"], "age": referral.age, "gender": referral.gender,
                "region_code": referral.region_code, "languages": referral.languages,
                "modality": referral.modality, "contact": json.loads(plain["contact_enc"] or "null"),
                "consent": {"share_with_provider": referral.consent_share,
                            "contact_by_provider": referral.consent_contact},
            },
            "narrative": plain["narrative_enc"],
            **({"caseworker": json.loads(cw)} if (cw := plain.get("caseworker_enc")) else {}),
        })
    except (ValidationError, ValueError, KeyError):
        return None
    return request_bytes(req)
