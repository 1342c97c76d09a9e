"""Compose's proxy for real: deploy/caddy/Caddyfile validates, and real Caddy, run on that
file in front of the same three stand-ins as the dev proxy's test, sends every prefix to
the same service as devtools/proxy.py (the one routing table), refuses the rest, keeps
Host and cookies, sets X-Forwarded-* itself, and answers a service that is down with a
502 problem. `.ci/run` installs Debian's caddy."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from dnslib import QTYPE, RR, A, DNSRecord
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from devtools.proxy import DOWN_PAGE
from devtools.redis_server import free_port
from tests.integration.test_dev_proxy import (
    BROWSER_ACCEPT,
    ROOT,
    Upstream,
    Upstreams,
    check_routes,
    stop,
    wait_listening,
)

CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"
CADDY = shutil.which("caddy")
pytestmark = pytest.mark.skipif(CADDY is None, reason="caddy is not installed (apt-get install caddy; .ci/run does)")


def caddy_env(home: Path, **env: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(home), "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"), **env}


def upstream_env(upstreams: dict[str, str]) -> dict[str, str]:
    """The variables naming each service's host and port, from "http://host:port"."""
    env = {}
    for name, url in upstreams.items():
        host, port = url.removeprefix("http://").rsplit(":", 1)
        env |= {f"{name.upper()}_HOST": host, f"{name.upper()}_PORT": port}
    return env


def start_caddy(home: Path, upstreams: dict[str, str], https: bool = False,
                **extra_env: str) -> tuple[subprocess.Popen[bytes], str]:
    """Caddy on the compose file, its upstreams and address from the variables the file
    reads; its admin endpoint off (another Caddy may hold 2019 on this machine). With
    https, as with a domain: "localhost" gets a certificate from Caddy's own authority (kept
    under `home`, never installed in the system's trust store) and HTTP redirects to HTTPS."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "Caddyfile"
    port, http_port = free_port(), free_port()
    options = f"\tadmin off\n\tskip_install_trust\n\thttp_port {http_port}\n"
    config.write_text("{\n" + options + "}\n\n" + CADDYFILE.read_text())
    site = f"https://localhost:{port}" if https else f":{port}"
    env = caddy_env(home, SITE_ADDRESS=site, **upstream_env(upstreams), **extra_env)
    assert CADDY is not None
    proc = subprocess.Popen([CADDY, "run", "--config", str(config), "--adapter", "caddyfile"], env=env,
                            stdout=subprocess.DEVNULL, stderr=(home / "caddy.log").open("wb"))
    url = f"https://localhost:{port}" if https else f"http://127.0.0.1:{port}"
    wait_listening(url, proc)
    return proc, url


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    with Upstreams() as u:
        yield u


@pytest.fixture(scope="module")
def caddy(upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc, url = start_caddy(tmp_path_factory.mktemp("caddy"), upstreams.urls())
    yield url
    stop(proc)


def test_the_compose_caddyfile_validates_as_compose_runs_it(tmp_path: Path) -> None:
    assert CADDY is not None
    # No variable set: the compose defaults (":80", intake:8001, ...).
    r = subprocess.run([CADDY, "validate", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
                       env=caddy_env(tmp_path), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    assert b"Valid configuration" in r.stdout + r.stderr
    # With a domain: automatic HTTPS, still valid.
    r = subprocess.run([CADDY, "adapt", "--config", str(CADDYFILE), "--adapter", "caddyfile"],
                       env=caddy_env(tmp_path, SITE_ADDRESS="rujukan.example.org"), capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    assert b'"rujukan.example.org"' in r.stdout
    assert b"Strict-Transport-Security" in r.stdout
    # Each service by its name in compose's DNS, every replica it lists, round-robin.
    adapted = json.loads(r.stdout)
    proxies = [handler for handler in _handlers(adapted) if handler.get("handler") == "reverse_proxy"]
    assert sorted((p["dynamic_upstreams"]["name"], p["dynamic_upstreams"]["port"]) for p in proxies) == [
        ("intake", "8001"), ("matching", "8002"), ("notify", "8003")]
    for p in proxies:
        assert p["dynamic_upstreams"]["source"] == "a"
        assert p["load_balancing"]["selection_policy"]["policy"] == "round_robin"
        assert "upstreams" not in p  # no fixed address: a scaled service is found again


def _handlers(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "handler" in node:
            yield node
        for value in node.values():
            yield from _handlers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _handlers(item)


def test_caddy_and_the_dev_proxy_send_every_prefix_to_the_same_service(caddy: str) -> None:
    # check_routes holds the dev proxy to devtools.proxy.route too (test_dev_proxy.py).
    check_routes(caddy)


def test_caddy_keeps_host_and_cookies_and_sets_the_forwarded_headers_itself(caddy: str) -> None:
    r = httpx.get(f"{caddy}/receiver/proposals?cookie=1",
                  headers={"Host": "rujukan.example", "Cookie": "rujukan_session=abc; rujukan_csrf=def",
                           "X-Forwarded-For": "10.9.9.9", "X-Forwarded-Host": "evil.example",
                           "X-Forwarded-Proto": "https"})
    seen = r.json()
    headers = dict(seen["headers"])
    assert seen["service"] == "notify"
    assert headers["host"] == "rujukan.example"
    assert headers["cookie"] == "rujukan_session=abc; rujukan_csrf=def"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-host"] == "rujukan.example"
    assert headers["x-forwarded-proto"] == "http"
    assert "keep-alive" not in r.headers
    assert "strict-transport-security" not in r.headers  # plain HTTP here
    assert r.headers.get_list("set-cookie") == ["rujukan_session=s1; HttpOnly; SameSite=Lax; Path=/",
                                                "rujukan_csrf=c1; SameSite=Lax; Path=/"]
    r = httpx.post(f"{caddy}/v1/directory/import", content=b"x" * 3_000_000, timeout=30)
    assert (r.json()["service"], r.json()["body_size"]) == ("matching", 3_000_000)


def test_caddy_answers_a_service_that_is_down_with_a_502_problem(upstreams: Upstreams, tmp_path: Path) -> None:
    urls = {**upstreams.urls(), "notify": f"http://127.0.0.1:{free_port()}"}
    proc, url = start_caddy(tmp_path / "down", urls)
    try:
        r = httpx.get(f"{url}/v1/inbox", timeout=15)  # after trying for a replica up to 3 s
        assert r.status_code == 502
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 502
        page = httpx.get(f"{url}/receiver/proposals/p1", headers={"Accept": BROWSER_ACCEPT}, timeout=15)
        assert page.status_code == 502
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert page.text == DOWN_PAGE  # the same page as the dev proxy's
        assert httpx.get(f"{url}/agency").json()["service"] == "intake"
    finally:
        stop(proc)


def test_over_https_the_services_learn_it_and_browsers_keep_to_it(upstreams: Upstreams, tmp_path: Path) -> None:
    proc, url = start_caddy(tmp_path / "tls", upstreams.urls(), https=True)
    try:
        r = httpx.get(f"{url}/receiver?cookie=1", verify=False)
        seen = dict(r.json()["headers"])
        assert r.json()["service"] == "notify"
        assert seen["x-forwarded-proto"] == "https"  # the services' request.url is https
        assert seen["host"] == url.removeprefix("https://")
        assert r.headers["strict-transport-security"] == "max-age=31536000"
        assert len(r.headers.get_list("set-cookie")) == 2
    finally:
        stop(proc)


# -- Scaled services: every replica compose's DNS lists gets requests; one gone loses none. -----


class ReplicaDns(BaseResolver):  # type: ignore[misc]
    """A DNS server of the test's own, as compose's is: a service name -> its replicas' addresses."""

    def __init__(self, names: dict[str, list[str]]) -> None:
        self.names = names

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".")
        if request.q.qtype == QTYPE.A:
            for address in self.names.get(name, []):
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(address), ttl=1))
        return reply


