"""`make run` on a machine with only python3 and make: from a clean clone, with no uv on
PATH, it sets up its own uv, installs only what running needs, and starts the stack."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from devtools.devstack import ROOT
from devtools.redis_server import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BARE_PATH = "/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_make_run_from_a_clean_clone_without_uv(tmp_path: Path) -> None:
    if shutil.which("uv", path=BARE_PATH) or not shutil.which("python3", path=BARE_PATH):
        pytest.skip("this machine's system PATH has uv, or no python3: not a bare machine")
    if not shutil.which("make", path=BARE_PATH) or not shutil.which("git"):
        pytest.skip("make or git missing")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    ports = {name: free_port() for name in ("intake", "matching", "notify", "redis", "smtp", "proxy")}
    # The machine's environment (certificates, package index settings) less uv and the
    # test run's virtual environment.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("UV_", "RUJUKAN_")) and k not in ("UV", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    }
    env.update(
        {
            "PATH": BARE_PATH,
            "RUJUKAN_REDIS_PORT": str(ports["redis"]),
            "RUJUKAN_SMTP_PORT": str(ports["smtp"]),
            "RUJUKAN_PROXY_PORT": str(ports["proxy"]),
            **{f"RUJUKAN_{n.upper()}_PORT": str(ports[n]) for n in ("intake", "matching", "notify")},
        }
    )
    log_path = tmp_path / "make-run.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ["make", "run"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 420
            while "Rujukan is running" not in log_path.read_text(errors="replace"):
                assert proc.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, log_path.read_text()[-3000:]
                time.sleep(0.5)
            for name in ("intake", "matching", "notify", "proxy"):
                assert httpx.get(f"http://127.0.0.1:{ports[name]}/health").json()["status"] == "ok"
            assert (clone / "var" / "tools" / "bin" / "uv").exists(), "uv was not set up by make"
            site = next((clone / ".venv" / "lib").glob("python3*/site-packages"))
            assert (site / "fastapi").is_dir()
            # Running needs no test tool chain.
            assert not (site / "pytest").exists()
            assert not (site / "mypy").exists()
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's group
            # make reports the interrupt of its child with its own status, as under a terminal;
            # what counts is that the stack stopped everything it started, cleanly.
            proc.wait(timeout=90)
            assert "[stack] stopped." in log_path.read_text(errors="replace"), log_path.read_text()[-3000:]
            for name in ports:
                with socket.socket() as sock:
                    assert sock.connect_ex(("127.0.0.1", ports[name])) != 0, f"{name} still listening"
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert "Traceback" not in log_path.read_text(errors="replace")
