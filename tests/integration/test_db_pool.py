"""The connection pool never hands out a connection the server dropped (shared.db checks
on checkout, without pool_pre_ping's round trips): a terminated backend or a restarted
PostgreSQL costs the caller nothing, not one failed query."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import text

from shared.db import make_engine
from tests.servers import PostgresProcess, find_postgres_bindir

pytestmark = pytest.mark.skipif(find_postgres_bindir() is None, reason="no PostgreSQL binaries")


@pytest.fixture
def own_postgres() -> Iterator[PostgresProcess]:
    # Its own cluster: this test restarts it.
    pg = PostgresProcess().start()
    try:
        yield pg
    finally:
        pg.cleanup()


async def test_dropped_connections_are_replaced_not_handed_out(own_postgres: PostgresProcess) -> None:
    engine = make_engine(own_postgres.create_database("pool"))
    admin = make_engine(own_postgres.url("postgres"))

    async def backend() -> int:
        async with engine.connect() as conn:
            return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())

    try:
        first = set(await asyncio.gather(*[backend() for _ in range(4)]))
        assert len(first) == 4  # four connections now wait in the pool

        # The server ends two of them while they sit in the pool; used at once, well
        # before any idle ping would be due.
        async with admin.connect() as conn:
            for pid in sorted(first)[:2]:
                await conn.execute(text(f"SELECT pg_terminate_backend({pid})"))
        await asyncio.sleep(0.05)
        after_terminate = set(await asyncio.gather(*[backend() for _ in range(4)]))
        assert not after_terminate & set(sorted(first)[:2])

        # A restart drops every pooled connection: the next queries still succeed.
        await admin.dispose()
        await asyncio.to_thread(own_postgres.restart)
        after_restart = {await backend() for _ in range(6)}
        assert not after_restart & (first | after_terminate)
    finally:
        await engine.dispose()
        await admin.dispose()


async def test_a_caller_can_still_ask_for_pool_pre_ping(own_postgres: PostgresProcess) -> None:
    engine = make_engine(own_postgres.create_database("prepinged"), pool_pre_ping=True)
    try:
        assert engine.sync_engine.pool._pre_ping
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()
