"""A second `make run` while one runs (or another program holding a port): every busy port
named with the variable that moves it, before anything starts, without a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from devtools.devstack import ROOT
from devtools.redis_server import free_port


def test_every_busy_port_is_named_with_its_variable_and_nothing_starts(tmp_path: Path) -> None:
    with socket.socket() as proxy, socket.socket() as intake, socket.socket() as redis:
        for s in (proxy, intake, redis):
            s.bind(("127.0.0.1", 0))
            s.listen()
        ports = {name: s.getsockname()[1] for name, s in (("proxy", proxy), ("intake", intake), ("redis", redis))}
        env = {**os.environ, "RUJUKAN_VAR": str(tmp_path / "var"), "RUJUKAN_PROXY_PORT": str(ports["proxy"]),
               "RUJUKAN_INTAKE_PORT": str(ports["intake"]), "RUJUKAN_REDIS_PORT": str(ports["redis"]),
               "RUJUKAN_MATCHING_PORT": str(free_port()), "RUJUKAN_NOTIFY_PORT": str(free_port()),
               "RUJUKAN_SMTP_PORT": str(free_port())}
        env.pop("REDIS_URL", None)
        env.pop("SMTP_URL", None)
        r = subprocess.run([sys.executable, "-m", "devtools.devstack"], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert f"port {ports['proxy']} is in use: set RUJUKAN_PROXY_PORT" in r.stderr
    assert f"port {ports['intake']} is in use: set RUJUKAN_INTAKE_PORT" in r.stderr
    assert f"port {ports['redis']} is in use: set RUJUKAN_REDIS_PORT" in r.stderr
    for free in ("RUJUKAN_MATCHING_PORT", "RUJUKAN_NOTIFY_PORT", "RUJUKAN_SMTP_PORT"):
        assert f"set {free}" not in r.stderr  # only what is busy
    assert "make run" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "var" / "redis").exists()  # nothing was started
