"""A server run as a child process in its own process group (redis-server for `make run`
and tests, PostgreSQL for tests): one way to stop it gracefully, and one way to crash it
for fault tests, so that the two kinds of server cannot drift apart."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time


class GroupProcess:
    """Subclasses start `self._proc` (with `start_new_session=True`) and say how the server
    wants to be stopped."""

    stop_signal: signal.Signals = signal.SIGTERM
    stop_timeout: float = 10.0
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float | None = None) -> None:
        """Graceful shutdown with `stop_signal`, SIGKILL of the whole group after `timeout`."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(self.stop_signal)
            try:
                proc.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                kill_group(proc)
        self._proc = None

    def kill(self) -> None:
        """Crash the server and its workers (SIGKILL, no shutdown), like a killed container."""
        proc = self._proc
        if proc is None:
            return
        kill_group(proc)
        self._proc = None


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
    proc.wait()
    # Orphaned workers (PostgreSQL's backends) are in the same group: give the kernel a
    # moment to reap them, so a restart does not find the old shared memory attached.
    for _ in range(50):
        try:
            os.killpg(proc.pid, 0)
        except (ProcessLookupError, PermissionError):
            break
        time.sleep(0.02)
