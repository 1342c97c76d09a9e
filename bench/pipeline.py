"""The referral pipeline: `referral.submitted.v1` envelopes, exactly as intake publishes
them, XADDed to the submitted streams (routine and urgent lanes), through matching (a real
PostgreSQL database holding the bench directory) to notify (deliveries recorded, mail sent
to the SMTP sink). A referral ends when its `notification.sent` event is read from the
notification stream: the delivery is committed, the mail was accepted by the sink, and the
event went through notify's outbox. A referral that ends unmatched or waitlisted (none
should: each has an eligible service) ends there, and is counted apart.
"""

from __future__ import annotations

import json
from typing import Any

from bench.flow import Probe
from bench.workload import Directory, envelopes
from shared.streams.topology import DECISIONS, DECISIONS_URGENT, NOTIFICATIONS, stream_for

END_TYPES = {
    "notification.sent.v2": "end",
    "notification.failed.v2": "end:notification_failed",
    "referral.unmatched.v1": "end:unmatched",
    "referral.waitlisted.v1": "end:waitlisted",
    "referral.matched.v2": "decided",
}


def probe(directory: Directory, seed: int) -> Probe:
    source = envelopes(directory, 10**9, seed)

    def make() -> tuple[str, str, dict[str, str]]:
        env = next(source)
        return env.subject, stream_for(env), env.to_fields()

    def classify(stream: str, fields: dict[bytes, bytes]) -> tuple[str, str] | None:
        label = END_TYPES.get(fields.get(b"type", b"").decode())
        if label is None:
            return None
        event: dict[str, Any] = json.loads(fields[b"event"])
        return str(event["data"]["referral_id"]), label

    return Probe(make, [DECISIONS_URGENT, DECISIONS, NOTIFICATIONS], classify)
