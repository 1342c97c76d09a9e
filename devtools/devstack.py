"""The embedded default (`make run`): the whole stack as local processes, no Docker.

- its own redis-server (append-only file on) under ./var/redis, unless REDIS_URL is set;
- an SMTP catcher that keeps every mail as .eml under ./var/mail, unless SMTP_URL is set;
- intake, matching and notify, each with a SQLite database under ./var, started with the
  command and environment that `compose.yaml` gives them (one source of truth), with only
  the addresses of Redis, SMTP and the databases replaced by local ones;
- one address for people, as compose's Caddy gives (devtools/proxy.py, the same routing
  table): http://127.0.0.1:8080 (RUJUKAN_PROXY_PORT), where the links in mails point;
- in development (RUJUKAN_ENV=development), with secrets of its own made once under
  ./var/secrets (never a value published in this repository), one operator key per role,
  the demo agency and the demo directory.

`python -m devtools.devstack compose-env > .env` prints the same kind of development values
for `docker compose --profile dev up`.

Ctrl-C (or SIGTERM) stops the proxy and the services gracefully, then Redis and the mail
catcher. A service (or the proxy) that dies is started again.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from devtools.fake_gateway import FakeGateway
from devtools.mailcatcher import MailCatcher
from devtools.redis_server import RedisProcess

ROOT = Path(__file__).resolve().parent.parent
APP_SERVICES = ("intake", "matching", "notify")
PROXY = "proxy"
DEFAULT_DEMO_API_KEY = "rujukan-demo-key"
# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}
_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?:(:?)([-?])([^}]*))?\}")
# compose.yaml's values that the embedded runner replaces by local ones: interpolated
# with these so that compose's required variables need not be set for `make run`.
REPLACED_LOCALLY = {"REDIS_PASSWORD": "unused-by-make-run", "POSTGRES_PASSWORD": "unused-by-make-run",
                    "SMTP_URL": "smtp://replaced-by-make-run:25"}


class MissingVariable(ValueError):
    """A variable compose.yaml requires (${VAR:?...}) is not set."""


class PortInUse(RuntimeError):
    """The one address's port is taken by another program."""


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class AppSpec:
    name: str
    command: list[str]
    environment: dict[str, str]


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's interpolation, enough for our compose file: ${VAR:-default} (also when
    empty), ${VAR-default} (when unset), ${VAR:?error} (required, not empty), ${VAR?error}
    (required); MissingVariable names what is missing."""

    def one(m: re.Match[str]) -> str:
        name, colon, kind, word = m.group(1), m.group(2), m.group(3), m.group(4) or ""
        given = env.get(name)
        missing = given is None or (colon == ":" and given == "")
        if kind == "?" and missing:
            raise MissingVariable(f"{name}: {word or 'required'}")
        if kind == "-" and missing:
            return word
        return given or ""

    return _VAR.sub(one, value)


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
        # Lines a person reads in a terminal; compose's JSON lines are for a log collector.
        "LOG_FORMAT": env.get("LOG_FORMAT") or "text",
    })
    if "SMTP_URL" in out:
        out["SMTP_URL"] = smtp_url
    if "ENCRYPTION_KEYS" in out:
        out["ENCRYPTION_KEYS"] = env.get("ENCRYPTION_KEYS") or _local_key(var)
    for name in ("RECEIVER_GRANT_SECRET", "AGENCY_KEY_PEPPER"):
        if name in out:
            out[name] = env.get(name) or _local_secret(var, name.lower())
    return out


def _kept(path: Path, make: Any) -> str:
    """A value made once and kept (0600) at `path`."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


def _local_secret(var: Path, name: str) -> str:
    """A shared secret (the receivers' grant secret, the agency keys' pepper), made once per ./var."""
    return _kept(var / "secrets" / name, lambda: secrets.token_urlsafe(32))


