"""A minimal SMTP sink in its own process (aiosmtpd on uvloop): accepts every mail, keeps
nothing, counts. It stands for compose's mailpit: a sink that parsed and stored each mail
in Python (devtools.mailcatcher) would itself become the bottleneck the bench measures, and
running it inside the driver would share the driver's interpreter with the timing.

    python -m bench.smtp_sink --port N    # prints "received <count>" when stopped
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import time
from typing import Any

from aiosmtpd.smtp import SMTP

from devtools.redis_server import free_port


class _Count:
    def __init__(self) -> None:
        self.received = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received += 1
        return "250 Message accepted"


async def serve(port: int) -> int:
    handler = _Count()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, enable_SMTPUTF8=True), "127.0.0.1", port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()
    return handler.received


class SmtpSink:
    """The sink process, from the driver's side."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> SmtpSink:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.smtp_sink", "--port", str(self.port)],
                                     stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"smtp sink did not start: {line!r}")
        return self

    def stop(self) -> int:
        """Stop it; returns how many mails it accepted."""
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=10)
        self.proc = None
        for line in out.splitlines():
            if line.startswith("received "):
                return int(line.split()[1])
        return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    import uvloop

    t0 = time.monotonic()
    received = uvloop.run(serve(args.port))
    print(f"received {received} in {time.monotonic() - t0:.1f}s", flush=True)


if __name__ == "__main__":
    main()
