"""The one address in front of the real services (processes started as `make run` starts
them): through the dev proxy and through compose's Caddy alike, the API, the assets and the
language switch answer, a page's form posts with its CSRF check intact (the services compare
the form's Origin with the Host the proxy kept), each service's own routes stay behind, and
a dev proxy that dies is started again; `make run` will not start behind an address another
program holds (the links in mails would lead there)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.devstack import APP_SERVICES, ROOT, Stack
from devtools.redis_server import free_port
from tests.apps import AGENCY_PEPPER, DEMO_KEY, DIRECTORY_KEY, GRANT_SECRET, OPERATOR_KEYS, TEST_KEYS
from tests.integration.test_dev_proxy import stop


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack, supervised as `make run` supervises it."""
    var = tmp_path_factory.mktemp("stack") / "var"
    env = {"PATH": os.environ["PATH"], "RUJUKAN_ENV": "development", "DEMO_API_KEY": DEMO_KEY,
           "OPERATOR_KEYS": OPERATOR_KEYS, "ENCRYPTION_KEYS": TEST_KEYS, "AGENCY_KEY_PEPPER": AGENCY_PEPPER,
           "RECEIVER_GRANT_SECRET": GRANT_SECRET, "SEED_DEMO": "true", "LOG_LEVEL": "INFO",
           "RUJUKAN_REDIS_PORT": str(free_port()), "RUJUKAN_SMTP_PORT": str(free_port()),
           "RUJUKAN_PROXY_PORT": str(free_port()),
           **{f"RUJUKAN_{n.upper()}_PORT": str(free_port()) for n in APP_SERVICES}}
    s = Stack(var, env=env, log_dir=var / "logs")
    try:
        s.start()
        s.wait_healthy(timeout=90)
        supervisor = threading.Thread(target=s.supervise, daemon=True)
        supervisor.start()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module", params=["dev", "caddy"])
def origin(request: pytest.FixtureRequest, stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "dev":
        yield stack.origin
        return
    if shutil.which("caddy") is None:
        pytest.skip("caddy is not installed (apt-get install caddy; .ci/run does)")
    from tests.integration.test_dev_proxy_caddy import start_caddy

    proc, url = start_caddy(tmp_path_factory.mktemp("caddy"),
                            {n: f"http://127.0.0.1:{stack.port(n)}" for n in APP_SERVICES})
    yield url
    stop(proc)


def test_the_services_answer_through_one_address(origin: str) -> None:
    agency = {"Authorization": f"Bearer {DEMO_KEY}"}
    assert httpx.get(f"{origin}/v1/referrals", headers=agency).status_code == 200
    assert httpx.get(f"{origin}/v1/vocabularies/pmks-categories", headers=agency).status_code == 200
    services = httpx.get(f"{origin}/v1/services", headers={"Authorization": f"Bearer {DIRECTORY_KEY}"})
    assert services.json()["total_items"] >= 4  # matching's demo directory
    assert httpx.get(f"{origin}/v1/inbox").status_code == 401  # notify's, without a credential
    css = httpx.get(f"{origin}/assets/rujukan.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    switched = httpx.get(f"{origin}/lang/en?next=/agency")
    assert switched.status_code == 303
    assert switched.headers["location"] == "/agency"
    assert "set-cookie" in switched.headers
    # Each service's own routes stay on its own port.
    for path in ("/docs", "/openapi.json", "/metrics", "/v1/ops/dead-letters"):
        r = httpx.get(f"{origin}{path}", headers={"Authorization": f"Bearer {DIRECTORY_KEY}"})
        assert r.status_code == 404, path
        assert r.headers["content-type"] == "application/problem+json", path


def test_a_form_posts_through_one_address_with_its_csrf_check(origin: str) -> None:
    with httpx.Client(base_url=origin) as browser:
        form = browser.get("/agency/signin")
        assert form.status_code == 200
        # The double-submit token: the form's hidden field holds the cookie's value.
        token = browser.cookies["rujukan_csrf"]
        data = {"email": "staf@uptd-ppa.example", "csrf_token": token}
        sent = browser.post("/agency/signin", data=data, headers={"Origin": origin})
        assert sent.status_code == 200, sent.text
        # Another site's form, or one that lies about the host through the proxy, is refused.
        assert browser.post("/agency/signin", data=data, headers={"Origin": "http://evil.example"}).status_code == 403
        forged = browser.post("/agency/signin", data=data,
                              headers={"Origin": "http://evil.example", "X-Forwarded-Host": "evil.example"})
        assert forged.status_code == 403


def test_a_dev_proxy_that_dies_is_started_again(stack: Stack) -> None:
    first = stack.procs["proxy"]
    first.kill()
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{stack.origin}/health", timeout=1).status_code == 200 and stack.procs["proxy"] is not first:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the proxy was not started again"
        time.sleep(0.2)
    assert httpx.get(f"{stack.origin}/agency/signin").status_code == 200


def test_make_run_will_not_start_behind_an_address_another_program_holds(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**os.environ, "RUJUKAN_VAR": str(tmp_path / "var"), "RUJUKAN_PROXY_PORT": str(port),
               "RUJUKAN_REDIS_PORT": str(free_port()), "RUJUKAN_SMTP_PORT": str(free_port())}
        r = subprocess.run([sys.executable, "-m", "devtools.devstack"], cwd=ROOT, env=env, capture_output=True,
                           timeout=60)
    assert r.returncode == 2
    assert f"port {port} is in use: set RUJUKAN_PROXY_PORT".encode() in r.stderr
    assert b"Traceback" not in r.stderr
    assert not (tmp_path / "var" / "redis").exists()  # nothing was started
