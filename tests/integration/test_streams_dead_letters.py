"""Dead letters from the operator's side: listed, inspected and replayed over HTTP (every
service's /v1/ops) and from the `rujukan` CLI, each action audited; a dead letter replayed
as it was goes all the way (decision, seat, email, timeline), one whose event does not parse
is never replayed, and nothing an operator sends takes its place. Runs on its own
redis-server (the services read the real stream names)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner

from devtools.mailcatcher import MailCatcher
from devtools.redis_server import RedisProcess, free_port
from intake.bootstrap import create_app as intake_app
from intake.operator_cli import app as cli
from intake.settings import Settings as IntakeSettings
from matching.bootstrap import MIGRATIONS as MATCHING_MIGRATIONS
from matching.bootstrap import create_app as matching_app
from matching.settings import Settings as MatchingSettings
from notify.bootstrap import create_app as notify_app
from notify.settings import Settings as NotifySettings
from shared.db import upgrade
from shared.events import Envelope
from shared.streams.consumer import Message, StreamConsumer
from shared.streams.topology import SUBMITTED, dead_letter_stream, provision, replay_stream
from tests.apps import DEMO_KEY, OPERATIONS_KEY, OPERATOR_KEYS, TEST_KEYS, eventually, running
from tests.integration.test_streams import submitted
from tests.unit.test_referral_request import VALID

ADMIN = {"Authorization": f"Bearer {OPERATIONS_KEY}"}
AGENCY = {"Authorization": f"Bearer {DEMO_KEY}"}


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(free_port(), tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(own_redis: RedisProcess) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(own_redis.url, decode_responses=True)
    yield client
    await client.aclose()


def settings(tmp_path: Path, redis_url: str, smtp_url: str) -> dict[str, Any]:
    common: dict[str, Any] = dict(redis_url=redis_url, operator_keys=OPERATOR_KEYS, outbox_poll_interval_s=0.2,
                                  stream_block_ms=100)
    return {
        "intake": IntakeSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'intake.db'}",
                                 encryption_keys=TEST_KEYS, demo_api_key=DEMO_KEY, **common),
        "matching": MatchingSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'matching.db'}",
                                     seed_demo=True, **common),
        "notify": NotifySettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'notify.db'}", smtp_url=smtp_url,
                                 mail_poll_interval_s=0.2, **common),
    }


async def test_a_dead_letter_replayed_as_it_was_over_http_goes_all_the_way(
    tmp_path: Path, own_redis: RedisProcess, redis: aioredis.Redis, mailbox: MailCatcher
) -> None:
    conf = settings(tmp_path, own_redis.url, mailbox.url)
    async with running(intake_app(conf["intake"])) as intake:
        r = await intake.post("/v1/referrals", json=VALID, headers=AGENCY)
        assert r.status_code == 202
        rid = r.json()["id"]

        async def published() -> list[Any]:
            return list(await redis.xrange(SUBMITTED))

        [(entry_id, fields)] = await eventually(published)
        # Matching failed on it for a reason since fixed (a bug, a dependency away) until
        # its last delivery dead-lettered it: its event is sound.
        await redis.xreadgroup("matching", "before-the-fix", {SUBMITTED: ">"}, count=1)
        before_the_fix = StreamConsumer(redis, group="matching", consumer="before-the-fix", streams=[SUBMITTED],
                                        handler=None, block_ms=100)
        assert await before_the_fix.dead_letter(SUBMITTED, entry_id, fields, "RuntimeError: a bug since fixed", 5)
        # Another event is damaged on its way (a producer bug): it must never be decided on.
        damaged = submitted().model_dump(mode="json")
        damaged["data"]["age_band"] = "tiga puluh"
        await redis.xadd(SUBMITTED, {"type": damaged["type"], "event": json.dumps(damaged)})

        async with running(matching_app(conf["matching"])) as matching, running(notify_app(conf["notify"])) as notify:
            async def letters() -> list[Any] | None:
                res = (await matching.get("/v1/ops/dead-letters", headers=ADMIN)).json()["items"]
                return list(res) if len(res) == 2 else None

            sound, broken = await eventually(letters)
            assert sound["group"] == "matching"
            assert sound["stream"] == SUBMITTED
            assert sound["event"]["subject"] == rid
            assert "age_band" in broken["error"]
            assert broken["event"]["id"] == damaged["id"]

            # Every service shows the same dead letters; none without the operations key.
            shown = await notify.get(f"/v1/ops/dead-letters/{sound['id']}", headers=ADMIN)
            assert shown.json()["id"] == sound["id"]
            assert (await intake.get("/v1/ops/dead-letters")).status_code == 401
            assert (await intake.get("/v1/ops/dead-letters", headers=AGENCY)).status_code == 401
            assert (await matching.get("/v1/ops/dead-letters/1-1", headers=ADMIN)).status_code == 404
            for bad_id in ("abc", "1-1-1", "-", "1" * 30 + "-0"):
                assert (await matching.get(f"/v1/ops/dead-letters/{bad_id}", headers=ADMIN)).status_code == 422
                assert (await matching.post(f"/v1/ops/dead-letters/{bad_id}/replay", headers=ADMIN)).status_code == 422
            bad_group = await matching.get("/v1/ops/dead-letters", params={"group": "nobody"}, headers=ADMIN)
            assert bad_group.status_code == 422
            assert bad_group.json()["errors"][0]["field"] == "group"

            # The damaged one would only fail again: refused with the reason, and no body an
            # operator sends takes its place (an operator never puts an event of their own
            # making on a stream).
            repaired = dict(damaged, data=dict(damaged["data"], age_band="30-34"))
            for body in (None, {"event": repaired}):
                r = await matching.post(f"/v1/ops/dead-letters/{broken['id']}/replay", json=body, headers=ADMIN)
                assert r.status_code == 422
                assert r.json()["errors"][0]["field"] == "event"
                assert "age_band" in r.json()["errors"][0]["reason"]
            assert (await matching.get(f"/v1/ops/dead-letters/{broken['id']}", headers=ADMIN)).status_code == 200

            r = await matching.post(f"/v1/ops/dead-letters/{sound['id']}/replay", headers=ADMIN)
            assert r.status_code == 202, r.text
            assert r.json()["group"] == "matching"

            async def notified() -> dict[str, Any] | None:
                view = (await intake.get(f"/v1/referrals/{rid}", headers=AGENCY)).json()
                done = view["status"] == "proposed" and any(t["kind"] == "notified" for t in view["timeline"])
                return view if done else None

            view = await eventually(notified, timeout=30)
            deliveries = (await notify.get("/v1/deliveries", params={"referral_id": rid}, headers=ADMIN)).json()
            [delivery] = deliveries["items"]
            mails = [m for m in mailbox.messages() if m["Message-ID"] == f"<{delivery['id']}@rujukan>"]
            assert len(mails) == 1
            assert [t["kind"] for t in view["timeline"]].count("proposed") == 1
            assert await redis.xlen(dead_letter_stream("matching")) == 1  # the damaged one, to discard
            report = (await notify.get("/v1/ops/streams", headers=ADMIN)).json()
            assert {g["group"]: g["dead_letters"] for g in report["groups"]}["matching"] == 1


async def test_cli_lists_shows_replays_and_discards_with_an_audit_entry_each(
    tmp_path: Path, own_redis: RedisProcess, redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    await provision(redis)
    event = submitted()
    broken = event.model_dump(mode="json")
    del broken["data"]["gender"]
    await redis.xadd(SUBMITTED, {"type": event.type, "event": json.dumps(broken)})
    await redis.xadd(SUBMITTED, {"type": event.type, "event": "{\"id\": "})
    got: list[Message] = []

    async def handler(ms: list[Message]) -> None:
        got.extend(ms)

    consumer = StreamConsumer(redis, group="matching", consumer="cli-test", streams=[SUBMITTED], handler=handler,
                              block_ms=100)
    await consumer._read_once()
    assert await redis.xlen(dead_letter_stream("matching")) == 2
    # A sound one failed for a reason since fixed (a bug, a dependency away) until its
    # last delivery dead-lettered it.
    sound = submitted()
    await redis.xadd(SUBMITTED, {"type": sound.type, "event": sound.model_dump_json()})
    [(_, [(sound_entry, sound_fields)])] = await redis.xreadgroup("matching", "cli-test", {SUBMITTED: ">"})
    assert await consumer.dead_letter(SUBMITTED, sound_entry, sound_fields, "RuntimeError: a bug since fixed", 5)
    got.clear()

    # The command line records its actions in the audit log of the service whose database
    # DATABASE_URL names (matching's here).
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'matching.db'}"
    await upgrade(database_url, MATCHING_MIGRATIONS)
    monkeypatch.setenv("REDIS_URL", own_redis.url)
    monkeypatch.setenv("RUJUKAN_OPERATOR", "budi")
    runner = CliRunner()

    def invoke(*args: str, audited: bool = True) -> Any:  # the CLI runs its own event loop: give it a thread
        env = {"DATABASE_URL": database_url} if audited else {"DATABASE_URL": None}
        return asyncio.to_thread(runner.invoke, cli, list(args), env=env)

    listed = await invoke("dead-letters", "list", "--json")
    assert listed.exit_code == 0, listed.output
    items = json.loads(listed.output)
    assert [i["group"] for i in items] == ["matching", "matching", "matching"]
    invalid, malformed, fixed = items
    assert "gender" in invalid["error"]
    assert malformed["error"].startswith("malformed JSON")

    shown = await invoke("dead-letters", "show", invalid["id"], "--group", "matching")
    assert shown.exit_code == 0
    assert json.loads(shown.output)["event"]["id"] == event.id
    assert (await invoke("dead-letters", "show", "1-1")).exit_code == 1
    assert (await invoke("dead-letters", "show", "abc")).exit_code == 2  # not an id: a usage error, no traceback
    assert (await invoke("dead-letters", "list", "--group", "nobody")).exit_code == 2

    # What does not parse would only fail again: refused, and there is no way to give a
    # repaired event instead.
    refused = await invoke("dead-letters", "replay", invalid["id"])
    assert refused.exit_code == 2
    assert "discard" in refused.output
    repaired = tmp_path / "repaired.json"
    repaired.write_text(event.model_dump_json())
    assert (await invoke("dead-letters", "replay", invalid["id"], "--event-file", str(repaired))).exit_code == 2
    # Changing something is never unrecorded: refused without DATABASE_URL.
    assert (await invoke("dead-letters", "replay", fixed["id"], audited=False)).exit_code == 2
    done = await invoke("dead-letters", "replay", fixed["id"])
    assert done.exit_code == 0, done.output
    await consumer._read_once()
    assert [(m.envelope.id, m.stream) for m in got] == [(sound.id, replay_stream("matching"))]
    assert Envelope.model_validate(sound.model_dump()).id == got[0].envelope.id

    for letter in (invalid, malformed):
        assert (await invoke("dead-letters", "discard", letter["id"], "--group", "matching")).exit_code == 0
    assert await redis.xlen(dead_letter_stream("matching")) == 0
    streams = await invoke("streams", "--json")
    assert streams.exit_code == 0
    report = json.loads(streams.output)
    assert {g["group"]: g["counters"].get("dead_lettered") for g in report["groups"]}["matching"] == 3

    log = await invoke("audit", "--operator", "budi", "--json")
    assert log.exit_code == 0, log.output
    seen = [(e["action"], e["target"].get("dead_id"), e["status"]) for e in json.loads(log.output)]
    assert seen == [
        ("dead-letters list", None, 200), ("dead-letters show", invalid["id"], 200),
        ("dead-letters show", "1-1", 404), ("dead-letters replay", invalid["id"], 422),
        ("dead-letters replay", fixed["id"], 200), ("dead-letters discard", invalid["id"], 200),
        ("dead-letters discard", malformed["id"], 200), ("streams", None, 200),
    ]
    assert all(e["role"] == "cli" and e["operator"] == "budi" for e in json.loads(log.output))
