"""Intake's side of a receiver's grant, against real Redis and a real database: a grant
opens only the referral proposed to its receiver (by receiver id), and dies with the
credential that obtained it once notify's `receiver.credential_revoked` has arrived."""

from __future__ import annotations

from typing import Any

from intake.bootstrap import create_app
from shared.events import Envelope, ReceiverCredentialRevoked, ReferralStatusChanged, utcnow
from shared.grants import sign
from shared.streams.topology import CREDENTIALS, publish
from tests.apps import GRANT_SECRET, eventually, running
from tests.integration.test_intake import AUTH, body, matched, settings

RECEIVER = "01RECEIVERC1"  # the receiver test_intake.matched proposes to


def grant_for(rid: str, receiver_id: str = RECEIVER, credential_id: str = "01SESSION1") -> dict[str, str]:
    token, _ = sign(GRANT_SECRET, referral_id=rid, decision_id="D1", receiver_id=receiver_id,
                    credential_id=credential_id)
    return {"Authorization": f"Bearer {token}"}


async def test_a_grant_opens_its_receivers_referral_until_its_credential_is_revoked(
    database_url: str, redis_url: str, redis: Any
) -> None:
    app = create_app(settings(database_url, redis_url).model_copy(update={"receiver_grant_secret": GRANT_SECRET}))
    async with running(app) as client:
        rid = (await client.post("/v1/referrals", json=body("PPA-GRANT-1"), headers=AUTH)).json()["id"]
        accepted = Envelope.wrap(ReferralStatusChanged(
            referral_id=rid, decision_id="D1", service_id="svc-1", status="accepted", actor=f"receiver:{RECEIVER}",
            at=utcnow(), urgency="routine"), source="rujukan/matching", subject=rid)
        await publish(redis, [matched(rid), accepted])
        url = f"/v1/receivers/referrals/{rid}"

        async def readable() -> bool:
            return (await client.get(url, headers=grant_for(rid))).status_code == 200

        await eventually(readable)
        # Another receiver's grant (one whose record reused the same HSDS contact id, say),
        # or a grant naming the contact id instead of the receiver id: refused.
        for other in ("01RECEIVEROTHER", "c1"):
            r = await client.get(url, headers=grant_for(rid, receiver_id=other))
            assert r.status_code == 403
            assert "Siti" not in r.text

        # notify revoked the session that obtained the grant: intake refuses it from then on,
        # while a grant of another credential of the same receiver still opens it.
        await publish(redis, [Envelope.wrap(ReceiverCredentialRevoked(credential_id="01SESSION1"),
                                            source="rujukan/notify", subject="01SESSION1")])

        async def refused() -> bool:
            return (await client.get(url, headers=grant_for(rid))).status_code == 401

        await eventually(refused)
        r = await client.get(url, headers=grant_for(rid))
        assert "revoked" in r.json()["detail"]
        assert "Siti" not in r.text
        assert (await client.get(url, headers=grant_for(rid, credential_id="01TOKEN2"))).status_code == 200
        assert await redis.xlen(CREDENTIALS) == 1
        # The same revocation again (at-least-once delivery) changes nothing.
        await publish(redis, [Envelope.wrap(ReceiverCredentialRevoked(credential_id="01SESSION1"),
                                            source="rujukan/notify", subject="01SESSION1")])
        assert (await client.get(url, headers=grant_for(rid, credential_id="01TOKEN2"))).status_code == 200
