"""A service's AsyncAPI 3.0 document, from the code: the channels its consumer group reads
(FastStream's subscribers, declared as the running consumer declares them) and, on each, the
typed envelopes of the events it handles there. Committed under docs/asyncapi/ (`make asyncapi`
runs `faststream docs gen` on each service's `entrypoints/streams.py:asyncapi`), served at
/asyncapi.json; tests/unit/test_asyncapi.py fails when a committed copy is stale."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Union

import redis.asyncio as aioredis
from faststream import FastStream
from faststream.redis import RedisBroker
from faststream.specification import AsyncAPI

from shared.events import EventData, envelope_model
from shared.streams.consumer import StreamConsumer
from shared.streams.topology import group_streams, lanes_of, replay_stream

# Where the document says the streams live: compose's Redis, never a real address or password.
DOCUMENTED_SERVER = "redis://redis:6379/0"


def payloads(group: str, reads: Iterable[type[EventData]]) -> dict[str, Any]:
    """Stream -> the type of what the group handles on it (a union of typed envelopes)."""
    reads = sorted(reads, key=lambda t: t.TYPE)
    out: dict[str, Any] = {}
    for stream in group_streams(group):
        carried = [envelope_model(t) for t in reads
                   if stream == replay_stream(group) or stream in lanes_of(t.TYPE)]
        if carried:
            out[stream] = carried[0] if len(carried) == 1 else Union[tuple(carried)]  # noqa: UP007
    return out


def specification(service: str, group: str, reads: Iterable[type[EventData]], *, version: str = "1") -> AsyncAPI:
    """The AsyncAPI specification of what `group` reads (what `faststream docs gen` writes)."""
    broker = RedisBroker(DOCUMENTED_SERVER, apply_types=False,
                         description=f"Redis streams read by the {service} service.")

    async def _unused(_: list[Any]) -> None:  # never run: only declares the subscribers
        return None

    # A client that never connects: declaring subscribers reads nothing.
    consumer = StreamConsumer(aioredis.Redis(), group=group, consumer=f"{group}-<replica>",
                              streams=group_streams(group), handler=_unused, payloads=payloads(group, reads))
    consumer.subscribe(broker)
    return AsyncAPI(broker, title=f"Rujukan {service}", version=version, schema_version="3.0.0",
                    description=f"What the {service} service reads from the streams, by channel.")


def docs_app(service: str, group: str, reads: Iterable[type[EventData]]) -> FastStream:
    """What `faststream docs gen` loads: an app that is never run, holding the specification."""
    return FastStream(specification=specification(service, group, reads))


def document(service: str, group: str, reads: Iterable[type[EventData]]) -> dict[str, Any]:
    """The same, as JSON-ready data."""
    data: dict[str, Any] = json.loads(specification(service, group, reads).to_specification().to_json())
    return data