def local_operator_keys(var: Path) -> dict[str, str]:
    """One operator per role ("dev-<role>"), its key made once per ./var: {role: key}."""
    from shared.operators import Role, new_key

    keys: dict[str, str] = json.loads(_kept(var / "secrets" / "operator_keys.json",
                                            lambda: json.dumps({r.value: new_key() for r in Role})))
    return keys


def development_env(var: Path) -> dict[str, str]:
    """What development runs with, the secrets made once under var/secrets."""
    from shared.operators import Role, entry_for

    keys = local_operator_keys(var)
    return {
        "RUJUKAN_ENV": "development",
        "DEMO_API_KEY": DEFAULT_DEMO_API_KEY,
        "SEED_DEMO": "true",
        "ENCRYPTION_KEYS": _local_key(var),
        "RECEIVER_GRANT_SECRET": _local_secret(var, "receiver_grant_secret"),
        "AGENCY_KEY_PEPPER": _local_secret(var, "agency_key_pepper"),
        "OPERATOR_KEYS": ",".join(entry_for(f"dev-{role}", Role(role), key) for role, key in keys.items()),
    }


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
        # `make run` is development: its own secrets, the demo agency and directory.
        for name, value in development_env(self.var).items():
            self.env.setdefault(name, value)
        self.env["RUJUKAN_ENV"] = "development"
        self.redis: RedisProcess | None = None
        self.mail: MailCatcher | None = None
        self.gateway: FakeGateway | None = None  # SMS and WhatsApp, kept under var/messages
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.proxy_port = int(self.env.get("RUJUKAN_PROXY_PORT", "8080"))
        self.proxy_host = self.env.get("RUJUKAN_PROXY_HOST", "127.0.0.1")
        self.specs = load_compose(env={**REPLACED_LOCALLY, **self.env})
        # RUJUKAN_<SERVICE>_PORT moves a service off its compose port (tests, a busy machine).
        for name, spec in self.specs.items():
            if port := self.env.get(f"RUJUKAN_{name.upper()}_PORT"):
                spec.environment["PORT"] = port
        self._stopping = threading.Event()

    def start(self) -> None:
        # Every port checked before anything starts (else the mails' links would point at
        # whatever holds the proxy's): one message naming each busy one and its variable.
        busy = self.busy_ports()
        if busy:
            lines = [f"port {port} is in use: set {variable} to a free one ({what})" for what, port, variable in busy]
            example = " ".join(f"{variable}={port + 100}" for _, port, variable in busy)
            raise PortInUse("\n".join([*lines, "Another `make run` may be running already; or choose other ports,"
                                        f" e.g. `{example} make run`."]))
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
        if not (self.env.get("SMS_GATEWAY_URL") or self.env.get("WHATSAPP_GATEWAY_URL")):
            self.gateway = FakeGateway(self.var / "messages", int(self.env.get("RUJUKAN_GATEWAY_PORT", "0"))).start()
        for name in APP_SERVICES:
            self._spawn(name)
        self._spawn(PROXY)

    def busy_ports(self) -> list[tuple[str, int, str]]:
        """(what, port, the variable that moves it) for each port this stack needs and another
        program holds."""
        wanted = [("the proxy", self.proxy_host, self.proxy_port, "RUJUKAN_PROXY_PORT")]
        wanted += [(name, "127.0.0.1", self.port(name), f"RUJUKAN_{name.upper()}_PORT") for name in APP_SERVICES]
        if not self.env.get("REDIS_URL"):
            wanted.append(("redis", "127.0.0.1", int(self.env.get("RUJUKAN_REDIS_PORT", "6380")), "RUJUKAN_REDIS_PORT"))
        if not self.env.get("SMTP_URL"):
            wanted.append(("the mail catcher", "127.0.0.1", int(self.env.get("RUJUKAN_SMTP_PORT", "1025")),
                           "RUJUKAN_SMTP_PORT"))
        return [(what, port, variable) for what, host, port, variable in wanted if not _bindable(host, port)]

    @property
    def origin(self) -> str:
        """The one address people open: the proxy in front of the three services."""
        return f"http://127.0.0.1:{self.proxy_port}"

    def url(self, path: str = "/") -> str:
        return self.origin + path

    def _spawn(self, name: str) -> None:
        if name == PROXY:
            cmd = [sys.executable, "-m", "devtools.proxy", "--host", self.proxy_host, "--port", str(self.proxy_port)]
            cmd += [f"--upstream={n}=http://127.0.0.1:{self.port(n)}" for n in APP_SERVICES]
            self._popen(name, cmd, {**self.env})
            return
        spec = self.specs[name]
        env = {**self.env, **local_environment(spec, self.var, self.redis_url, self.smtp_url, self.env)}
        # Links in mails point at the one address (the proxy), unless PUBLIC_URL is given.
        if "PUBLIC_URL" in env:
            env["PUBLIC_URL"] = self.env.get("PUBLIC_URL") or self.origin
        if "INTAKE_PUBLIC_URL" in env:
            env["INTAKE_PUBLIC_URL"] = self.env.get("PUBLIC_URL") or self.origin
        if self.gateway is not None and "SMS_GATEWAY_URL" in env:
            env["SMS_GATEWAY_URL"] = f"{self.gateway.url}/sms"
            env["WHATSAPP_GATEWAY_URL"] = f"{self.gateway.url}/whatsapp"
        self._popen(name, [sys.executable if c == "python" else c for c in spec.command], env)

    def _popen(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
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
        for name in (*APP_SERVICES, PROXY):
            port = self.proxy_port if name == PROXY else self.port(name)
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
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
        # The door first: nobody reaches a service that is going away.
        proxy = self.procs.get(PROXY)
        if proxy is not None and proxy.poll() is None:
            proxy.send_signal(signal.SIGTERM)
            try:
                proxy.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proxy.kill()
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
        if self.gateway is not None:
            self.gateway.stop()
        if self.mail is not None:
            self.mail.stop()


def banner(stack: Stack) -> str:
    keys = local_operator_keys(stack.var)
    operators = "\n".join(f"    {role:<11} {key}" for role, key in keys.items())
    return f"""
Rujukan is running (development; data under {stack.var}).
  Open {stack.origin}/  (one address for people: pages, the API and the links in mails)
  intake    http://127.0.0.1:{stack.port('intake')}/docs    demo agency key: {stack.env['DEMO_API_KEY']}
  matching  http://127.0.0.1:{stack.port('matching')}/docs
  notify    http://127.0.0.1:{stack.port('notify')}/docs
  redis     {stack.redis_url}
  mail      {stack.smtp_url}{f'  (saved under {stack.var / "mail"})' if stack.mail else ''}
  status    make status  (in another terminal: the whole system at a glance)
  operator keys (role: key; kept in {stack.var / "secrets" / "operator_keys.json"}):
{operators}
Press Ctrl-C to stop.
"""


def compose_env(var: Path) -> str:
    """An .env for `docker compose --profile dev up`: development values made here."""
    env = development_env(var)
    env.update({"REDIS_PASSWORD": secrets.token_hex(24), "POSTGRES_PASSWORD": secrets.token_hex(24),
                "SMTP_URL": "smtp://mailpit:1025"})
    keys = local_operator_keys(var)
    lines = ["# Development only (RUJUKAN_ENV=development): never use these values in production."]
    lines += [f"# operator key ({role}): {key}" for role, key in keys.items()]
    lines += [f"{name}={value}" for name, value in env.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    var = Path(os.environ.get("RUJUKAN_VAR", ROOT / "var"))
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["compose-env"]:
        sys.stdout.write(compose_env(var))
        return 0
    try:
        stack = Stack(var)
    except MissingVariable as e:
        print(f"[stack] compose.yaml needs {e}", file=sys.stderr)
        return 2

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
    except PortInUse as e:
        print(f"[stack] {e}", file=sys.stderr, flush=True)
        return 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        print("[stack] stopped.", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
