"""What notify reads from the streams, in one place: its consumer group (the streams it reads,
urgent lanes first, are `TOPOLOGY["notify"]` in shared/streams/topology.py) and, by exact
event type, the use case that answers each event (`HANDLERS`). An event of any other type
on those streams is acknowledged and ignored; one that does not parse is dead-lettered.
docs/asyncapi/notify.json is generated from this."""

from __future__ import annotations

from faststream import FastStream

from notify.service_layer.deliveries import HANDLERS, Notify
from shared.streams.asyncapi import docs_app
from shared.streams.consumer import BatchHandler

GROUP = "notify"
READS = tuple(HANDLERS)

__all__ = ["GROUP", "HANDLERS", "READS", "asyncapi", "batch_handler"]


def batch_handler(notify: Notify) -> BatchHandler:
    """Each batch is applied in one transaction, each event once (the inbox table)."""
    return notify.handle


def asyncapi() -> FastStream:
    """`faststream docs gen --factory notify.entrypoints.streams:asyncapi` (make asyncapi)."""
    return docs_app("notify", GROUP, READS)
