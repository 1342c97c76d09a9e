"""The bench's own servers, never the machine's shared ones on 5432/6379: a PostgreSQL
cluster configured as compose runs it (durable: fsync and synchronous_commit on) and a
redis-server as compose runs it (append-only file, fsync every second), on free ports,
stopped at the end. (The SMTP sink is the pipeline stage's: bench.smtp_sink.)"""

from __future__ import annotations

import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import psycopg

from devtools.redis_server import RedisProcess, free_port
from tests.servers import PostgresProcess


class Infra:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.pg: PostgresProcess | None = None
        self.redis: RedisProcess | None = None

    def start(self) -> Infra:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # durable=True: fsync, synchronous_commit and full_page_writes keep PostgreSQL's
        # defaults, as in compose, so a 202 means the referral is on disk.
        self.pg = PostgresProcess(durable=True).start()
        self.redis = RedisProcess(free_port(), self.workdir / "redis", appendonly=True,
                                  appendfsync="everysec").start()
        return self

    def stop(self) -> None:
        if self.redis is not None:
            self.redis.stop()
        if self.pg is not None:
            self.pg.cleanup()

    def __enter__(self) -> Infra:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def redis_url(self) -> str:
        assert self.redis is not None
        return self.redis.url

    def database(self, name: str) -> str:
        """A fresh database (dropped first if a previous stage left it): asyncpg URL."""
        assert self.pg is not None
        self.pg.drop_database(name)
        return self.pg.create_database(name)

    def flush_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            client.flushall()
        finally:
            client.close()

    def describe(self) -> dict[str, Any]:
        """What the figures were measured on, printed with them and stored in the JSON."""
        assert self.pg is not None
        assert self.redis is not None
        with psycopg.connect(f"host=127.0.0.1 port={self.pg.port} user=postgres dbname=postgres") as conn:
            pg_version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
            pg_settings = {k: str(conn.execute(f"SHOW {k}").fetchone()[0])  # type: ignore[index]
                           for k in ("fsync", "synchronous_commit", "full_page_writes", "shared_buffers")}
        redis_version = subprocess.run([self.redis.command()[0], "--version"], capture_output=True,
                                       text=True, check=False).stdout.strip()
        return {
            "host": platform.node(),
            "cpus": _cpu_count(),
            "cpu_model": _cpu_model(),
            "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in _loadavg()],
            "postgresql": {"version": pg_version, "port": self.pg.port, **pg_settings},
            "redis": {"version": redis_version, "port": self.redis.port, "appendonly": "yes",
                      "appendfsync": "everysec"},
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _loadavg() -> tuple[float, float, float]:
    import os

    return os.getloadavg()
