"""How a receiving contact can be reached besides its inbox, from what the directory keeps of
it (HSDS contact: email, phones with their type, and the Rujukan webhook extension): its
professional phone, its webhook, and the channels in the order they are tried.

The HSDS phone `type` says what a number takes: "text" and "cell" take SMS; "whatsapp" (not
an HSDS value, but what a directory in Indonesia writes) takes WhatsApp first, then SMS. The
directory keeps no other preference: the order is the phones' order, email first (the
proposal's sign-in link travels by mail), the contact's webhook last.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Channel = Literal["email", "sms", "whatsapp", "webhook"]

PHONE_MAX = 40
# HSDS phone types (and the local "whatsapp") -> the channels such a number takes, in order.
PHONE_CHANNELS: dict[str, tuple[Channel, ...]] = {
    "whatsapp": ("whatsapp", "sms"),
    "text": ("sms",),
    "cell": ("sms",),
    "mobile": ("sms",),
    "sms": ("sms",),
}


@dataclass(frozen=True)
class Reach:
    phone: str  # the professional number to call or text ("" when none)
    webhook_url: str
    channels: tuple[Channel, ...]


def _number(p: Mapping[str, Any]) -> str:
    n = str(p.get("number") or "").strip()
    return n if 0 < len(n) <= PHONE_MAX else ""


def reach(email: str | None, webhook_url: str | None, phones: Iterable[Mapping[str, Any]]) -> Reach:
    """The contact's phone (the first one that takes messages, else the first one at all),
    its webhook and its channels; with nothing but an email address, ["email"]."""
    phones = [p for p in phones if _number(p)]
    channels: list[Channel] = ["email"] if email else []
    texting = None
    for p in phones:
        kinds = PHONE_CHANNELS.get(str(p.get("type") or "").strip().lower(), ())
        if kinds and texting is None:
            texting = p
        for c in kinds:
            if c not in channels:
                channels.append(c)
    hook = (webhook_url or "").strip()
    if hook:
        channels.append("webhook")
    chosen = texting or (phones[0] if phones else None)
    return Reach(phone=_number(chosen) if chosen else "", webhook_url=hook, channels=tuple(channels or ("email",)))
