"""Sending mail over SMTP (aiosmtplib). The delivery id is the Message-ID, so a mail sent
twice after a crash between sending and recording is recognisable as one.

One SMTP session is kept open and reused for the next mail while it is fresh: opening one
per mail (connect, EHLO, QUIT, and a thread for the address lookup) was a fifth of
notify's CPU per delivery. A session that failed in any way is closed, never reused."""

from __future__ import annotations

import asyncio
import time
from contextlib import suppress
from email.message import EmailMessage
from urllib.parse import unquote, urlparse

import aiosmtplib

from shared.tracing import tracer

# A session last used longer ago than this is closed and a new one opened: servers drop idle
# sessions (RFC 5321 asks them to wait 5 minutes; some wait far less).
REUSE_WITHIN_S = 10.0
# A session idle for longer than this is probed (NOOP) before it carries a mail, so a server
# that went away in between costs a new session, never a failed delivery.
PROBE_AFTER_IDLE_S = 0.5


class Mailer:
    def __init__(self, smtp_url: str, mail_from: str, timeout: float = 15.0) -> None:
        u = urlparse(smtp_url)
        if u.scheme not in ("smtp", "smtps", "smtp+starttls"):
            raise ValueError("SMTP_URL must look like smtp://host:port (or smtps://, smtp+starttls://)")
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or (465 if u.scheme == "smtps" else 25)
        self.username = unquote(u.username) if u.username else None
        self.password = unquote(u.password) if u.password else None
        self.use_tls = u.scheme == "smtps"
        self.start_tls = u.scheme == "smtp+starttls"
        self.mail_from = mail_from
        self.timeout = timeout
        self._smtp: aiosmtplib.SMTP | None = None
        self._last_used = 0.0
        self._lock = asyncio.Lock()

    async def send(self, *, message_id: str, to: str, subject: str, body: str, urgent: bool,
                   html: str | None = None) -> None:
        """One mail: plain text, or plain text with an HTML alternative (multipart/alternative)."""
        msg = EmailMessage()
        msg["From"] = self.mail_from
        msg["To"] = to
        msg["Subject"] = subject
        msg["Message-ID"] = f"<{message_id}@rujukan>"
        msg["Content-Language"] = "id, en"
        if urgent:
            msg["Importance"] = "high"
            msg["X-Priority"] = "1"
        msg.set_content(body)
        if html is not None:
            msg.add_alternative(html, subtype="html")
        # A span of the event's trace (the delivery round runs in it); ids only, no address.
        with tracer.start_as_current_span("notify mail send", attributes={"rujukan.message_id": message_id}):
            async with self._lock:  # one session carries one mail at a time
                smtp = await self._session()
                try:
                    await smtp.send_message(msg)
                except BaseException:
                    await self._drop()  # whatever state it is in now, it is not reused
                    raise
                self._last_used = time.monotonic()

    async def _session(self) -> aiosmtplib.SMTP:
        if self._smtp is not None:
            idle = time.monotonic() - self._last_used
            if not self._smtp.is_connected or idle > REUSE_WITHIN_S:
                await self._drop()
            elif idle > PROBE_AFTER_IDLE_S:
                try:
                    await self._smtp.noop()
                except Exception:
                    await self._drop()
        if self._smtp is None:
            smtp = aiosmtplib.SMTP(hostname=self.host, port=self.port, username=self.username,
                                   password=self.password, use_tls=self.use_tls, start_tls=self.start_tls,
                                   timeout=self.timeout)
            await smtp.connect()
            self._smtp = smtp
        return self._smtp

    async def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None and smtp.is_connected:
            with suppress(Exception):
                await asyncio.wait_for(smtp.quit(), timeout=2)
            smtp.close()

    async def close(self) -> None:
        async with self._lock:
            await self._drop()
