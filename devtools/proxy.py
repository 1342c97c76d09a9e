"""One address for people under `make run`: a small reverse proxy in front of the three
services, with the same routing table as compose's Caddy (deploy/caddy/Caddyfile;
tests/integration/test_dev_proxy_caddy.py checks that the two agree on every prefix).

    python -m devtools.proxy --port 8080 \\
        --upstream intake=http://127.0.0.1:8001 --upstream matching=http://127.0.0.1:8002 \\
        --upstream notify=http://127.0.0.1:8003

It keeps the Host header (the services compare a form's Origin with it), sets
X-Forwarded-For, -Proto and -Host (replacing whatever the client sent), streams bodies both
ways, keeps no cookies of its own, and logs no URL (a mailed sign-in link carries a code).
A path outside the table is 404 here: the services' /docs, /metrics, /health and /v1/ops
stay on their own ports. A service that does not answer is a 502 problem naming it.
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import posixpath
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import httpx

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# The one routing table (PAGES.md's URL scheme): a prefix covers itself and what is under it
# ("/agency" is /agency and /agency/..., never /agencyx); the longest prefix wins; "=/" is
# the exact path "/". Every prefix here is in deploy/caddy/Caddyfile too.
ROUTES: dict[str, str] = {
    "=/": "intake",  # the landing page
    "/agency": "intake",
    "/person": "intake",
    "/v1/referrals": "intake",
    "/v1/agencies": "intake",
    "/v1/vocabularies": "intake",
    "/v1/receivers/referrals": "intake",  # a receiver reads, with a grant, what the person shared
    "/operator/intake": "intake",
    "/assets": "intake",  # every service serves the same files
    "/lang": "intake",  # the language switch: a cookie every service reads
    "/receiver": "notify",
    "/signin": "notify",  # /signin/{code}: the link in a proposal mail
    "/v1/signin": "notify",
    "/v1/signout": "notify",
    "/v1/inbox": "notify",
    "/v1/receivers": "notify",
    "/operator/notify": "notify",
    "/operator": "matching",  # the directory's pages and operators' sign-in
    "/v1/services": "matching",
    "/v1/directory": "matching",
    "/v1/decisions": "matching",
}
SERVICES = ("intake", "matching", "notify")
HEALTH = "/health"  # the proxy's own; the services' /health is not routed

# Hop-by-hop headers (RFC 9110 7.6.1) and the forwarding ones this proxy sets itself.
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
        "proxy-authenticate", "proxy-authorization"}
_FORWARDING = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-real-ip",
               "forwarded"}


def route(path: str) -> str | None:
    """The service that answers `path` (percent-decoded), or None (not routed). Matched as
    Caddy matches: on the cleaned path ("/agency/../docs" is /docs, "//agency" is /agency),
    letters in any case; the request goes on with its path as sent."""
    clean = posixpath.normpath("/" + path.lstrip("/")).lower()
    if clean == "/":
        return ROUTES["=/"]
    best: str | None = None
    for prefix in ROUTES:
        if prefix.startswith("=") or not (clean == prefix or clean.startswith(prefix + "/")):
            continue
        if best is None or len(prefix) > len(best):
            best = prefix
    return ROUTES[best] if best else None


# What a person's browser gets when a service is down (a program gets the problem JSON).
# The same words as the Caddyfile's.
DOWN_PAGE = (
    '<!doctype html><html lang="id"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    "<title>Rujukan sedang tidak tersedia</title></head><body><main>"
    "<h1>Rujukan sedang tidak tersedia</h1><p>Bagian ini belum menjawab. Coba lagi dalam satu menit.</p>"
    '<p lang="en">This part of Rujukan is not answering. Try again in a minute.</p>'
    "</main></body></html>"
)


def _no_cookies() -> http.cookiejar.CookieJar:
    """A jar that keeps nothing: one person's Set-Cookie must never ride on another's request."""
    return http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))


async def _problem(send: Send, status: int, title: str, detail: str) -> None:
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/problem+json"),
                            (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


def _wants_html(scope: Scope) -> bool:
    return any(k.lower() == b"accept" and b"text/html" in v for k, v in scope["headers"])


async def _page(send: Send, status: int, html: str) -> None:
    body = html.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/html; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


class Proxy:
    """An ASGI app forwarding each request to the service that `route` names."""

    def __init__(self, upstreams: dict[str, str], client: httpx.AsyncClient | None = None) -> None:
        missing = set(SERVICES) - set(upstreams)
        if missing:
            raise ValueError(f"no upstream for {', '.join(sorted(missing))}")
        self.upstreams = {name: url.rstrip("/") for name, url in upstreams.items()}
        self._client = client

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            # No read timeout: an import or a slow page is the service's to end, not ours.
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5.0), follow_redirects=False,
                                             cookies=_no_cookies(), trust_env=False)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        # websockets: none of the services has any; the server refuses the handshake.

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path == HEALTH:
            body = b'{"status":"ok"}'
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"15")]})
            await send({"type": "http.response.body", "body": body})
            return
        service = route(path)
        if service is None:
            await _problem(send, 404, "Not Found", "Nothing is served at this address.")
            return
        raw_path: bytes = scope.get("raw_path") or path.encode()
        url = self.upstreams[service] + raw_path.decode("latin-1")
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        request = self.client.build_request(scope["method"], url, headers=self._headers(scope),
                                            content=self._body(scope, receive))
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TransportError:
            if _wants_html(scope):
                await _page(send, 502, DOWN_PAGE)
            else:
                await _problem(send, 502, "Bad Gateway",
                               f"The {service} service is not answering. Try again in a minute.")
            return
        try:
            headers = [(k, v) for k, v in response.headers.raw if k.decode("latin-1").lower() not in _HOP]
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except httpx.TransportError:
            # The service went away mid-answer: the status is sent, all we can do is stop.
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    @staticmethod
    def _headers(scope: Scope) -> list[tuple[bytes, bytes]]:
        headers: list[tuple[bytes, bytes]] = []
        host = b""
        for k, v in scope["headers"]:
            name = k.lower()
            if name == b"host":
                host = v
            if name.decode("latin-1") in _HOP | _FORWARDING:
                continue
            headers.append((k, v))
        client = scope.get("client")
        headers += [(b"x-forwarded-for", (client[0] if client else "unknown").encode()),
                    (b"x-forwarded-proto", scope.get("scheme", "http").encode()),
                    (b"x-forwarded-host", host)]
        return headers

    @staticmethod
    def _body(scope: Scope, receive: Receive) -> AsyncIterator[bytes] | bytes:
        has_body = any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in scope["headers"])
        if not has_body:
            return b""

        async def chunks() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                if message.get("body"):
                    yield message["body"]
                if not message.get("more_body"):
                    return

        return chunks()


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m devtools.proxy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--upstream", action="append", default=[], metavar="SERVICE=URL",
                        help="where a service listens, e.g. intake=http://127.0.0.1:8001 (once per service)")
    args = parser.parse_args(argv)
    try:
        upstreams = dict(u.split("=", 1) for u in args.upstream)
        app = Proxy(upstreams)
    except ValueError as e:
        parser.error(str(e))
    # The proxy is the edge: it trusts no X-Forwarded-* from its clients, and logs no URL.
    # The services' own Date and Server headers pass through: uvicorn adds none of its own.
    uvicorn.run(app, host=args.host, port=args.port, proxy_headers=False, access_log=False, log_level="warning",
                lifespan="on", timeout_graceful_shutdown=10, server_header=False, date_header=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
