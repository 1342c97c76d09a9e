"""The embedded default (`make run`): the whole stack as local processes, no Docker.

- its own redis-server (append-only file on) under ./var/redis, unless REDIS_URL is set;
- an SMTP catcher that keeps every mail as .eml under ./var/mail, unless SMTP_URL is set;
- intake, matching and notify, each with a SQLite database under ./var, started with the
  command and environment that `compose.yaml` gives them (one source of truth), with only
  the addresses of Redis, SMTP and the databases replaced by local ones.

Ctrl-C (or SIGTERM) stops the services gracefully, then Redis and the mail catcher.
A service that dies is started again.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from shared.mailcatcher import MailCatcher
from shared.redis_server import RedisProcess

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = ("intake", "matching", "notify")
DEFAULT_DEMO_API_KEY = "rujukan-demo-key"
DEFAULT_ADMIN_API_KEY = "rujukan-admin-key"
_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}")


@dataclass
class AppSpec:
    name: str
    command: list[str]
    environment: dict[str, str]


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR:-default} interpolation, enough for our compose file."""
    return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)


def load_compose(path: Path = ROOT / "compose.yaml", env: dict[str, str] | None = None) -> dict[str, AppSpec]:
    env = dict(os.environ if env is None else env)
    doc = yaml.safe_load(path.read_text())
    specs = {}
    for name in APP_SERVICES:
        svc = doc["services"][name]
        environment = {k: interpolate(str(v), env) for k, v in (svc.get("environment") or {}).items()}
        specs[name] = AppSpec(name, [str(c) for c in svc["command"]], environment)
    return specs


def local_environment(spec: AppSpec, var: Path, redis_url: str, smtp_url: str,
                      env: dict[str, str]) -> dict[str, str]:
    """Compose's environment for a service with local addresses in place of the containers'."""
    out = dict(spec.environment)
    out.update({
        "HOST": "127.0.0.1",
        "REDIS_URL": redis_url,
        "DATABASE_URL": env.get(f"{spec.name.upper()}_DATABASE_URL")
        or f"sqlite+aiosqlite:///{var / f'{spec.name}.db'}",
    })
    if "SMTP_URL" in out:
        out["SMTP_URL"] = smtp_url
    if "ENCRYPTION_KEYS" in out:
        out["ENCRYPTION_KEYS"] = env.get("ENCRYPTION_KEYS") or _local_key(var)
    if "RECEIVER_GRANT_SECRET" in out:
        out["RECEIVER_GRANT_SECRET"] = env.get("RECEIVER_GRANT_SECRET") or _local_secret(var)
    return out


def _local_secret(var: Path) -> str:
    """The receivers' grant secret shared by intake and notify, made once per ./var."""
    import secrets

    path = var / "secrets" / "receiver_grant_secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def _local_key(var: Path) -> str:
    """A key made once per ./var, so the embedded default never runs on the compose dev key."""
    from intake.adapters.crypto import FieldCipher

    path = var / "secrets" / "encryption_keys"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(FieldCipher.generate("local1"))
        path.chmod(0o600)
    return path.read_text().strip()


