"""`rujukan status`: the whole system in one table, from Redis only (REDIS_URL).

Per service (its consumer group): its consumers (one per replica) and how long each has been
idle, the lag (entries not yet read) and pending entries (read, not acknowledged) over its
streams, its dead letters, the age of the oldest pending entry on an urgent lane (a
crisis waiting), and for notify its deliveries given up on in the last 24 hours (mail and
the other channels; notify tallies them per hour in Redis, as the `notification.failed`
events leave their stream once intake has read them: a count, nothing of a delivery).
Colours: green all clear, yellow work waiting, red what needs an operator."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated, Any

import redis.asyncio as aioredis
import typer
from redis.exceptions import ResponseError
from rich.console import Console, Group
from rich.table import Column, Table

from shared.streams.topology import TOPOLOGY, dead_letter_stream, decoded, is_urgent_lane

# An urgent entry pending longer than this is red: a crisis waits for nobody.
URGENT_PENDING_ALERT_S = 60.0
# The service that delivers; its failures count over the current hour and the 23 before it,
# one key an hour, each kept a little longer than that.
DELIVERING = "notify"
FAILED_DELIVERIES_KEY = "rujukan:notify:deliveries_failed:"
FAILED_WITHIN_H = 24


def _hour_key(at_s: float) -> str:
    return FAILED_DELIVERIES_KEY + time.strftime("%Y%m%d%H", time.gmtime(at_s))


async def tally_failed_deliveries(redis: aioredis.Redis, count: int, at_s: float | None = None) -> None:
    """Add deliveries given up on to this hour's tally (notify, once they are recorded)."""
    key = _hour_key(time.time() if at_s is None else at_s)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.incrby(key, count)
        pipe.expire(key, (FAILED_WITHIN_H + 1) * 3600)
        await pipe.execute()


async def failed_deliveries(redis: aioredis.Redis, now_s: float) -> int:
    """The deliveries given up on in the current hour and the 23 before it."""
    counts: Any = await redis.mget([_hour_key(now_s - h * 3600) for h in range(FAILED_WITHIN_H)])
    return sum(int(c) for c in counts if c is not None)


async def system_status(redis: aioredis.Redis, topology: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """One row per consumer group: consumers {name: idle ms}, lag, pending, dead letters,
    the oldest pending urgent entry's age in seconds (None when none), missing streams and
    failed deliveries in the last 24 hours (None for a service that delivers nothing)."""
    now_ms = time.time() * 1000
    rows = []
    for group, streams in (topology or TOPOLOGY).items():
        row: dict[str, Any] = {"group": group, "consumers": {}, "lag": 0, "pending": 0, "unknown_lag": False,
                               "dead_letters": int(await redis.xlen(dead_letter_stream(group))),
                               "oldest_urgent_s": None, "missing": [],
                               "failed_deliveries": None}
        if group == DELIVERING:
            row["failed_deliveries"] = await failed_deliveries(redis, now_ms / 1000)
        for stream in streams:
            try:
                groups: Any = await redis.xinfo_groups(stream)
            except ResponseError:  # the stream does not exist yet
                groups = []
            mine = [g for g in groups if decoded(g["name"]) == group]
            if not mine:
                row["missing"].append(stream)
                continue
            g = mine[0]
            row["pending"] += int(g["pending"])
            if g.get("lag") is None:
                row["unknown_lag"] = True  # Redis cannot tell (entries trimmed or deleted)
            else:
                row["lag"] += int(g["lag"])
            consumers: Any = await redis.xinfo_consumers(stream, group)
            for c in consumers:
                name, idle = decoded(c["name"]), int(c["idle"])
                row["consumers"][name] = min(idle, row["consumers"].get(name, idle))
            if is_urgent_lane(stream) and int(g["pending"]):
                summary: Any = await redis.xpending(stream, group)
                oldest = decoded(summary["min"])
                age = max(now_ms - int(oldest.split("-")[0]), 0) / 1000
                row["oldest_urgent_s"] = max(age, row["oldest_urgent_s"] or 0)
        rows.append(row)
    return rows


def status_table(rows: list[dict[str, Any]]) -> Group:
    """The figures, one row a service (fits 80 columns: headers wrap at their spaces), then
    each service's consumers (one per replica) by name with how long each has been idle."""
    table = Table(Column("service", no_wrap=True), "replicas", "lag", "pending", "dead letters",
                  "oldest crisis pending", "failed (24h)", title="Rujukan: the system at a glance",
                  caption="failed (24h): the deliveries notify gave up on in the last 24 hours")
    replicas = Table(Column("service", no_wrap=True), Column("consumer", overflow="fold"), "idle",
                     title="Consumers (one a replica)")
    for r in rows:
        count = len(r["consumers"])
        for name, idle in sorted(r["consumers"].items()):
            replicas.add_row(r["group"], name, f"{idle / 1000:.1f}s")
        if r["missing"]:
            replicas.add_row(r["group"], f"[red]no group on {len(r['missing'])} stream(s)[/red]", "")
        lag = f"{r['lag']}{'+?' if r['unknown_lag'] else ''}"
        urgent = r["oldest_urgent_s"]
        if urgent is None:
            oldest = "[green]none[/green]"
        else:
            oldest = f"[{'red' if urgent > URGENT_PENDING_ALERT_S else 'yellow'}]{urgent:.0f}s[/]"
        failed = r["failed_deliveries"]
        failing = "" if failed is None else f"[{'red' if failed else 'green'}]{failed}[/]"
        table.add_row(
            r["group"], f"[{'green' if count and not r['missing'] else 'red'}]{count}[/]",
            f"[{'yellow' if r['lag'] or r['unknown_lag'] else 'green'}]{lag}[/]",
            f"[{'yellow' if r['pending'] else 'green'}]{r['pending']}[/]",
            f"[{'red' if r['dead_letters'] else 'green'}]{r['dead_letters']}[/]",
            oldest, failing,
        )
    return Group(table, replicas)


def status(
    redis_url: Annotated[str, typer.Option(envvar="REDIS_URL", help="the Redis the services share")]
    = "redis://127.0.0.1:6379/0",
) -> None:
    """The whole system in one table (per service: replicas, lag, pending, dead letters, the
    oldest pending crisis, notify's failed deliveries of the last 24 hours), from Redis only."""
    from shared.streams.topology import connect

    async def main() -> list[dict[str, Any]]:
        redis = connect(redis_url)
        try:
            return await asyncio.wait_for(system_status(redis), 30)
        finally:
            await redis.aclose()

    console = Console()
    try:
        rows = asyncio.run(main())
    except Exception as e:
        console.print(f"[red]Redis did not answer: {type(e).__name__}[/red]")  # no URL: it holds a password
        raise typer.Exit(1) from None
    console.print(status_table(rows))
