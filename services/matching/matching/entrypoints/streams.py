"""What matching reads from the streams, in one place: its consumer group (the streams it reads,
urgent lanes first, are `TOPOLOGY["matching"]` in shared/streams/topology.py) and, by exact
event type, the use case that answers each event (`HANDLERS`). An event of any other type
on those streams is acknowledged and ignored; one that does not parse is dead-lettered.
docs/asyncapi/matching.json is generated from this."""

from __future__ import annotations

from faststream import FastStream

from matching.service_layer.handlers import HANDLERS, Matching
from shared.streams.asyncapi import docs_app
from shared.streams.consumer import BatchHandler

GROUP = "matching"
READS = tuple(HANDLERS)

__all__ = ["GROUP", "HANDLERS", "READS", "asyncapi", "batch_handler"]


def batch_handler(matching: Matching) -> BatchHandler:
    """Each batch is applied in one transaction, each event once (the inbox table)."""
    return matching.handle


def asyncapi() -> FastStream:
    """`faststream docs gen --factory matching.entrypoints.streams:asyncapi` (make asyncapi)."""
    return docs_app("matching", GROUP, READS)
