"""`make run`'s one address (devtools/proxy.py) as a real process in front of three real
HTTP servers standing in for intake, matching and notify: each prefix reaches its service
and nothing else does; Host, cookies and Set-Cookie pass untouched, X-Forwarded-* are the
proxy's own, bodies stream both ways, and a service that is down is a 502 problem."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import uvicorn

from devtools.proxy import DOWN_PAGE, ROUTES, SERVICES, route
from devtools.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


# -- Three stand-ins for the services: each says who it is and what reached it. -----------------


@dataclass
class Upstream:
    name: str
    port: int = field(default_factory=free_port)
    # A streamed answer waits here between its two halves (set by the test).
    release: threading.Event = field(default_factory=threading.Event)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        digest, size = hashlib.sha256(), 0
        while True:
            message = await receive()
            digest.update(message.get("body", b""))
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        query = scope["query_string"].decode()
        if "stream" in query:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"first half;", "more_body": True})
            released = await asyncio.to_thread(self.release.wait, 10)
            await send({"type": "http.response.body", "body": b"second half" if released else b"never released"})
            return
        body = json.dumps({
            "service": self.name, "method": scope["method"], "path": scope["raw_path"].decode(), "query": query,
            "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
            "body_size": size, "body_sha256": digest.hexdigest(),
        }).encode()
        headers = [(b"content-type", b"application/json")]
        if "cookie" in query:
            headers += [(b"keep-alive", b"timeout=600"),  # hop-by-hop: never past the proxy
                        (b"set-cookie", b"rujukan_session=s1; HttpOnly; SameSite=Lax; Path=/"),
                        (b"set-cookie", b"rujukan_csrf=c1; SameSite=Lax; Path=/")]
        await send({"type": "http.response.start", "status": 201 if scope["method"] == "POST" else 200,
                    "headers": headers})
        await send({"type": "http.response.body", "body": body})


class Upstreams:
    """The three stand-ins, served by uvicorn in threads of this process."""

    def __init__(self) -> None:
        self.apps = {name: Upstream(name) for name in SERVICES}
        self.servers = [uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=app.port, log_level="warning",
                                                      lifespan="off"))
                        for app in self.apps.values()]
        self.threads = [threading.Thread(target=s.run, daemon=True) for s in self.servers]

    def __enter__(self) -> Upstreams:
        for t in self.threads:
            t.start()
        deadline = time.monotonic() + 10
        while not all(s.started for s in self.servers):
            assert time.monotonic() < deadline, "the stand-in services did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *_: Any) -> None:
        for s in self.servers:
            s.should_exit = True
        for t in self.threads:
            t.join(timeout=10)

    def urls(self) -> dict[str, str]:
        return {name: f"http://127.0.0.1:{app.port}" for name, app in self.apps.items()}


def wait_listening(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(f"{url}/health", timeout=1, verify=False)  # a probe: Caddy's own authority over https
            return
        except httpx.TransportError:
            assert proc is None or proc.poll() is None, "the proxy exited"
            assert time.monotonic() < deadline, f"nothing answers at {url}"
            time.sleep(0.1)


def start_dev_proxy(upstreams: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "devtools.proxy", "--port", str(port)]
    cmd += [f"--upstream={n}={u}" for n, u in upstreams.items()]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    wait_listening(url, proc)
    return proc, url


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def probes() -> list[str]:
    """Every prefix, under it, and next to it (/agencyx is not /agency), plus what must not pass."""
    out = ["/", "/?next=/agency", "/health", "/docs", "/openapi.json", "/metrics", "/v1/ops/dead-letters",
           "/v1/receivers/r1/tokens", "/v1/receivers/referrals/ref1", "/operator/matching/dead-letters",
           "/operator/intake/dead-letters", "/operator/notify/dead-letters/d1/replay", "/v1", "/v1/",
           "/assets/site.css", "/lang/en?next=/receiver",
           # Matched on the cleaned, decoded path, as Caddy does; sent on as it came.
           "/agency/../docs", "/agency/%2e%2e/docs", "/agency/./x", "/agency/../operator/x", "//agency",
           "/agency//x", "/Agency", "/agency%2Fx", "/v1/receivers/referrals/../r1"]
    for prefix in ROUTES:
        if prefix.startswith("="):
            continue
        out += [prefix, prefix + "/", prefix + "/a/b", prefix + "x", prefix + "-1/a"]
    return out


def expected(path: str) -> str | None:
    """What answers `path` through the proxy: a service, "proxy" (its own /health) or None (404)."""
    bare = unquote(path.split("?", 1)[0])
    return "proxy" if bare == "/health" else route(bare)


def answer(origin: str, path: str, method: str = "GET") -> tuple[int, str | None, dict[str, Any]]:
    """(status, who answered, body) for a raw path (http.client sends it as written)."""
    host, port = origin.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        data = r.read()
    finally:
        conn.close()
    if r.status == 404 and r.getheader("content-type", "").startswith("application/problem+json"):
        return r.status, None, json.loads(data)
    body = json.loads(data) if data else {}
    return r.status, body.get("service", "proxy" if body.get("status") == "ok" else None), body


def check_routes(origin: str) -> None:
    wrong: dict[str, tuple[Any, ...]] = {}
    for path in probes():
        status, who, body = answer(origin, path)
        if who != expected(path) or (who is None and status != 404):
            wrong[path] = (status, who, expected(path))
        elif who in SERVICES and route(unquote(body["path"])) != who:
            # Sent on as it came, or with its dots resolved (httpx does): the service gets
            # nothing that is another's.
            wrong[path] = ("path changed to", body["path"])
    assert not wrong, wrong


# -- The dev proxy ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    with Upstreams() as u:
        yield u


@pytest.fixture(scope="module")
def proxy(upstreams: Upstreams) -> Iterator[str]:
    proc, url = start_dev_proxy(upstreams.urls())
    yield url
    stop(proc)


def test_each_prefix_reaches_its_service_and_nothing_else_passes(proxy: str) -> None:
    check_routes(proxy)
    # Every service is reached by some prefix, and the routes mean what the URL scheme says.
    assert {route(p) for p in ROUTES if not p.startswith("=")} == set(SERVICES)
    assert [route(p) for p in ("/", "/agency/referrals/new", "/receiver/proposals/p1", "/signin/abc",
                               "/operator/services", "/operator/intake/dead-letters")] == \
        ["intake", "intake", "notify", "notify", "matching", "intake"]


def test_every_method_passes_with_query_and_body(proxy: str) -> None:
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        r = httpx.request(method, f"{proxy}/v1/services/s1?x=1&y=%2F", content=b"abc",
                          headers={"content-type": "application/json"})
        assert r.json()["service"] == "matching"
        assert (r.json()["method"], r.json()["query"], r.json()["body_size"]) == (method, "x=1&y=%2F", 3)
    assert httpx.post(f"{proxy}/v1/referrals", json={}).status_code == 201


def test_host_cookies_and_set_cookie_pass_and_forwarded_headers_are_the_proxys(proxy: str) -> None:
    r = httpx.get(f"{proxy}/receiver/proposals?cookie=1",
                  headers={"Host": "rujukan.example", "Cookie": "rujukan_session=abc; rujukan_csrf=def",
                           "Origin": "http://rujukan.example",
                           # A client lying about where it is: replaced, never trusted.
                           "X-Forwarded-For": "10.9.9.9", "X-Forwarded-Host": "evil.example",
                           "X-Forwarded-Proto": "https", "Forwarded": "for=10.9.9.9"})
    seen = r.json()
    headers = dict(seen["headers"])
    assert seen["service"] == "notify"
    assert headers["host"] == "rujukan.example"
    assert headers["cookie"] == "rujukan_session=abc; rujukan_csrf=def"
    assert headers["origin"] == "http://rujukan.example"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-host"] == "rujukan.example"
    assert headers["x-forwarded-proto"] == "http"
    assert "forwarded" not in headers
    assert [k for k, _ in seen["headers"]].count("x-forwarded-for") == 1
    assert "keep-alive" not in r.headers
    # The service's answer comes back with its headers once each.
    assert len(r.headers.get_list("date")) == 1
    assert len(r.headers.get_list("server")) == 1
    # Both cookies the service set reach the browser as they were.
    assert r.headers.get_list("set-cookie") == ["rujukan_session=s1; HttpOnly; SameSite=Lax; Path=/",
                                                "rujukan_csrf=c1; SameSite=Lax; Path=/"]


def test_the_proxy_keeps_no_cookie_between_people(proxy: str) -> None:
    with httpx.Client() as first:
        first.get(f"{proxy}/receiver?cookie=1")  # the service sets a session for the first person
    with httpx.Client() as second:
        seen = second.get(f"{proxy}/receiver").json()
    assert "cookie" not in dict(seen["headers"])


def test_bodies_stream_both_ways(proxy: str, upstreams: Upstreams) -> None:
    # Up: 8 MB sent in chunks of unknown total length arrive whole.
    chunk = os.urandom(64 * 1024)

    def parts() -> Iterator[bytes]:
        yield from [chunk] * 128

    r = httpx.post(f"{proxy}/v1/directory/import", content=parts(), timeout=30)
    assert r.status_code == 201
    assert r.json()["body_size"] == 128 * len(chunk)
    assert r.json()["body_sha256"] == hashlib.sha256(chunk * 128).hexdigest()
    # Down: the first half reaches the client while the service still holds the second.
    release = upstreams.apps["notify"].release
    release.clear()
    with httpx.stream("GET", f"{proxy}/v1/inbox?stream=1", timeout=10) as s:
        chunks = s.iter_raw()
        assert next(chunks) == b"first half;"
        release.set()
        assert b"".join(chunks) == b"second half"


def test_a_service_that_is_down_is_a_502_problem_naming_it(upstreams: Upstreams) -> None:
    urls = {**upstreams.urls(), "notify": f"http://127.0.0.1:{free_port()}"}  # nothing listens there
    proc, url = start_dev_proxy(urls)
    try:
        r = httpx.get(f"{url}/v1/inbox", headers={"Accept": "application/json"})
        assert r.status_code == 502
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 502
        assert "notify" in r.json()["detail"]
        # A person's browser gets a page, in Bahasa Indonesia first.
        page = httpx.get(f"{url}/receiver/proposals/p1", headers={"Accept": BROWSER_ACCEPT})
        assert page.status_code == 502
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.text == DOWN_PAGE
        assert "<h1>Rujukan sedang tidak tersedia</h1>" in page.text
        assert httpx.get(f"{url}/agency").json()["service"] == "intake"  # the others still answer
    finally:
        stop(proc)


def test_the_proxy_refuses_to_start_without_every_upstream() -> None:
    r = subprocess.run([sys.executable, "-m", "devtools.proxy", "--port", str(free_port()),
                        "--upstream=intake=http://127.0.0.1:1"], cwd=ROOT, capture_output=True, timeout=30)
    assert r.returncode == 2
    assert b"no upstream for matching, notify" in r.stderr
