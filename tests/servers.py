"""Real servers for tests: Docker containers when an engine answers, local processes otherwise.

``PostgresProcess`` runs a throwaway PostgreSQL cluster from the local binaries. PostgreSQL
refuses to run as root, so when the tests run as root the cluster is created and run as an
unprivileged system user (``postgres`` if it exists, else ``nobody``) via Popen's
``user=``/``group=``; its directory is made with ``mkdtemp`` directly under the system temp
dir because pytest's tmp dirs (mode 0700, owned by root) are not reachable by that user.
"""

from __future__ import annotations

import functools
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Protocol

from devtools.processes import GroupProcess
from devtools.redis_server import free_port

__all__ = [
    "PostgresContainerServer",
    "PostgresProcess",
    "PostgresServer",
    "RedisContainerServer",
    "docker_available",
    "find_postgres_bindir",
]

_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


@functools.cache
def docker_available() -> bool:
    """True only if a Docker engine answers (not merely if the CLI is installed).

    Uses ``docker version`` (honours contexts) or, without the CLI, a raw ``/_ping`` on
    ``$DOCKER_HOST`` / the default socket; docker-py is avoided because it leaks sockets when
    the engine is down. ``RUJUKAN_TEST_DOCKER=0`` forces local processes.
    """
    if os.environ.get("RUJUKAN_TEST_DOCKER", "").lower() in {"0", "false", "no"}:
        return False
    cli = shutil.which("docker")
    if cli:
        try:
            result = subprocess.run(
                [cli, "version", "--format", "{{.Server.Version}}"],
                capture_output=True,
                timeout=5,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return result.returncode == 0 and bool(result.stdout.strip())
    return _docker_ping(os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock"))


def _docker_ping(docker_host: str) -> bool:
    try:
        if docker_host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(3)
            address: Any = docker_host.removeprefix("unix://")
        elif docker_host.startswith("tcp://"):
            host, _, port = docker_host.removeprefix("tcp://").rstrip("/").rpartition(":")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(3)
            address = (host, int(port))
        else:
            return False
        with sock:
            sock.connect(address)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(256)
    except (OSError, ValueError):
        return False


# -- PostgreSQL ------------------------------------------------------------------------------


class PostgresServer(Protocol):
    """What the ``postgres_server`` fixture yields."""

    def create_database(self, name: str) -> str: ...

    def drop_database(self, name: str) -> None: ...


def find_postgres_bindir() -> Path | None:
    """Directory holding ``initdb`` and ``postgres``: $PG_BINDIR, PATH, /usr/lib/postgresql/*/bin."""
    candidates: list[Path] = []
    if os.environ.get("PG_BINDIR"):
        candidates.append(Path(os.environ["PG_BINDIR"]))
    initdb = shutil.which("initdb")
    if initdb:
        # Resolve Debian's /usr/local/bin -> /usr/lib/postgresql/N/bin symlinks.
        candidates.append(Path(os.path.realpath(initdb)).parent)

    def _version(p: str) -> int:
        m = re.search(r"/postgresql/(\d+)/", p)
        return int(m.group(1)) if m else 0

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)]
    candidates += [Path("/usr/local/pgsql/bin"), Path("/opt/homebrew/bin"), Path("/usr/local/bin")]
    for d in candidates:
        if (d / "initdb").is_file() and (d / "postgres").is_file():
            return d
    return None


