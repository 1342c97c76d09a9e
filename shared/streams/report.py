"""What an operator looks at: streams, groups, pending entries, lag, dead letters, counters."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from shared.streams.topology import TOPOLOGY, dead_letter_stream, decoded, stats_key, stream_groups


async def stream_report(redis: aioredis.Redis, topology: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """What an operator looks at: each stream's length and, per group, pending entries,
    lag and consumers; each group's dead letters and counters."""
    streams: list[dict[str, Any]] = []
    for stream, expected in stream_groups(topology).items():
        row: dict[str, Any] = {"stream": stream, "length": int(await redis.xlen(stream)), "groups": []}
        try:
            groups: Any = await redis.xinfo_groups(stream)
        except ResponseError:
            groups = []
        for g in groups:
            row["groups"].append({
                "name": decoded(g["name"]), "pending": int(g["pending"]), "consumers": int(g["consumers"]),
                "last_delivered_id": decoded(g["last-delivered-id"]),
                "lag": None if g.get("lag") is None else int(g["lag"]),
            })
        row["missing_groups"] = sorted(set(expected) - {g["name"] for g in row["groups"]})
        streams.append(row)
    groups_out = []
    for group in topology or TOPOLOGY:
        raw: Any = await redis.hgetall(stats_key(group))
        groups_out.append({
            "group": group, "dead_letters": int(await redis.xlen(dead_letter_stream(group))),
            "counters": {decoded(k): int(v) for k, v in raw.items()},
        })
    return {"streams": streams, "groups": groups_out}