class Replica:
    """A stand-in replica of a service, on its own loopback address."""

    def __init__(self, name: str, address: str, port: int) -> None:
        self.app = Upstream(f"{name}@{address}", port)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host=address, port=port, log_level="warning",
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> Replica:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "the replica did not start"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def test_caddy_shares_requests_among_a_scaled_services_replicas_and_skips_one_that_is_gone(
        upstreams: Upstreams, tmp_path: Path) -> None:
    port = free_port()
    addresses = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    replicas = [Replica("matching", address, port).start() for address in addresses]
    names, dns_port = ReplicaDns({"matching.rujukan.test": addresses}), free_port()
    # Caddy asks over TCP; UDP too, as resolvers may.
    quiet = DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data")
    dns = [DNSServer(names, port=dns_port, address="127.0.0.1", tcp=tcp, logger=quiet) for tcp in (True, False)]
    for server in dns:
        server.start_thread()
    urls = {**upstreams.urls(), "matching": f"http://matching.rujukan.test:{port}"}
    resolvers = f"resolvers 127.0.0.1:{dns_port}"
    proc, url = start_caddy(tmp_path / "scaled", urls, UPSTREAM_RESOLVERS=resolvers)
    try:
        answered = [httpx.get(f"{url}/v1/services", timeout=10).json()["service"] for _ in range(30)]
        assert set(answered) == {f"matching@{a}" for a in addresses}, answered  # each replica had its share
        assert httpx.get(f"{url}/agency", timeout=10).json()["service"] == "intake"  # the others as before
        # A replica goes away (scaled down): it stops, and compose's DNS stops listing it.
        replicas[0].stop()
        names.names["matching.rujukan.test"] = addresses[1:]
        live = {f"matching@{a}" for a in addresses[1:]}
        # Reads meanwhile are tried again on a live replica: none lost.
        read = [httpx.get(f"{url}/v1/services", timeout=10) for _ in range(30)]
        assert [r.status_code for r in read] == [200] * 30
        assert {r.json()["service"] for r in read} == live
        time.sleep(5.5)  # the Caddyfile's `refresh 5s`: the proxy has looked the name up again
        written = [httpx.post(f"{url}/v1/services", json={"n": i}, timeout=10) for i in range(30)]
        assert [r.status_code for r in written] == [201] * 30, [r.text for r in written if r.status_code != 201][:1]
        assert {r.json()["service"] for r in written} == live
    finally:
        stop(proc)
        for server in dns:
            server.stop()
        for replica in replicas[1:]:
            replica.stop()
