"""Receiver grants: signed, scoped, short-lived."""

from __future__ import annotations

from datetime import timedelta

import pytest

from shared.events import utcnow
from shared.grants import InvalidGrant, sign, verify


def test_a_grant_names_referral_decision_and_receiver() -> None:
    token, expires = sign("s3cret", referral_id="R1", decision_id="D1", contact_id="ct-1")
    grant = verify("s3cret", token)
    assert (grant.referral_id, grant.decision_id, grant.contact_id) == ("R1", "D1", "ct-1")
    assert grant.expires_at == expires.replace(microsecond=0)


@pytest.mark.parametrize("mutate", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature
    lambda t: t + "x",  # signature too long
    lambda t: "rjg1." + t.split(".")[1][:-1] + "." + t.split(".")[2],  # body
    lambda t: "rjk_" + t,
    lambda t: "",
])
def test_a_tampered_or_foreign_token_is_refused(mutate: object) -> None:
    token, _ = sign("s3cret", referral_id="R1", decision_id="D1", contact_id="ct-1")
    with pytest.raises(InvalidGrant):
        verify("s3cret", mutate(token))  # type: ignore[operator]


def test_another_secret_or_no_secret_refuses() -> None:
    token, _ = sign("s3cret", referral_id="R1", decision_id="D1", contact_id="ct-1")
    with pytest.raises(InvalidGrant, match="bad signature"):
        verify("other", token)
    with pytest.raises(InvalidGrant, match="not enabled"):
        verify("", token)
    with pytest.raises(InvalidGrant):
        sign("", referral_id="R1", decision_id="D1", contact_id="ct-1")


def test_an_expired_grant_is_refused() -> None:
    token, expires = sign("s3cret", referral_id="R1", decision_id="D1", contact_id="c", ttl=timedelta(minutes=5))
    assert verify("s3cret", token, now=utcnow() + timedelta(minutes=4)).referral_id == "R1"
    with pytest.raises(InvalidGrant, match="expired"):
        verify("s3cret", token, now=expires + timedelta(seconds=1))
