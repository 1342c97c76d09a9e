"""Sending mail over SMTP (aiosmtplib). The delivery id is the Message-ID, so a mail sent
twice after a crash between sending and recording is recognisable as one."""

from __future__ import annotations

from email.message import EmailMessage
from urllib.parse import unquote, urlparse

import aiosmtplib


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
        self.start_tls = True if u.scheme == "smtp+starttls" else False
        self.mail_from = mail_from
        self.timeout = timeout

    async def send(self, *, message_id: str, to: str, subject: str, body: str, urgent: bool) -> None:
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
        await aiosmtplib.send(
            msg, hostname=self.host, port=self.port, username=self.username, password=self.password,
            use_tls=self.use_tls, start_tls=self.start_tls, timeout=self.timeout,
        )
