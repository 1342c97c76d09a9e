"""The committed AsyncAPI documents (docs/asyncapi/) are what the code declares today: a
service that reads a new stream or event type without `make asyncapi` fails here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from intake.entrypoints import streams as intake_streams
from matching.entrypoints import streams as matching_streams
from notify.entrypoints import streams as notify_streams
from shared.streams.asyncapi import document
from shared.streams.topology import TOPOLOGY, replay_stream

DOCS = Path(__file__).resolve().parents[2] / "docs" / "asyncapi"
SERVICES = {"intake": intake_streams, "matching": matching_streams, "notify": notify_streams}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_the_committed_document_is_current(service: str) -> None:
    streams = SERVICES[service]
    committed = json.loads((DOCS / f"{service}.json").read_text())
    assert committed == document(service, streams.GROUP, streams.READS), f"run `make asyncapi` ({service})"


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_stream_the_group_reads_is_a_channel_typed_with_its_events(service: str) -> None:
    streams = SERVICES[service]
    doc = document(service, streams.GROUP, streams.READS)
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {*TOPOLOGY[streams.GROUP], replay_stream(streams.GROUP)}
    schemas = doc["components"]["schemas"]
    for event_type in streams.READS:
        envelope = schemas[f"{event_type.__name__}Event"]
        assert envelope["properties"]["type"]["const"] == event_type.TYPE
        assert envelope["properties"]["data"] == {"$ref": f"#/components/schemas/{event_type.__name__}"}
