"""A receiver's other channels, behind one interface: its webhook (Standard Webhooks 1.0,
signed with the `standardwebhooks` package) and an HTTP gateway for SMS or WhatsApp (a
provider's API, or devtools/fake_gateway.py in development). Email is the mailer's.

Each `send` raises on failure (the channel rounds record it and retry with backoff). A URL
is checked each time it is called: outside development, no loopback, private, link-local
or otherwise non-public address (server-side request forgery)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlparse

import httpx
from standardwebhooks import Webhook


class Refused(Exception):
    """The address may not be called (SSRF), or the channel is not configured."""


class Channel(Protocol):
    """Sends one message to one address; `message_id` is the same on each attempt."""

    async def send(self, *, message_id: str, address: str, payload: dict[str, Any], text: str) -> None: ...


async def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse a URL that is not http(s), or (unless `allow_private`) one whose host resolves
    to an address that is not public."""
    u = urlparse(url)
    if u.scheme not in ("https", "http") or not u.hostname:
        raise Refused("the URL must be http(s)://host/...")
    if allow_private:
        return
    if u.scheme != "https":
        raise Refused("the URL must be https outside development")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(u.hostname, u.port or 443, type=socket.SOCK_STREAM)
    except OSError as e:
        raise Refused(f"the host does not resolve: {e}") from e
    for info in infos:
        ip = ipaddress.ip_address(info[4][0])
        if not ip.is_global or ip.is_multicast:
            raise Refused(f"the host resolves to a non-public address ({ip})")


def receiver_secret(key: str, receiver_id: str) -> str:
    """A receiver's own webhook secret (`whsec_...`), derived from notify's key: nothing to
    store, the same on every replica, different for every receiver (one receiver cannot
    forge another's messages). A new key gives every receiver a new secret."""
    digest = hmac.new(key.encode(), b"rujukan-receiver-webhook:" + receiver_id.encode(), hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(digest).decode()


class WebhookChannel:
    """POSTs the payload as JSON signed per Standard Webhooks 1.0 (`webhook-id`,
    `webhook-timestamp`, `webhook-signature`). The secret is the receiver's
    (`secret_of(payload)`); a 2xx answer is a delivery, anything else a failure."""

    def __init__(self, secret_of: Callable[[dict[str, Any]], str], *, allow_private: bool, url: str = "",
                 timeout: float = 10.0) -> None:
        self.secret_of = secret_of
        self.allow_private = allow_private
        self.url = url  # set: every message goes there (the operators' webhook)
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def send(self, *, message_id: str, address: str, payload: dict[str, Any], text: str) -> None:
        address = self.url or address
        await check_url(address, allow_private=self.allow_private)
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        now = datetime.now(UTC)
        signature = Webhook(self.secret_of(payload)).sign(message_id, now, body)
        r = await self._client.post(address, content=body, headers={
            "content-type": "application/json", "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())), "webhook-signature": signature})
        if not 200 <= r.status_code < 300:
            raise RuntimeError(f"the webhook answered {r.status_code}")

    async def close(self) -> None:
        await self._client.aclose()


class GatewayChannel:
    """An SMS or WhatsApp gateway over HTTP: POST {url} with a bearer key and
    `{"channel", "to", "text", "message_id"}`; a 2xx answer is a delivery. The text carries
    the category, the area and the sign-in link only."""

    def __init__(self, channel: str, url: str, key: str, *, allow_private: bool, timeout: float = 10.0) -> None:
        self.channel = channel
        self.url = url
        self.key = key
        self.allow_private = allow_private
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def send(self, *, message_id: str, address: str, payload: dict[str, Any], text: str) -> None:
        if not self.url:
            raise Refused(f"no gateway for {self.channel} is configured")
        await check_url(self.url, allow_private=self.allow_private)
        r = await self._client.post(self.url, json={"channel": self.channel, "to": address, "text": text,
                                                    "message_id": message_id},
                                    headers={"authorization": f"Bearer {self.key}"})
        if not 200 <= r.status_code < 300:
            raise RuntimeError(f"the {self.channel} gateway answered {r.status_code}")

    async def close(self) -> None:
        await self._client.aclose()
