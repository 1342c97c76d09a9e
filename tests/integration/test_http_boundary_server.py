"""The boundary against a real intake process (uvicorn, as `make run` starts it): huge
bodies with a wrong key or none are answered at once, and the process does not grow."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.processes import GroupProcess
from devtools.redis_server import free_port
from tests.apps import DEMO_KEY, TEST_KEYS

MiB = 1024 * 1024


class IntakeProcess(GroupProcess):
    def __init__(self, database_url: str, redis_url: str, log: Path) -> None:
        self.port = free_port()
        self.env = {"PATH": os.environ["PATH"], "RUJUKAN_ENV": "development", "PORT": str(self.port),
                    "DATABASE_URL": database_url, "REDIS_URL": redis_url, "ENCRYPTION_KEYS": TEST_KEYS,
                    "DEMO_API_KEY": DEMO_KEY, "LOG_LEVEL": "WARNING",
                    **{k: v for k, v in os.environ.items() if k == "PYTHONPATH"}}
        self.log = log

    def start(self) -> IntakeProcess:
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen([sys.executable, "-m", "intake"], env=self.env, start_new_session=True,
                                          stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2):
                    return self
            except OSError:
                if not self.running or time.monotonic() > deadline:
                    raise RuntimeError(f"intake did not start: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.2)

    def rss(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        kib = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
        return int(kib) * 1024


@pytest.fixture
def intake(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[IntakeProcess]:
    server = IntakeProcess(database_url, redis_url, tmp_path / "intake.log").start()
    try:
        yield server
    finally:
        server.stop()


def send(port: int, headers: dict[str, str], size: int, *, chunked: bool = False) -> tuple[int, int, float]:
    """POST a body of `size` bytes, sending until the server answers; (status, bytes sent,
    seconds to the answer)."""
    began = time.monotonic()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        lines = ["POST /v1/referrals HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/json",
                 *(f"{k}: {v}" for k, v in headers.items()),
                 "Transfer-Encoding: chunked" if chunked else f"Content-Length: {size}"]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        piece = b" " * (256 * 1024)
        frame = b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece
        sent = 0
        sock.setblocking(False)
        while sent < size:
            readable, writable, _ = select.select([sock], [sock], [], 5)
            if readable or not writable:
                break
            try:
                sent += sock.send(frame if chunked else piece[: size - sent])
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                break
        sock.setblocking(True)
        sock.settimeout(10)
        head = sock.recv(4096)
        return int(head.split(b" ", 2)[1]), sent, time.monotonic() - began
    finally:
        sock.close()


def test_huge_bodies_with_a_wrong_key_or_none_are_answered_at_once_and_memory_stays(
    intake: IntakeProcess,
) -> None:
    for headers in ({"Authorization": "Bearer wrong"}, {}):  # the paths taken once before measuring
        send(intake.port, headers, 10)
    before = intake.rss()
    cases = [
        ({"Authorization": "Bearer wrong"}, 100 * MiB, False, 413),  # says its size: refused unread
        ({"Authorization": "Bearer wrong"}, 100 * MiB, True, 413),  # streamed: refused past 64 KiB
        ({"Authorization": f"Bearer {DEMO_KEY}"}, 100 * MiB, True, 413),
        *[({}, 50 * MiB, False, 401)] * 4,  # no credential: refused before any byte is read
        ({}, 50 * MiB, True, 401),
    ]
    for headers, size, chunked, expected in cases:
        status, sent, seconds = send(intake.port, headers, size, chunked=chunked)
        assert status == expected, (headers, chunked, status)
        assert seconds < 5, (headers, chunked, sent, seconds)
        assert sent < size // 2, (headers, chunked, sent, seconds)
    grown = intake.rss() - before
    assert grown < 30 * MiB, f"intake grew by {grown / MiB:.0f} MiB"
