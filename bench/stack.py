"""The services as real processes, started the way `make run` (devtools.devstack) starts them:
the command and environment compose.yaml gives each, with the addresses of the bench's own
Redis, PostgreSQL databases and SMTP sink in place of the containers'."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from devtools.devstack import REPLACED_LOCALLY, ROOT, development_env, load_compose, local_environment
from devtools.redis_server import free_port

DEMO_API_KEY = "rujukan-bench-key"


class Services:
    def __init__(self, names: list[str], *, redis_url: str, smtp_url: str, database_urls: dict[str, str],
                 var: Path, extra_env: dict[str, str] | None = None) -> None:
        self.names = names
        self.redis_url = redis_url
        self.smtp_url = smtp_url
        self.database_urls = database_urls
        self.var = var
        self.extra_env = extra_env or {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    def start(self, timeout: float = 90.0) -> Services:
        from intake.adapters.crypto import FieldCipher

        self.var.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "DATABASE_", "SMTP_"))}
        # Development values (its own secrets under var/secrets): the bench's Redis has no password.
        env.update(development_env(self.var))
        env.update({
            "DEMO_API_KEY": DEMO_API_KEY,
            "ENCRYPTION_KEYS": FieldCipher.generate("bench1"),
            # The bench loads its own directory of services; the demo one would add to it.
            "SEED_DEMO": "false",
        })
        env.update({f"{name.upper()}_DATABASE_URL": url for name, url in self.database_urls.items()})
        env.update(self.extra_env)
        specs = load_compose(env={**REPLACED_LOCALLY, **env})
        for name in self.names:
            spec = specs[name]
            port = free_port()
            spec.environment["PORT"] = str(port)
            self.ports[name] = port
            child_env = {**env, **local_environment(spec, self.var, self.redis_url, self.smtp_url, env)}
            # compose's extra variables (e.g. LOG_LEVEL) may be overridden by the bench's.
            child_env.update(self.extra_env)
            cmd = [sys.executable if c == "python" else c for c in spec.command]
            with (self.var / f"{name}.log").open("ab") as log:
                self.procs[name] = subprocess.Popen(cmd, env=child_env, cwd=ROOT, start_new_session=True,
                                                    stdout=log, stderr=subprocess.STDOUT)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for name in self.names:
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.ports[name]}/health", timeout=2):
                        break
                except Exception:
                    if self.procs[name].poll() is not None:
                        raise RuntimeError(f"{name} exited with {self.procs[name].returncode}; see "
                                           f"{self.var / (name + '.log')}") from None
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{name} not healthy after {timeout:.0f}s") from None
                    time.sleep(0.2)

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs.values()]

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def __enter__(self) -> Services:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
