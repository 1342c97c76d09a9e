"""`make run`'s runner as a user starts it: everything comes up behind one address (the
banner shows it; the links in mails point at it and work through it), and Ctrl-C stops
everything (the proxy, the services, its redis-server, the mail catcher) cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from devtools.devstack import ROOT
from devtools.mailcatcher import read_maildir
from devtools.redis_server import free_port
from tests.apps import DEMO_KEY
from tests.unit.test_referral_request import VALID

pytestmark = pytest.mark.e2e
SIGNIN = re.compile(r"(https?://[^\s\"'<>]+?/(?:v1/)?signin/[A-Za-z0-9_\-]+)")


def texts(path: Path) -> list[str]:
    """Every mail saved under `path`, its text parts joined."""
    out = []
    for mail in read_maildir(path):
        parts = mail.walk() if mail.is_multipart() else [mail]
        out.append("\n".join(str(p.get_content()) for p in parts if p.get_content_type() == "text/plain"))
    return out


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_runner_starts_the_stack_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("intake", "matching", "notify", "redis", "smtp", "proxy")}
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SMTP_URL", "DATABASE_URL")}
    env.update({
        "RUJUKAN_VAR": str(tmp_path / "var"), "DEMO_API_KEY": DEMO_KEY,
        "RUJUKAN_REDIS_PORT": str(ports["redis"]), "RUJUKAN_SMTP_PORT": str(ports["smtp"]),
        **{f"RUJUKAN_{n.upper()}_PORT": str(ports[n]) for n in ("intake", "matching", "notify", "proxy")},
    })
    log = (tmp_path / "runner.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "devtools.devstack"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while "Rujukan is running" not in (tmp_path / "runner.log").read_text(errors="replace"):
            assert proc.poll() is None, (tmp_path / "runner.log").read_text()
            assert time.monotonic() < deadline, "the stack did not come up"
            time.sleep(0.2)
        for name in ("intake", "matching", "notify"):
            assert httpx.get(f"http://127.0.0.1:{ports[name]}/health").json()["status"] == "ok"
        assert (tmp_path / "var" / "redis").is_dir()
        assert (tmp_path / "var" / "intake.db").exists()
        r = httpx.get(f"http://127.0.0.1:{ports['intake']}/v1/referrals",
                      headers={"Authorization": f"Bearer {DEMO_KEY}"})
        assert r.status_code == 200
        # Development: an operator key per role, made here (never a published one) and shown.
        keys = json.loads((tmp_path / "var" / "secrets" / "operator_keys.json").read_text())
        assert set(keys) == {"directory", "operations", "onboarding", "audit"}
        assert keys["directory"] in (tmp_path / "runner.log").read_text(errors="replace")
        r = httpx.get(f"http://127.0.0.1:{ports['matching']}/v1/services",
                      headers={"Authorization": f"Bearer {keys['directory']}"})
        assert r.status_code == 200
        assert r.json()["total_items"] >= 4  # the demo directory

        # One address for people, shown in the banner: the pages and the API of all three.
        origin = f"http://127.0.0.1:{ports['proxy']}"
        assert f"Open {origin}/" in (tmp_path / "runner.log").read_text(errors="replace")
        assert httpx.get(f"{origin}/health").json() == {"status": "ok"}
        assert httpx.get(f"{origin}/v1/services", headers={"Authorization": f"Bearer {keys['directory']}"}
                         ).json()["total_items"] >= 4
        assert httpx.get(f"{origin}/docs").status_code == 404  # each service's own stays on its port
        r = httpx.post(f"{origin}/v1/referrals", json=VALID, headers={"Authorization": f"Bearer {DEMO_KEY}"})
        assert r.status_code == 202, r.text
        # The proposal mail's link points at that address and signs the receiver in through it.
        deadline = time.monotonic() + 60
        while not (links := [m.group(1) for t in texts(tmp_path / "var" / "mail") if (m := SIGNIN.search(t))]):
            assert time.monotonic() < deadline, "no proposal mail with a sign-in link"
            time.sleep(0.3)
        assert links[0].startswith(f"{origin}/"), links[0]
        signed_in = httpx.get(links[0])
        assert signed_in.status_code == 303, signed_in.text
        assert "rujukan_session" in signed_in.cookies
        opened = httpx.get(httpx.URL(links[0]).join(signed_in.headers["location"]), cookies=signed_in.cookies)
        assert opened.status_code == 200, opened.text
        assert str(opened.url).startswith(f"{origin}/")

        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    out = (tmp_path / "runner.log").read_text(errors="replace")
    assert "[stack] stopped." in out
    deadline = time.monotonic() + 10
    while any(listening(p) for p in ports.values()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [n for n, p in ports.items() if listening(p)], "something is still listening"
    assert "Traceback" not in out, out[-3000:]
