"""A local SMS/WhatsApp gateway for development and tests: never sends anything.

Notify's gateway adapter (notify/adapters/channels.py, GatewayChannel) POSTs JSON
`{"channel", "to", "text", "message_id"}` with `Authorization: Bearer <key>`; this server
keeps each message as a JSON file under its directory (var/messages with `make run`) and
answers 200. `python -m devtools.fake_gateway --port 1026` runs it alone.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["FakeGateway", "main"]
MAX_BODY = 64 * 1024


class FakeGateway:
    """`start()` serves on 127.0.0.1:`port` (0: a free one) in a thread; `messages()` reads
    back what was received, oldest first."""

    def __init__(self, directory: Path, port: int = 0, host: str = "127.0.0.1") -> None:
        self.directory = Path(directory)
        self.host = host
        self._port = port
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()
        self._seq = 0

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeGateway:
        self.directory.mkdir(parents=True, exist_ok=True)
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                if length > MAX_BODY:
                    self.send_error(413)
                    return
                try:
                    message = json.loads(self.rfile.read(length))
                    if not isinstance(message, dict):
                        raise ValueError("not an object")
                except ValueError:
                    self.send_error(400)
                    return
                gateway._keep({"path": self.path, "authorization": self.headers.get("authorization", ""),
                               **message})
                body = b'{"status":"queued"}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((self.host, self._port), Handler)
        threading.Thread(target=self._server.serve_forever, name="fake-gateway", daemon=True).start()
        return self

    def _keep(self, message: dict[str, Any]) -> None:
        with self._lock:
            self._seq += 1
            name = f"{time.time_ns()}-{self._seq:06d}.json"
        (self.directory / name).write_text(json.dumps(message, ensure_ascii=False, indent=1))

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted(self.directory.glob("*.json"))]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=1026)
    parser.add_argument("--dir", default="var/messages")
    args = parser.parse_args()
    gateway = FakeGateway(Path(args.dir), args.port).start()
    print(f"fake gateway on {gateway.url}, messages in {args.dir}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        gateway.stop()


if __name__ == "__main__":
    main()
