"""`rujukan status` against a real Redis: per service its consumers, lag, pending, dead
letters, the oldest pending crisis and notify's failed deliveries of the last day, as the
streams really stand; colour on a terminal."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Any

from rich.console import Console
from typer.testing import CliRunner

from devtools.redis_server import free_port
from intake.operator_cli import app as cli
from shared.events import Envelope, NotificationFailed, NotificationSent
from shared.status import _PAGE, status_table, system_status
from shared.streams.topology import NOTIFICATIONS, SUBMITTED, SUBMITTED_URGENT, dead_letter_stream, provision


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
    # A terminal wide enough for every header on one line (on 80 columns they wrap).
    res = await asyncio.to_thread(CliRunner().invoke, cli, ["status"], env={"REDIS_URL": redis_url, "COLUMNS": "160"})
    assert res.exit_code == 0, res.output
    for name in ("intake", "matching", "notify", "matching-r1", "dead letters", "failed (24h)"):
        assert name in res.output


async def test_an_unreachable_redis_is_said_without_its_password() -> None:
    url = f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0"
    res = await asyncio.to_thread(CliRunner().invoke, cli, ["status"], env={"REDIS_URL": url})
    assert res.exit_code == 1
    assert "Redis did not answer" in res.output
    assert "s3cret-pw" not in res.output


def delivery_outcome(data: type[NotificationSent] | type[NotificationFailed], **over: Any) -> dict[str, str]:
    fields: dict[str, Any] = dict(referral_id="R-FAIL-1", delivery_id="D-1", decision_id="DEC-1", receiver_id="RCV-1")
    if data is NotificationFailed:
        fields["reason"] = "550 no mailbox siti@example.org"  # a relay's words may name an address
    return Envelope.wrap(data(**{**fields, **over}), source="notify", subject="R-FAIL-1").to_fields()


def painted(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    Console(file=out, force_terminal=True, width=220, color_system="standard").print(status_table(rows))
    return out.getvalue()


async def test_no_failed_delivery_counts_0_in_green(redis: Any) -> None:
    await provision(redis)
    await redis.xadd(NOTIFICATIONS, delivery_outcome(NotificationSent))  # a delivery that went out
    rows = {r["group"]: r for r in await system_status(redis)}
    assert rows["notify"]["failed_deliveries"] == 0
    assert rows["intake"]["failed_deliveries"] is None  # delivers nothing: no figure
    assert rows["matching"]["failed_deliveries"] is None
    assert "\x1b[32m0\x1b[0m" in painted([rows["notify"]])


async def test_failed_deliveries_of_the_last_day_count_in_red_and_older_ones_do_not(
        redis: Any, redis_url: str) -> None:
    await provision(redis)
    day_and_a_minute_ago = int(time.time() * 1000) - (24 * 3600 + 60) * 1000
    await redis.xadd(NOTIFICATIONS, delivery_outcome(NotificationFailed, delivery_id="D-old"),
                     id=f"{day_and_a_minute_ago}-0")
    await redis.xadd(NOTIFICATIONS, delivery_outcome(NotificationSent))
    await redis.xadd(NOTIFICATIONS, delivery_outcome(NotificationFailed, delivery_id="D-2"))
    await redis.xadd(NOTIFICATIONS, delivery_outcome(NotificationFailed, delivery_id="D-3", channel="webhook"))
    rows = {r["group"]: r for r in await system_status(redis)}
    assert rows["notify"]["failed_deliveries"] == 2  # the day-old one is not counted
    assert "\x1b[31m2\x1b[0m" in painted([rows["notify"]])

    res = await asyncio.to_thread(CliRunner().invoke, cli, ["status"], env={"REDIS_URL": redis_url})
    assert res.exit_code == 0, res.output
    assert "deliveries notify could not make" in res.output
    # A count only: nothing of the events themselves.
    for secret in ("R-FAIL-1", "D-2", "RCV-1", "siti@example.org", "550"):
        assert secret not in res.output


async def test_failed_deliveries_are_counted_across_pages(redis: Any) -> None:
    await provision(redis)
    pipe = redis.pipeline(transaction=False)
    for i in range(_PAGE + 5):
        pipe.xadd(NOTIFICATIONS, delivery_outcome(NotificationFailed if i % 2 else NotificationSent))
    await pipe.execute()
    rows = {r["group"]: r for r in await system_status(redis)}
    assert rows["notify"]["failed_deliveries"] == (_PAGE + 5) // 2
