"""Dead letters from the operator's side: listed, inspected and replayed over HTTP (every
service's /v1/ops) and from the `rujukan` CLI; a repaired event replayed goes all the way:
decision, seat, email, timeline. Runs on its own redis-server (the services read the real
stream names)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner

from intake.bootstrap import create_app as intake_app
from intake.settings import Settings as IntakeSettings
from matching.bootstrap import create_app as matching_app
from matching.settings import Settings as MatchingSettings
from notify.bootstrap import create_app as notify_app
from notify.settings import Settings as NotifySettings
from shared.cli import app as cli
from shared.events import Envelope
from shared.mailcatcher import MailCatcher
from shared.redis_server import RedisProcess, free_port
from shared.streams import SUBMITTED, Message, StreamConsumer, dead_letter_stream, provision, replay_stream
from tests.apps import ADMIN_KEY, DEMO_KEY, TEST_KEYS, eventually, running
from tests.integration.test_streams import submitted
from tests.unit.test_referral_request import VALID

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
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
    common: dict[str, Any] = dict(redis_url=redis_url, admin_api_key=ADMIN_KEY, outbox_poll_interval_s=0.2,
                                  stream_block_ms=100)
    return {
        "intake": IntakeSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'intake.db'}",
                                 encryption_keys=TEST_KEYS, demo_api_key=DEMO_KEY, **common),
        "matching": MatchingSettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'matching.db'}",
                                     seed_demo=True, **common),
        "notify": NotifySettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'notify.db'}", smtp_url=smtp_url,
                                 mail_poll_interval_s=0.2, **common),
    }


async def test_a_repaired_event_replayed_over_http_goes_all_the_way(
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
        # The event is damaged on its way (a producer bug): matching must not decide on it.
        broken = json.loads(fields["event"])
        good_band = broken["data"]["age_band"]
        broken["data"]["age_band"] = "tiga puluh"
        await redis.xdel(SUBMITTED, entry_id)
        await redis.xadd(SUBMITTED, {"type": broken["type"], "event": json.dumps(broken)})

        async with running(matching_app(conf["matching"])) as matching, running(notify_app(conf["notify"])) as notify:
            async def letters() -> list[Any]:
                res = (await matching.get("/v1/ops/dead-letters", headers=ADMIN)).json()["items"]
                return list(res)

            [letter] = await eventually(letters)
            assert letter["group"] == "matching" and letter["stream"] == SUBMITTED
            assert "age_band" in letter["error"] and letter["event"]["id"] == broken["id"]

            # Every service shows the same dead letters; none without the operator's key.
            shown = await notify.get(f"/v1/ops/dead-letters/{letter['id']}", headers=ADMIN)
            assert shown.json()["id"] == letter["id"]
            assert (await intake.get("/v1/ops/dead-letters")).status_code == 401
            assert (await intake.get("/v1/ops/dead-letters", headers=AGENCY)).status_code == 401
            assert (await matching.get("/v1/ops/dead-letters/1-1", headers=ADMIN)).status_code == 404
            bad_group = await matching.get("/v1/ops/dead-letters", params={"group": "nobody"}, headers=ADMIN)
            assert bad_group.status_code == 422 and bad_group.json()["errors"][0]["field"] == "group"

            # Replaying as it was cannot help: refused with the reason.
            as_is = await matching.post(f"/v1/ops/dead-letters/{letter['id']}/replay", headers=ADMIN)
            assert as_is.status_code == 422
            assert as_is.json()["errors"][0]["field"] == "event" and "age_band" in as_is.json()["errors"][0]["reason"]
            # A repair that is still wrong is refused too, and the letter stays.
            still = dict(broken, data=dict(broken["data"], urgency="whenever"))
            still["data"]["age_band"] = good_band
            r = await matching.post(f"/v1/ops/dead-letters/{letter['id']}/replay", json={"event": still},
                                    headers=ADMIN)
            assert r.status_code == 422 and "urgency" in r.json()["errors"][0]["reason"]

            repaired = dict(broken, data=dict(broken["data"], age_band=good_band))
            r = await matching.post(f"/v1/ops/dead-letters/{letter['id']}/replay", json={"event": repaired},
                                    headers=ADMIN)
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
            assert await redis.xlen(dead_letter_stream("matching")) == 0
            report = (await notify.get("/v1/ops/streams", headers=ADMIN)).json()
            assert {g["group"]: g["dead_letters"] for g in report["groups"]}["matching"] == 0


async def test_cli_lists_shows_and_replays_a_repaired_event(
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

    monkeypatch.setenv("REDIS_URL", own_redis.url)
    runner = CliRunner()

    def invoke(*args: str) -> Any:  # the CLI runs its own event loop: give it a thread
        return asyncio.to_thread(runner.invoke, cli, list(args))
    listed = await invoke("dead-letters", "list", "--json")
    assert listed.exit_code == 0, listed.output
    items = json.loads(listed.output)
    assert [i["group"] for i in items] == ["matching", "matching"]
    invalid, malformed = items
    assert "gender" in invalid["error"] and malformed["error"].startswith("malformed JSON")

    shown = await invoke("dead-letters", "show", invalid["id"], "--group", "matching")
    assert shown.exit_code == 0 and json.loads(shown.output)["event"]["id"] == event.id
    assert (await invoke("dead-letters", "show", "1-1")).exit_code == 1
    assert (await invoke("dead-letters", "list", "--group", "nobody")).exit_code == 2

    # As is, it would only fail again: refused.
    refused = await invoke("dead-letters", "replay", invalid["id"])
    assert refused.exit_code == 2 and "event-file" in refused.output
    repaired = tmp_path / "repaired.json"
    repaired.write_text(event.model_dump_json())
    done = await invoke("dead-letters", "replay", invalid["id"], "--event-file", str(repaired))
    assert done.exit_code == 0, done.output
    await consumer._read_once()
    assert [(m.envelope.id, m.stream) for m in got] == [(event.id, replay_stream("matching"))]
    assert Envelope.model_validate(event.model_dump()).id == got[0].envelope.id

    assert (await invoke("dead-letters", "discard", malformed["id"], "--group", "matching")).exit_code == 0
    assert await redis.xlen(dead_letter_stream("matching")) == 0
    streams = await invoke("streams", "--json")
    assert streams.exit_code == 0
    report = json.loads(streams.output)
    assert {g["group"]: g["counters"].get("dead_lettered") for g in report["groups"]}["matching"] == 2
