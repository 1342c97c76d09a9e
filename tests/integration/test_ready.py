"""/ready apart from /health: a running service is ready (Redis, database, its consumer,
notify's SMTP relay); its own Redis stopped makes it 503 naming redis, and ready again
once Redis is back. Real apps, a real redis-server of the test's own, a real SMTP catcher."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from devtools.mailcatcher import MailCatcher
from devtools.redis_server import RedisProcess, free_port
from tests.apps import eventually, running
from tests.integration.test_http_boundary import make


@pytest.mark.parametrize("service", ["intake", "matching", "notify"])
async def test_ready_names_redis_when_it_stops_and_recovers(service: str, database_url: str, tmp_path: Path,
                                                            smtp_server: MailCatcher) -> None:
    redis = RedisProcess(free_port(), tmp_path / "redis").start()
    try:
        over = {"smtp_url": smtp_server.url} if service == "notify" else {}
        async with running(make(service, database_url, redis.url, **over)) as client:
            r = await client.get("/ready")  # open, like /health: no credential
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["failing"] == []
            assert body["checks"]["redis"] == body["checks"]["database"] == body["checks"]["consumer"] == "ok"
            assert ("smtp" in body["checks"]) is (service == "notify")
            assert (await client.get("/health")).status_code == 200

            await asyncio.to_thread(redis.stop)

            async def not_ready() -> bool:
                r = await client.get("/ready")
                assert r.status_code == 503, r.text
                assert "redis" in r.json()["failing"]
                assert r.json()["checks"]["database"] == "ok"
                return True

            await eventually(not_ready, timeout=15)

            await asyncio.to_thread(redis.start)

            async def ready_again() -> bool:
                r = await client.get("/ready")
                assert r.status_code == 200, r.text
                return True

            await eventually(ready_again, timeout=20)
    finally:
        await asyncio.to_thread(redis.stop)


async def test_notify_is_not_ready_without_its_mail_relay(database_url: str, redis_url: str) -> None:
    dead = f"smtp://127.0.0.1:{free_port()}"  # nobody listens there
    async with running(make("notify", database_url, redis_url, smtp_url=dead)) as client:
        r = await client.get("/ready")
        assert r.status_code == 503
        body = r.json()
        assert body["failing"] == ["smtp"]
        assert body["checks"]["smtp"].startswith("error: ")
        assert "127.0.0.1" not in r.text  # names what is wrong, not where (nor any password)
        assert (await client.get("/health")).status_code == 200  # alive all the same
