"""Sending intake's own mail (agency staff's sign-in links) over SMTP with aiosmtplib.

SMTP_URL as notify reads it: smtp://host:port, smtps:// (TLS from the start) or
smtp+starttls://, with an optional user:password. A sign-in mail is rare (one per sign-in),
so each is sent in a session of its own."""

from __future__ import annotations

from email.message import EmailMessage
from urllib.parse import unquote, urlparse

import aiosmtplib

SCHEMES = ("smtp", "smtps", "smtp+starttls")


class Mail:
    def __init__(self, smtp_url: str, mail_from: str, timeout: float = 15.0) -> None:
        u = urlparse(smtp_url)
        if u.scheme not in SCHEMES:
            raise ValueError("SMTP_URL must look like smtp://host:port (or smtps://, smtp+starttls://)")
        self.options = {
            "hostname": u.hostname or "127.0.0.1", "port": u.port or (465 if u.scheme == "smtps" else 25),
            "username": unquote(u.username) if u.username else None,
            "password": unquote(u.password) if u.password else None,
            "use_tls": u.scheme == "smtps", "start_tls": u.scheme == "smtp+starttls", "timeout": timeout,
        }
        self.mail_from = mail_from

    async def send(self, *, to: str, subject: str, body: str) -> None:
        msg = EmailMessage()
        msg["From"] = self.mail_from
        msg["To"] = to
        msg["Subject"] = subject
        msg["Content-Language"] = "id, en"
        msg.set_content(body)
        await aiosmtplib.send(msg, **self.options)  # type: ignore[arg-type]