class Stack:
    def __init__(self, var: Path, env: dict[str, str] | None = None, log_dir: Path | None = None) -> None:
        self.var = var.resolve()
        self.log_dir = log_dir
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("DEMO_API_KEY", DEFAULT_DEMO_API_KEY)
        self.env.setdefault("ADMIN_API_KEY", DEFAULT_ADMIN_API_KEY)
        self.redis: RedisProcess | None = None
        self.mail: MailCatcher | None = None
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.specs = load_compose(env=self.env)
        # RUJUKAN_<SERVICE>_PORT moves a service off its compose port (tests, a busy machine).
        for name, spec in self.specs.items():
            if port := self.env.get(f"RUJUKAN_{name.upper()}_PORT"):
                spec.environment["PORT"] = port
        self._stopping = threading.Event()

    def start(self) -> None:
        self.var.mkdir(parents=True, exist_ok=True)
        redis_url = self.env.get("REDIS_URL")
        if not redis_url:
            port = int(self.env.get("RUJUKAN_REDIS_PORT", "6380"))
            self.redis = RedisProcess(port, self.var / "redis", appendonly=True, appendfsync="everysec").start()
            redis_url = self.redis.url
        smtp_url = self.env.get("SMTP_URL")
        if not smtp_url:
            port = int(self.env.get("RUJUKAN_SMTP_PORT", "1025"))
            self.mail = MailCatcher(port=port, maildir=self.var / "mail").start()
            self.mail.on_message = lambda m: print(f"[mail] to {', '.join(m.rcpt_tos)}: {m.message['Subject']}",
                                                   flush=True)
            smtp_url = self.mail.url
        self.redis_url, self.smtp_url = redis_url, smtp_url
        for name in APP_SERVICES:
            self._spawn(name)

    def _spawn(self, name: str) -> None:
        spec = self.specs[name]
        env = {**self.env, **local_environment(spec, self.var, self.redis_url, self.smtp_url, self.env)}
        # Links in mails point at where the services really listen here.
        if "PUBLIC_URL" in env:
            env["PUBLIC_URL"] = f"http://127.0.0.1:{self.port(name)}"
        if "INTAKE_PUBLIC_URL" in env:
            env["INTAKE_PUBLIC_URL"] = f"http://127.0.0.1:{self.port('intake')}"
        cmd = [sys.executable if c == "python" else c for c in spec.command]
        out: Any = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = (self.log_dir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(cmd, env=env, cwd=ROOT, start_new_session=True,
                                            stdout=out, stderr=subprocess.STDOUT if out else None)
        if out is not None:
            out.close()  # the child holds its own descriptor

    def port(self, name: str) -> int:
        return int(self.specs[name].environment["PORT"])

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for name in APP_SERVICES:
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{self.port(name)}/health", timeout=2):
                        break
                except Exception:
                    if self.procs[name].poll() is not None:
                        raise RuntimeError(f"{name} exited with {self.procs[name].returncode}") from None
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{name} not healthy after {timeout:.0f}s") from None
                    time.sleep(0.2)

    def supervise(self) -> None:
        """Start again a service that died, until asked to stop."""
        while not self._stopping.wait(1.0):
            for name, proc in list(self.procs.items()):
                if proc.poll() is not None and not self._stopping.is_set():
                    print(f"[stack] {name} exited ({proc.returncode}); starting it again", flush=True)
                    self._spawn(name)

    def stop(self) -> None:
        self._stopping.set()
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if self.redis is not None:
            self.redis.stop()
        if self.mail is not None:
            self.mail.stop()


def banner(stack: Stack) -> str:
    return f"""
Rujukan is running (embedded default; data under {stack.var}).
  intake    http://127.0.0.1:{stack.port('intake')}/docs    agency key: {stack.env['DEMO_API_KEY']}
  matching  http://127.0.0.1:{stack.port('matching')}/docs    admin key:  {stack.env['ADMIN_API_KEY']}
  notify    http://127.0.0.1:{stack.port('notify')}/docs
  redis     {stack.redis_url}
  mail      {stack.smtp_url}{f'  (saved under {stack.var / "mail"})' if stack.mail else ''}
Press Ctrl-C to stop.
"""


def main(argv: list[str] | None = None) -> int:
    var = Path(os.environ.get("RUJUKAN_VAR", ROOT / "var"))
    stack = Stack(var)

    def _stop(*_: Any) -> None:
        # Only the first signal counts: a second Ctrl-C, or make and uv both forwarding the
        # signal, must not cut the stop short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    try:
        stack.start()
        stack.wait_healthy()
        print(banner(stack), flush=True)
        stack.supervise()
    except KeyboardInterrupt:
        print("\n[stack] stopping...", flush=True)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        print("[stack] stopped.", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
