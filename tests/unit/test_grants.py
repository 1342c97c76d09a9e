"""Receiver grants: signed, scoped to a receiver and the credential that obtained it,
short-lived."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.events import utcnow
from shared.grants import DEFAULT_TTL, InvalidGrant, sign, verify

CLAIMS = dict(referral_id="R1", decision_id="D1", receiver_id="01RECEIVER", credential_id="01SESSION")


def test_a_grant_names_referral_decision_receiver_and_credential() -> None:
    token, expires = sign("s3cret", **CLAIMS)
    grant = verify("s3cret", token)
    assert (grant.referral_id, grant.decision_id, grant.receiver_id, grant.credential_id) == (
        "R1", "D1", "01RECEIVER", "01SESSION")
    assert grant.expires_at == expires.replace(microsecond=0)
    assert timedelta(minutes=10) >= DEFAULT_TTL


def test_a_grant_never_outlives_its_credential() -> None:
    soon = utcnow() + timedelta(minutes=2)
    _, expires = sign("s3cret", **CLAIMS, ttl=timedelta(minutes=10), not_after=soon)
    assert expires == soon


@pytest.mark.parametrize("mutate", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature
    lambda t: t + "x",  # signature too long
    lambda t: "rjg2." + t.split(".")[1][:-1] + "." + t.split(".")[2],  # body
    lambda t: "rjk_" + t,
    lambda t: t.replace("rjg2.", "rjg1."),  # a grant of the former shape (contact ids)
    lambda t: "",
])
def test_a_tampered_or_foreign_token_is_refused(mutate: object) -> None:
    token, _ = sign("s3cret", **CLAIMS)
    with pytest.raises(InvalidGrant):
        verify("s3cret", mutate(token))  # type: ignore[operator]


def test_another_secret_or_no_secret_refuses() -> None:
    token, _ = sign("s3cret", **CLAIMS)
    with pytest.raises(InvalidGrant, match="bad signature"):
        verify("other", token)
    with pytest.raises(InvalidGrant, match="not enabled"):
        verify("", token)
    with pytest.raises(InvalidGrant):
        sign("", **CLAIMS)


def test_an_expired_grant_is_refused() -> None:
    token, expires = sign("s3cret", **CLAIMS, ttl=timedelta(minutes=5))
    assert verify("s3cret", token, now=utcnow() + timedelta(minutes=4)).referral_id == "R1"
    with pytest.raises(InvalidGrant, match="expired"):
        verify("s3cret", token, now=expires + timedelta(seconds=1))
