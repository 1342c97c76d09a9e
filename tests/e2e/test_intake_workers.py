"""WEB_CONCURRENCY=2 runs intake as two worker processes on one port: two replicas that
start together (the demo agency created once, not a crash), both serving, nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_sync

from devtools.redis_server import free_port
from tests.apps import DEMO_KEY, TEST_KEYS
from tests.unit.test_referral_request import VALID

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes() if int(stat[1]) == pid else b""
            # uvicorn's workers are multiprocessing children (not its resource tracker).
            if stat[0] != "Z" and b"spawn_main" in cmdline:
                out.append(int(entry))
    return out


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_two_workers_are_two_replicas(redis_url: str, postgres_server: Any, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "REDIS_URL": redis_url,
           "DATABASE_URL": postgres_server.create_database("intake_workers"), "ENCRYPTION_KEYS": TEST_KEYS,
           "DEMO_API_KEY": DEMO_KEY, "WEB_CONCURRENCY": "2", "LOG_LEVEL": "INFO"}
    log = (tmp_path / "intake.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "intake"], env=env, cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    r = redis_sync.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "intake.log").read_text()[-2000:]
            started = (tmp_path / "intake.log").read_text().count("Application startup complete")
            if started >= 2 and _healthy(base):
                break
            time.sleep(0.2)
        # Two worker processes under the one we started, each through its lifespan
        # (migrations, the demo agency, its consumer and relay) at the same moment.
        assert len(_children(proc.pid)) == 2
        assert (tmp_path / "intake.log").read_text().count("Application startup complete") == 2

        accepted = []
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {DEMO_KEY}"}) as client:
            for i in range(20):
                body = json.loads(json.dumps(VALID))
                body["external_ref"] = f"workers-{i}"
                resp = client.post("/v1/referrals", json=body)
                assert resp.status_code == 202, resp.text
                accepted.append(resp.json()["id"])
            for rid in accepted:  # either worker reads what either one wrote
                assert client.get(f"/v1/referrals/{rid}").status_code == 200
        # Every accepted referral was published once, whichever worker took it.
        deadline = time.monotonic() + 20
        published: set[str] = set()
        while time.monotonic() < deadline and len(published) < len(accepted):
            published = set()
            for stream in ("rujukan:referral.submitted", "rujukan:referral.submitted:urgent"):
                for _, fields in r.xrange(stream):
                    published.add(json.loads(fields[b"event"])["subject"])
            time.sleep(0.2)
        assert set(accepted) <= published
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        r.close()
        log.close()
