"""Shared pytest fixtures. Keep each group of fixtures in its own delimited section."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.mailcatcher import MailCatcher
from devtools.redis_server import RedisProcess, free_port
from tests.servers import (
    PostgresContainerServer,
    PostgresProcess,
    PostgresServer,
    RedisContainerServer,
    docker_available,
    find_postgres_bindir,
)

# The services under test run on development values (fixed keys, Redis without a password),
# as `make run` does; the tests of production's refusals give rujukan_env="production".
os.environ["RUJUKAN_ENV"] = "development"
# Every in-process client is 127.0.0.1: one test's 401s must not get another's requests a
# 429. The tests of the limit set auth_failures_per_minute themselves.
os.environ.setdefault("AUTH_FAILURES_PER_MINUTE", "0")

# =============================================================================================
# Real servers: Redis, PostgreSQL, SMTP (see tests/servers.py).
# Docker containers when an engine answers, local processes otherwise.
# =============================================================================================


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A running Redis (RedisProcess, or RedisContainerServer under Docker); has ``.url``."""
    if docker_available():
        container = RedisContainerServer().start()
        try:
            yield container
        finally:
            container.stop()
        return
    server = RedisProcess(free_port(), tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: Any) -> str:
    url: str = redis_server.url
    return url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A running PostgreSQL; ``create_database(name)`` returns a ``postgresql+asyncpg://`` URL."""
    if docker_available():
        container = PostgresContainerServer().start()
        try:
            yield container
        finally:
            container.stop()
        return
    if find_postgres_bindir() is None:
        pytest.skip("no Docker engine and no PostgreSQL binaries (initdb, postgres); set PG_BINDIR")
    server = PostgresProcess()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def smtp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MailCatcher]:
    """A running MailCatcher (real SMTP on 127.0.0.1); mails also written to a maildir."""
    catcher = MailCatcher(maildir=tmp_path_factory.mktemp("mail"))
    catcher.start()
    try:
        yield catcher
    finally:
        catcher.stop()


@pytest.fixture
def mailbox(smtp_server: MailCatcher) -> MailCatcher:
    """The session MailCatcher, emptied for this test."""
    smtp_server.clear()
    return smtp_server


@pytest.fixture(params=["sqlite", "postgres"], ids=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database per test: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    # Looked up lazily so sqlite-only runs never start PostgreSQL.
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"t_{uuid.uuid4().hex[:16]}"
    url = server.create_database(name)
    yield url
    try:
        server.drop_database(name)
    except Exception as exc:  # best effort: the cluster is thrown away anyway
        print(f"could not drop test database {name}: {exc}")


# =============================================================================================
# End of real-server fixtures.
# =============================================================================================


# =============================================================================================
# Service apps in-process (real Redis, real database) and a clean Redis per test.
# =============================================================================================


@pytest.fixture
async def redis(redis_url: str) -> Any:
    """A client on the session Redis, flushed for this test (tests in a process run one at a time)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()
