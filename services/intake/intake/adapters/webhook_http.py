"""Calling agencies' webhook URLs without becoming a way into the network intake runs in
(server-side request forgery).

A URL is checked when it is registered (`check_url`: scheme, then every address its host
resolves to) and again when it is called: the HTTP client's network backend resolves the host
itself, refuses the connection if any address is not allowed, and connects to the address it
checked (so a name that resolves elsewhere a moment later, DNS rebinding, cannot slip past).
TLS still verifies the certificate for the host name. Redirects are not followed.

Allowed addresses: public ones only. In development (`allow_private`), loopback and private
addresses too, so tests and `make run` can use receivers on 127.0.0.1; link-local (cloud
metadata at 169.254.169.254), multicast and unspecified addresses never."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
from httpcore import AsyncNetworkBackend, AsyncNetworkStream
from httpcore._backends.auto import AutoBackend

MAX_URL_LENGTH = 2000

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeUrl(ValueError):
    """The URL may not be called: the message says why (without the URL)."""


def address_problem(ip: IPAddress, allow_private: bool) -> str | None:
    """Why intake may not connect to this address, or None when it may."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_loopback:
        return None if allow_private else "a loopback address"
    if not ip.is_global:
        return None if allow_private else "a private or reserved address"
    return None


def check_syntax(url: str, allow_private: bool) -> tuple[str, int]:
    """The host and port of an acceptable URL; UnsafeUrl otherwise (not resolved yet)."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("the URL is not valid") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrl("only http and https URLs are called")
    if parts.scheme != "https" and not allow_private:
        raise UnsafeUrl("the URL must use https")
    if not parts.hostname:
        raise UnsafeUrl("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("the URL may not carry a user name or password")
    if parts.fragment:
        raise UnsafeUrl("the URL may not carry a fragment")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


async def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise UnsafeUrl("the URL's host does not resolve") from None
    found = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    if not found:
        raise UnsafeUrl("the URL's host does not resolve")
    return found


def refuse_any(addresses: Iterable[IPAddress], allow_private: bool) -> None:
    for ip in addresses:
        if (problem := address_problem(ip, allow_private)) is not None:
            raise UnsafeUrl(f"the URL's host resolves to {problem}")


async def check_url(url: str, allow_private: bool) -> None:
    """Refuse (UnsafeUrl) a URL intake may not call: scheme, credentials, every address."""
    host, port = check_syntax(url, allow_private)
    refuse_any(await resolve(host, port), allow_private)


class GuardedBackend(AsyncNetworkBackend):
    """httpcore's network backend, connecting only to addresses `address_problem` allows,
    and to the very address it checked."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.inner = AutoBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> AsyncNetworkStream:
        try:
            addresses = await resolve(host, port)
            refuse_any(addresses, self.allow_private)
        except UnsafeUrl as e:
            raise httpcore.ConnectError(str(e)) from None
        return await self.inner.connect_tcp(str(addresses[0]), port, timeout=timeout,
                                            local_address=local_address, socket_options=socket_options)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not called")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def guarded_client(allow_private: bool, timeout_s: float, concurrency: int) -> httpx.AsyncClient:
    """An HTTP client for webhook calls: the guarded backend, no proxies from the environment
    (a proxy would resolve the host itself), no redirects."""
    limits = httpx.Limits(max_connections=max(concurrency, 1) * 2, max_keepalive_connections=0)
    transport = httpx.AsyncHTTPTransport(limits=limits, retries=0)
    pool = transport._pool  # httpcore.AsyncConnectionPool: no public hook for its backend
    if not isinstance(pool, httpcore.AsyncConnectionPool):  # pragma: no cover - an httpx that changed
        raise RuntimeError("httpx's transport has no connection pool to guard")
    pool._network_backend = GuardedBackend(allow_private)
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(timeout_s), follow_redirects=False,
                             trust_env=False, headers={"user-agent": "Rujukan-Webhooks/1"})
