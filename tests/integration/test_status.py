"""`rujukan status` against a real Redis: per service its consumers, lag, pending, dead
letters, the oldest pending crisis and notify's failed deliveries of the last day, as the
streams really stand, and notify's tally of deliveries given up on; colour on a terminal."""

from __future__ import annotations

import asyncio
import io
import time
from functools import partial
from typing import Any

import redis.asyncio as aioredis
from rich.console import Console
from typer.testing import CliRunner

from devtools.redis_server import free_port
from intake.operator_cli import app as cli
from shared.status import status_table, system_status, tally_failed_deliveries
from shared.streams.topology import SUBMITTED, SUBMITTED_URGENT, dead_letter_stream, provision


async def a_crisis_waits_and_a_letter_died(redis: Any) -> None:
    await provision(redis)
    await redis.xadd(SUBMITTED_URGENT, {"envelope": "{}"})
    # A replica of matching read the crisis and has not acknowledged it.
    await redis.xreadgroup("matching", "matching-r1", {SUBMITTED_URGENT: ">"}, count=1)
    await redis.xadd(SUBMITTED, {"envelope": "{}"})
    await redis.xadd(SUBMITTED, {"envelope": "{}"})  # two routine entries nobody read yet
    await redis.xadd(dead_letter_stream("notify"), {"envelope": "{}"})


async def test_status_counts_what_the_streams_hold(redis: Any) -> None:
    await a_crisis_waits_and_a_letter_died(redis)
    await asyncio.sleep(0.05)
    rows = {r["group"]: r for r in await system_status(redis)}
    assert set(rows) == {"intake", "matching", "notify"}
    m = rows["matching"]
    assert list(m["consumers"]) == ["matching-r1"]
    assert m["pending"] == 1
    assert m["lag"] == 2
    assert m["dead_letters"] == 0
    assert 0 < m["oldest_urgent_s"] < 60
    assert m["missing"] == []
    n = rows["notify"]
    assert n["dead_letters"] == 1
    assert n["consumers"] == {}
    assert n["pending"] == 0
    assert n["oldest_urgent_s"] is None

    out = io.StringIO()
    Console(file=out, force_terminal=True, width=200, color_system="standard").print(status_table(list(rows.values())))
    text = out.getvalue()
    assert "\x1b[31m" in text  # red: a dead letter, services with no consumer
    assert "matching-r1" in text


async def test_an_old_crisis_is_red_and_an_unprovisioned_redis_says_so(redis: Any) -> None:
    old = int(time.time() * 1000) - 120_000
    await provision(redis)
    await redis.xadd(SUBMITTED_URGENT, {"envelope": "{}"}, id=f"{old}-0")
    await redis.xreadgroup("matching", "matching-r1", {SUBMITTED_URGENT: ">"}, count=1)
    rows = {r["group"]: r for r in await system_status(redis)}
    assert rows["matching"]["oldest_urgent_s"] >= 119
    out = io.StringIO()
    Console(file=out, force_terminal=True, width=200, color_system="standard").print(status_table([rows["matching"]]))
    assert "\x1b[31m120s" in out.getvalue() or "\x1b[31m121s" in out.getvalue()

    await redis.flushdb()
    rows = {r["group"]: r for r in await system_status(redis)}
    assert rows["intake"]["missing"]  # no group provisioned: named, not a crash


async def test_the_command_prints_one_table_and_exits_0(redis: Any, redis_url: str) -> None:
    await a_crisis_waits_and_a_letter_died(redis)
    # An 80-column terminal: every header whole (wrapped at its spaces), every name whole.
    res = await asyncio.to_thread(CliRunner().invoke, cli, ["status"], env={"REDIS_URL": redis_url, "COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    assert max(len(line) for line in res.output.splitlines()) <= 80
    assert "…" not in res.output  # nothing cut short
    words = res.output.split()
    for name in ("intake", "matching", "notify", "matching-r1", "replicas", "lag", "pending", "dead", "letters",
                 "oldest", "crisis", "failed", "(24h)"):
        assert name in words, name
    long_name = "matching-" + "7f3a9c1b0e7d" * 6  # a long consumer name folds, whole
    await redis.xreadgroup("matching", long_name, {SUBMITTED: ">"}, count=1)
    res = await asyncio.to_thread(CliRunner().invoke, cli, ["status"], env={"REDIS_URL": redis_url, "COLUMNS": "80"})
    consumer_cells = [line.split("│")[2].strip() for line in res.output.splitlines()
                      if line.count("│") == 4 and "7f3a" in line]  # the consumers table's second column
    assert "".join(consumer_cells) == long_name


async def test_an_unreachable_redis_is_said_without_its_password() -> None:
    url = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"
    res = await asyncio.to_thread(CliRunner().invoke, cli, ["status"], env={"REDIS_URL": url})
    assert res.exit_code == 1
    assert "Redis did not answer" in res.output
    assert "s3cret-pw" not in res.output


def painted(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    Console(file=out, force_terminal=True, width=220, color_system="standard").print(status_table(rows))
    return out.getvalue()


async def test_no_failed_delivery_counts_0_in_green(redis: Any) -> None:
    await provision(redis)
    rows = {r["group"]: r for r in await system_status(redis)}
    assert rows["notify"]["failed_deliveries"] == 0
    assert rows["intake"]["failed_deliveries"] is None  # delivers nothing: no figure
    assert rows["matching"]["failed_deliveries"] is None
    assert "\x1b[32m0\x1b[0m" in painted([rows["notify"]])


async def test_deliveries_given_up_in_the_last_day_count_in_red_and_older_ones_do_not(
        redis: Any, redis_url: str) -> None:
    await provision(redis)
    now = time.time()
    await tally_failed_deliveries(redis, 4, at_s=now - 25 * 3600)  # over a day ago
    await tally_failed_deliveries(redis, 1, at_s=now - 23 * 3600)
    await tally_failed_deliveries(redis, 2)
    await tally_failed_deliveries(redis, 1)  # the same hour: added up
    rows = {r["group"]: r for r in await system_status(redis)}
    assert rows["notify"]["failed_deliveries"] == 4  # the day-old 4 are not counted
    assert "\x1b[31m4\x1b[0m" in painted([rows["notify"]])
    # Each hour's tally goes away by itself once out of the window.
    keys = [k async for k in redis.scan_iter(match="rujukan:notify:deliveries_failed:*")]
    assert len(keys) == 3
    assert all(0 < ttl <= 25 * 3600 for ttl in [await redis.ttl(k) for k in keys])

    res = await asyncio.to_thread(CliRunner().invoke, cli, ["status"], env={"REDIS_URL": redis_url})
    assert res.exit_code == 0, res.output
    assert "deliveries notify gave up on" in res.output


async def test_notify_tallies_what_it_gives_up_on_in_the_redis_status_reads(redis: Any, redis_url: str) -> None:
    # As notify's bootstrap wires it: its rounds tell this tally once a failure is recorded.
    from notify.service_layer.failures import tally_given_up
    await provision(redis)
    await tally_given_up(partial(tally_failed_deliveries, redis), 3)
    await tally_given_up(partial(tally_failed_deliveries, redis), 0)  # nothing given up: nothing written
    rows = {r["group"]: r for r in await system_status(redis)}
    assert rows["notify"]["failed_deliveries"] == 3
    # Redis away: the round goes on, only the count is lost (and said, without an address).
    away = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
    await tally_given_up(partial(tally_failed_deliveries, away), 2)
    await away.aclose()
