"""Compose's proxy for real: deploy/caddy/Caddyfile validates, and real Caddy, run on that
file in front of the same three stand-ins as the dev proxy's test, sends every prefix to
the same service as devtools/proxy.py (the one routing table), refuses the rest, keeps
Host and cookies, sets X-Forwarded-* itself, and answers a service that is down with a
502 problem. `.ci/run` installs Debian's caddy."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.proxy import DOWN_PAGE
from devtools.redis_server import free_port
from tests.integration.test_dev_proxy import BROWSER_ACCEPT, ROOT, Upstreams, check_routes, stop, wait_listening

CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"
CADDY = shutil.which("caddy")
pytestmark = pytest.mark.skipif(CADDY is None, reason="caddy is not installed (apt-get install caddy; .ci/run does)")


def caddy_env(home: Path, **env: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "HOME": str(home), "XDG_DATA_HOME": str(home / "data"),
            "XDG_CONFIG_HOME": str(home / "config"), **env}


def start_caddy(home: Path, upstreams: dict[str, str], https: bool = False) -> tuple[subprocess.Popen[bytes], str]:
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
    env = caddy_env(home, SITE_ADDRESS=site,
                    **{f"{name.upper()}_UPSTREAM": url.removeprefix("http://") for name, url in upstreams.items()})
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
    for upstream in (b'"intake:8001"', b'"matching:8002"', b'"notify:8003"'):
        assert upstream in r.stdout


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
        r = httpx.get(f"{url}/v1/inbox")
        assert r.status_code == 502
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 502
        page = httpx.get(f"{url}/receiver/proposals/p1", headers={"Accept": BROWSER_ACCEPT})
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
