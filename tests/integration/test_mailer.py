"""The mailer against a real SMTP server: one session carries consecutive mails, a session
the server dropped is replaced before use, and a failed session is never reused."""

from __future__ import annotations

import asyncio

import pytest
from aiosmtpd.smtp import SMTP

from devtools.mailcatcher import MailCatcher
from devtools.redis_server import free_port
from notify.adapters import mailer as mailer_module
from notify.adapters.mailer import Mailer


async def _send(m: Mailer, n: int, prefix: str = "m") -> None:
    for i in range(n):
        await m.send(message_id=f"{prefix}{i}", to=f"r{i}@penerima.example", subject=f"Rujukan {i}",
                     body="Isi", urgent=i == 0)


async def test_consecutive_mails_share_one_session(mailbox: MailCatcher) -> None:
    m = Mailer(mailbox.url, "Rujukan <noreply@rujukan.example>")
    try:
        await _send(m, 3)
        session = m._smtp
        await _send(m, 2, prefix="n")
        assert m._smtp is session
        assert session is not None  # the same session carried all five
    finally:
        await m.close()
    got = mailbox.received()
    assert [g.message["Message-ID"] for g in got] == [f"<{p}@rujukan>" for p in ("m0", "m1", "m2", "n0", "n1")]
    assert got[0].message["Importance"] == "high"
    assert got[1].message["Importance"] is None
    assert m._smtp is None


async def test_a_dropped_or_stale_session_is_replaced(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    server = MailCatcher(port=port).start()
    m = Mailer(server.url, "noreply@rujukan.example")
    try:
        await _send(m, 1, prefix="a")
        # The server goes away and comes back (a restart): the old session is dead.
        server.stop()
        server = MailCatcher(port=port).start()
        await asyncio.sleep(mailer_module.PROBE_AFTER_IDLE_S + 0.1)
        await _send(m, 1, prefix="b")
        assert [g.message["Message-ID"] for g in server.received()] == ["<b0@rujukan>"]
        # A session idle for longer than REUSE_WITHIN_S is not trusted either.
        first = m._smtp
        monkeypatch.setattr(mailer_module, "REUSE_WITHIN_S", 0.0)
        await _send(m, 1, prefix="c")
        assert m._smtp is not first
    finally:
        await m.close()
        server.stop()


async def test_a_failed_session_is_closed_and_the_error_reaches_the_caller(tmp_path) -> None:  # type: ignore[no-untyped-def]
    class Refusing:
        async def handle_RCPT(self, server: SMTP, session, envelope, address, options):  # type: ignore[no-untyped-def]
            return "550 no such mailbox"

    from aiosmtpd.controller import Controller

    port = free_port()
    controller = Controller(Refusing(), hostname="127.0.0.1", port=port)
    controller.start()
    m = Mailer(f"smtp://127.0.0.1:{port}", "noreply@rujukan.example")
    try:
        with pytest.raises(Exception, match="no such mailbox"):
            await _send(m, 1)
        assert m._smtp is None  # not reused after a failure
    finally:
        await m.close()
        controller.stop()
