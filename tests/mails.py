"""Reading the mails the services send: the plain-text part of a mail, whether it is plain
text only (notices, system tokens) or multipart/alternative (a proposal, with its HTML)."""

from __future__ import annotations

from email.message import EmailMessage


def text_of(mail: EmailMessage) -> str:
    part = mail.get_body(preferencelist=("plain",))
    assert part is not None, mail.as_string()
    return str(part.get_content())


def html_of(mail: EmailMessage) -> str:
    part = mail.get_body(preferencelist=("html",))
    assert part is not None, mail.as_string()
    return str(part.get_content())
