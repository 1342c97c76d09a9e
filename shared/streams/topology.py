"""The streams and who reads them: names, lanes, the topology of consumer groups, where an
event is published, and provisioning the groups (at id 0) before anything runs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.events import Envelope
from shared.vocab import is_urgent

PREFIX = "rujukan"

# Two lanes per flow: a crisis (or any risk flag) is never queued behind routine work.
SUBMITTED_URGENT = f"{PREFIX}:referral.submitted:urgent"
SUBMITTED = f"{PREFIX}:referral.submitted"
DECISIONS_URGENT = f"{PREFIX}:referral.decisions:urgent"
DECISIONS = f"{PREFIX}:referral.decisions"
RESPONSES_URGENT = f"{PREFIX}:referral.responses:urgent"
RESPONSES = f"{PREFIX}:referral.responses"
CANCELLATIONS_URGENT = f"{PREFIX}:referral.cancellations:urgent"
CANCELLATIONS = f"{PREFIX}:referral.cancellations"
NOTIFICATIONS = f"{PREFIX}:notification.events"
# Receivers: identities matching issues (-> notify), credentials notify revokes (-> intake).
RECEIVERS = f"{PREFIX}:receiver.registrations"
CREDENTIALS = f"{PREFIX}:receiver.credentials"

# Consumer group (one per service) -> the streams it reads, every urgent lane first.
TOPOLOGY: dict[str, list[str]] = {
    "matching": [SUBMITTED_URGENT, RESPONSES_URGENT, CANCELLATIONS_URGENT, SUBMITTED, RESPONSES, CANCELLATIONS],
    "notify": [DECISIONS_URGENT, CANCELLATIONS_URGENT, DECISIONS, CANCELLATIONS, RECEIVERS],
    # A revoked credential is read before routine work: the grants it obtained die with it.
    "intake": [DECISIONS_URGENT, CREDENTIALS, DECISIONS, NOTIFICATIONS],
}

# Event family (the type's first two parts) -> (urgent lane, routine lane). Every other
# `referral.*` event is matching's (decisions and the closed-loop steps it applied).
LANES: dict[str, tuple[str, str]] = {
    "referral.submitted": (SUBMITTED_URGENT, SUBMITTED),
    "referral.rematch_requested": (SUBMITTED_URGENT, SUBMITTED),  # matching's input, like a submission
    "referral.response": (RESPONSES_URGENT, RESPONSES),
    "referral.cancelled": (CANCELLATIONS_URGENT, CANCELLATIONS),
}


def dead_letter_stream(group: str) -> str:
    return f"{PREFIX}:dead-letter:{group}"


def stream_for(envelope: Envelope) -> str:
    """Where an event is published: its flow, and the urgent lane when the case is urgent."""
    lanes = lanes_of(envelope.type)
    data = envelope.data
    urgent = is_urgent(str(data.get("urgency", "routine")), list(data.get("risk_flags", [])))
    return lanes[0] if urgent else lanes[-1]


def is_urgent_lane(stream: str) -> bool:
    """A stream whose entries go before routine work: an urgent lane, or revoked credentials
    (the grants they obtained die with them)."""
    return stream.endswith(":urgent") or stream == CREDENTIALS


def lanes_of(event_type: str) -> tuple[str, ...]:
    """The streams an event type can be published to: (urgent lane, routine lane) for a
    referral's flow, the one stream otherwise."""
    family = event_type.split(".")
    if family[0] == "referral":
        return LANES.get(".".join(family[:2]), (DECISIONS_URGENT, DECISIONS))
    if family[0] == "notification":
        return (NOTIFICATIONS,)
    if event_type.startswith("receiver.registered."):
        return (RECEIVERS,)
    if event_type.startswith("receiver.credential_revoked."):
        return (CREDENTIALS,)
    raise ValueError(f"no stream for event type {event_type}")


def replay_stream(group: str) -> str:
    """Where an operator's replayed dead letters go: read by that group only, so a replay
    never reaches the other groups of the original stream."""
    return f"{PREFIX}:replay:{group}"


def stats_key(group: str) -> str:
    return f"{PREFIX}:stats:{group}"


def error_key(group: str, stream: str, entry_id: str) -> str:
    return f"{PREFIX}:error:{group}:{stream}:{entry_id}"


def group_streams(group: str, topology: dict[str, list[str]] | None = None) -> list[str]:
    """The streams a group reads, most urgent first, then its replay stream."""
    streams = list((topology or TOPOLOGY).get(group, []))
    return [*streams, replay_stream(group)] if replay_stream(group) not in streams else streams


def stream_groups(topology: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    """Stream -> the groups that must read every entry of it (the inverse of TOPOLOGY)."""
    out: dict[str, list[str]] = {}
    for group in topology or TOPOLOGY:
        for stream in group_streams(group, topology):
            out.setdefault(stream, []).append(group)
    return out


def connect(url: str) -> aioredis.Redis:
    """A client that retries its own connection errors, so a Redis restart is ridden out.

    The asyncio client needs the asyncio Retry: given redis.retry.Retry it never retries."""
    return aioredis.Redis.from_url(
        url,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=5),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionResetError],
        health_check_interval=15,
        socket_keepalive=True,
    )


async def provision(redis: aioredis.Redis, topology: dict[str, list[str]] | None = None) -> None:
    """Create every stream and consumer group (and each group's replay stream) at id 0,
    idempotently, before anything runs.

    At `0` (not `$`) so that whatever was published before a group existed is still read:
    this is also what makes a flushed Redis safe, since the relays publish again into
    groups provisioned again at 0.
    """
    for group in topology or TOPOLOGY:
        await ensure_groups(redis, group, group_streams(group, topology))


async def ensure_groups(redis: aioredis.Redis, group: str, streams: Iterable[str]) -> None:
    for stream in streams:
        try:
            await redis.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise


async def publish(redis: aioredis.Redis, envelopes: Sequence[Envelope]) -> list[str]:
    """XADD each envelope to its stream in one round trip; returns the entry ids."""
    if not envelopes:
        return []
    pipe = redis.pipeline(transaction=False)
    for env in envelopes:
        pipe.xadd(stream_for(env), env.to_fields())  # type: ignore[arg-type]
    ids = await pipe.execute()
    return [decoded(i) for i in ids]


def decoded(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
