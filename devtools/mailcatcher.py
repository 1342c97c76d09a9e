"""A local SMTP catcher (aiosmtpd): keeps every mail it receives, never relays.

The embedded stack runs it as its mail server (``python -m devtools.mailcatcher``), and tests
use it as a real SMTP server to assert on what ``notify`` sent. It accepts any AUTH
credentials without TLS, so services configured with an SMTP user/password work too.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

__all__ = ["CaughtMail", "MailCatcher", "main", "read_maildir"]

log = logging.getLogger("rujukan.mailcatcher")

_parser = BytesParser(policy=policy.default)


def _parse(raw: bytes) -> EmailMessage:
    # With policy.default the parser returns EmailMessage; the stubs say Message.
    return cast(EmailMessage, _parser.parsebytes(raw))


@dataclass(frozen=True)
class CaughtMail:
    """One received mail with its SMTP envelope (which, unlike headers, shows Bcc recipients)."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    raw: bytes
    path: Path | None


def read_maildir(path: Path | str) -> list[EmailMessage]:
    """Read the ``*.eml`` files of a maildir written by ``MailCatcher``, oldest first."""
    directory = Path(path)
    if not directory.is_dir():
        return []
    return [_parse(p.read_bytes()) for p in sorted(directory.glob("*.eml"))]


def _accept_any_auth(server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any) -> AuthResult:
    return AuthResult(success=True)


class _Handler:
    def __init__(self, catcher: MailCatcher) -> None:
        self._catcher = catcher

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        self._catcher._store(str(envelope.mail_from or ""), tuple(envelope.rcpt_tos), raw)
        return "250 Message accepted for delivery"


class _Controller(Controller):
    """Controller that supports port 0: it learns the bound port before self-testing."""

    def _trigger_server(self) -> None:
        server = cast(asyncio.Server | None, self.server)
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()


class MailCatcher:
    """SMTP server in a background thread that stores what it receives.

    Messages are kept in memory and, when ``maildir`` is set, written there as
    ``<timestamp>-<n>.eml`` (written to a temp name, then renamed, so readers never see a
    partial file).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, maildir: Path | None = None) -> None:
        self.host = host
        self.port = port
        self.maildir = Path(maildir) if maildir is not None else None
        self._lock = threading.Lock()
        self._received: list[CaughtMail] = []
        self._counter = 0
        self._controller: _Controller | None = None
        self.on_message: Callable[[CaughtMail], None] | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._controller is not None

    def start(self) -> MailCatcher:
        if self._controller is not None:
            return self
        if self.maildir is not None:
            self.maildir.mkdir(parents=True, exist_ok=True)
        controller = _Controller(
            _Handler(self),
            hostname=self.host,
            port=self.port,
            authenticator=_accept_any_auth,
            auth_require_tls=False,
            enable_SMTPUTF8=True,
        )
        controller.start()
        self.port = controller.port
        self._controller = controller
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    # -- storage ----------------------------------------------------------------------------

    def _store(self, mail_from: str, rcpt_tos: tuple[str, ...], raw: bytes) -> None:
        message = _parse(raw)
        with self._lock:
            self._counter += 1
            n = self._counter
        path = self._write(raw, n) if self.maildir is not None else None
        mail = CaughtMail(mail_from, rcpt_tos, message, raw, path)
        with self._lock:
            self._received.append(mail)
        if self.on_message is not None:
            self.on_message(mail)

    def _write(self, raw: bytes, n: int) -> Path:
        assert self.maildir is not None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        final = self.maildir / f"{stamp}-{n}.eml"
        tmp = self.maildir / f".{final.name}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        return final

    # -- queries ----------------------------------------------------------------------------

    def received(self) -> list[CaughtMail]:
        """Messages with their envelopes, oldest first."""
        with self._lock:
            return list(self._received)

    def messages(self) -> list[EmailMessage]:
        with self._lock:
            return [m.message for m in self._received]

    def clear(self) -> None:
        """Forget the in-memory messages (files already written to maildir stay)."""
        with self._lock:
            self._received.clear()

    def _find(self, predicate: Callable[[EmailMessage], bool] | None) -> EmailMessage | None:
        for message in self.messages():
            if predicate is None or predicate(message):
                return message
        return None

    def wait_for(self, predicate: Callable[[EmailMessage], bool] | None = None, timeout: float = 10.0) -> EmailMessage:
        """Block until a message matching ``predicate`` (any if None) has arrived.

        Blocks the calling thread: from a test whose sender runs on the same event loop,
        use ``await wait_for_async(...)`` instead.
        """
        deadline = time.monotonic() + timeout
        while True:
            found = self._find(predicate)
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no matching mail within {timeout}s ({len(self.messages())} received)")
            time.sleep(0.02)

    async def wait_for_async(
        self, predicate: Callable[[EmailMessage], bool] | None = None, timeout: float = 10.0
    ) -> EmailMessage:
        deadline = time.monotonic() + timeout
        while True:
            found = self._find(predicate)
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                raise TimeoutError(f"no matching mail within {timeout}s ({len(self.messages())} received)")
            await asyncio.sleep(0.02)

    def __enter__(self) -> MailCatcher:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<MailCatcher {self.url} maildir={self.maildir} received={len(self._received)}>"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.mailcatcher", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--maildir", type=Path, default=None, help="write each mail here as .eml")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    catcher = MailCatcher(args.host, args.port, args.maildir)

    # Recipient and subject only: bodies may carry details about the person referred.
    def _log(mail: CaughtMail) -> None:
        log.info("mail to=%s subject=%r", ",".join(mail.rcpt_tos), str(mail.message.get("Subject", "")))

    catcher.on_message = _log
    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    catcher.start()
    log.info("listening on %s:%d maildir=%s", args.host, catcher.port, args.maildir or "-")
    try:
        while not done.wait(0.5):
            pass
    finally:
        catcher.stop()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