def _unprivileged_user() -> tuple[int, int] | None:
    """(uid, gid) to run PostgreSQL as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return pw.pw_uid, pw.pw_gid
    raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL as")


class PostgresProcess(GroupProcess):
    """A throwaway PostgreSQL cluster: ``initdb`` in a temp dir, ``postgres`` on a free port.

    With ``durable=False`` (default) fsync, synchronous_commit and full_page_writes are off:
    fast, but a ``kill()`` may lose recent commits. Use ``durable=True`` for crash tests.
    """

    # SIGINT: PostgreSQL's fast shutdown (rolls back sessions, checkpoints, exits).
    stop_signal = signal.SIGINT
    stop_timeout = 30.0

    def __init__(self, *, port: int | None = None, durable: bool = False, bindir: Path | None = None) -> None:
        found = bindir or find_postgres_bindir()
        if found is None:
            raise RuntimeError("PostgreSQL binaries (initdb, postgres) not found; set PG_BINDIR")
        self.bindir = found
        self.port = port or free_port()
        self.durable = durable
        self.host = "127.0.0.1"
        self.user = "postgres"
        self._owner = _unprivileged_user()
        self.root = Path(tempfile.mkdtemp(prefix="rujukan-pg-"))
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.logfile = self.root / "postgres.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._initialized = False

    # -- helpers ----------------------------------------------------------------------------

    def _popen_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"cwd": self.root, "stdin": subprocess.DEVNULL}
        if self._owner is not None:
            uid, gid = self._owner
            kwargs.update(user=uid, group=gid, extra_groups=[])
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        if self._owner is not None:
            env["HOME"] = str(self.root)
        kwargs["env"] = env
        return kwargs

    def _chown(self, path: Path) -> None:
        if self._owner is not None:
            os.chown(path, *self._owner)

    def _initdb(self) -> None:
        self._chown(self.root)
        self.socket_dir.mkdir(exist_ok=True)
        self._chown(self.socket_dir)
        cmd = [
            str(self.bindir / "initdb"),
            "-D", str(self.data_dir),
            "-U", self.user,
            "--auth=trust",
            "-E", "UTF8",
            "--no-locale",
        ]  # fmt: skip
        if not self.durable:
            cmd.append("--no-sync")
        result = subprocess.run(cmd, capture_output=True, timeout=120, check=False, **self._popen_kwargs())
        if result.returncode != 0:
            raise RuntimeError(
                f"initdb failed ({result.returncode}):\n{result.stdout.decode(errors='replace')}"
                f"{result.stderr.decode(errors='replace')}"
            )
        self._initialized = True

    def command(self) -> list[str]:
        cmd = [
            str(self.bindir / "postgres"),
            "-D", str(self.data_dir),
            "-p", str(self.port),
            "-k", str(self.socket_dir),
            "-c", f"listen_addresses={self.host}",
            "-c", "max_connections=200",
        ]  # fmt: skip
        if not self.durable:
            cmd += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        return cmd

    def _can_connect(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self._dsn("postgres"), connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    def _dsn(self, dbname: str) -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no postgres log)"

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> PostgresProcess:
        if self.running:
            return self
        if not self._initialized:
            self._initdb()
        # The log file is opened by us (root) and handed over as stdout/stderr.
        with open(self.logfile, "ab") as log:
            self._proc = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: kill() takes the backends too
                **self._popen_kwargs(),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code, self._proc = self._proc.returncode, None
                raise RuntimeError(f"postgres exited with code {code}\n{self.log_tail()}")
            if self._can_connect():
                return self
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"postgres not ready on port {self.port} within {timeout:.0f}s\n{self.log_tail()}")

    def restart(self, timeout: float = 30.0) -> PostgresProcess:
        self.stop()
        return self.start(timeout)

    def cleanup(self) -> None:
        """Stop and delete the cluster directory."""
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    # -- databases --------------------------------------------------------------------------

    def url(self, name: str = "postgres") -> str:
        return f"postgresql+asyncpg://{self.user}@{self.host}:{self.port}/{name}"

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its SQLAlchemy async (asyncpg) URL."""
        _create_database(self._dsn("postgres"), name)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        _drop_database(self._dsn("postgres"), name)

    def __enter__(self) -> PostgresProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return f"<PostgresProcess port={self.port} root={self.root} durable={self.durable}>"


def _check_name(name: str) -> None:
    if not _DB_NAME.match(name):
        raise ValueError(f"database name must match {_DB_NAME.pattern}: {name!r}")


def _create_database(admin_dsn: str, name: str) -> None:
    import psycopg

    _check_name(name)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # name validated above


def _drop_database(admin_dsn: str, name: str) -> None:
    import psycopg

    _check_name(name)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- Docker-backed equivalents ----------------------------------------------------------------


class PostgresContainerServer:
    """testcontainers ``PostgresContainer`` with the same ``create_database`` API."""

    def __init__(self, image: str = "postgres:16-alpine") -> None:
        from testcontainers.community.postgres import PostgresContainer

        self.container = PostgresContainer(image, username="postgres", password="postgres", dbname="postgres")
        self.host = ""
        self.port = 0

    def start(self) -> PostgresContainerServer:
        self.container.start()
        self.host = self.container.get_container_host_ip()
        self.port = int(self.container.get_exposed_port(5432))
        return self

    def stop(self) -> None:
        self.container.stop()

    def _dsn(self, dbname: str) -> str:
        return f"host={self.host} port={self.port} user=postgres password=postgres dbname={dbname}"

    def url(self, name: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres:postgres@{self.host}:{self.port}/{name}"

    def create_database(self, name: str) -> str:
        _create_database(self._dsn("postgres"), name)
        return self.url(name)

    def drop_database(self, name: str) -> None:
        _drop_database(self._dsn("postgres"), name)


class RedisContainerServer:
    """testcontainers ``RedisContainer`` exposing ``url`` like ``RedisProcess``."""

    def __init__(self, image: str = "redis:7-alpine") -> None:
        from testcontainers.community.redis import RedisContainer

        self.container = RedisContainer(image).with_command("redis-server --appendonly yes --save ''")
        self.host = ""
        self.port = 0

    def start(self) -> RedisContainerServer:
        self.container.start()
        self.host = self.container.get_container_host_ip()
        self.port = int(self.container.get_exposed_port(6379))
        return self

    def stop(self) -> None:
        self.container.stop()

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"
