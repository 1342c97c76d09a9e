"""Settings every service reads from the environment (one place, pydantic-settings).

The same variable names are used by `compose.yaml`, the embedded runner (`make run`) and
the tests: REDIS_URL, DATABASE_URL, SMTP_URL, PORT, ...

A service runs in production unless RUJUKAN_ENV=development says otherwise, and in
production it refuses to start with a development value: a secret this repository
publishes (compose's former defaults, the embedded runner's fixed keys, the docs'
examples), an empty or too short secret, the demo agency or directory, Redis without a
password, PostgreSQL with a published password.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
from typing import Literal, TypeVar
from urllib.parse import parse_qs, urlsplit

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values anyone can read in this repository or its history: never a production secret.
PUBLISHED_SECRETS = frozenset({
    "rujukan-admin-key", "rujukan-demo-key", "rujukan-bench-admin", "rujukan-bench-key",
    "test-admin-key", "test-demo-key", "dev-only-receiver-grant-secret",
    "dev1:ZGV2LW9ubHkta2V5LWRvLW5vdC11c2UtaW4tcHJvZCE=", "ZGV2LW9ubHkta2V5LWRvLW5vdC11c2UtaW4tcHJvZCE=",
    "dev-only-key-do-not-use-in-prod!",
})
PUBLISHED_DATABASE_PASSWORDS = frozenset({"rujukan", "postgres", "password"})
# A shared secret (grants, the agency keys' pepper) shorter than this is guessable offline.
MIN_SECRET_CHARS = 32
MIN_REDIS_PASSWORD_CHARS = 16


class DevelopmentValue(ValueError):
    """Settings fit only for development, given to a service that runs in production."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            "refusing to start in production with development values: " + "; ".join(problems)
            + ". Set your own (docs/security.md), or RUJUKAN_ENV=development on a developer's machine.")
        self.problems = problems


def secret_problem(variable: str, value: str | None, *, min_chars: int = MIN_SECRET_CHARS) -> str | None:
    """Why `value` cannot be the production secret `variable`, or None."""
    if not value:
        return f"{variable} is not set"
    if value in PUBLISHED_SECRETS:
        return f"{variable} is a value published in this repository"
    if len(value) < min_chars:
        return f"{variable} is shorter than {min_chars} characters"
    return None


def redis_url_problem(url: str) -> str | None:
    parts = urlsplit(url)
    password = parts.password or (parse_qs(parts.query).get("password") or [""])[0]
    if not password:
        return "REDIS_URL has no password (redis://:PASSWORD@host:6379/0)"
    if password in PUBLISHED_SECRETS or password in PUBLISHED_DATABASE_PASSWORDS:
        return "REDIS_URL has a published password"
    if len(password) < MIN_REDIS_PASSWORD_CHARS:
        return f"REDIS_URL's password is shorter than {MIN_REDIS_PASSWORD_CHARS} characters"
    return None


def database_url_problem(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme.startswith("postgresql") and parts.password in PUBLISHED_DATABASE_PASSWORDS | PUBLISHED_SECRETS:
        return "DATABASE_URL has a published PostgreSQL password"
    return None


def operator_keys_problem(text: str) -> str | None:
    published = {hashlib.sha256(v.encode()).hexdigest() for v in PUBLISHED_SECRETS}
    for item in text.split(","):
        name, _, rest = item.strip().partition(":")
        if rest.rpartition(":")[2].strip().lower() in published:
            return f"OPERATOR_KEYS gives '{name}' a key published in this repository"
    return None


class ServiceSettings(BaseSettings):
    """What all three services share. Each service subclasses it with its own defaults."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    service_name: str = "rujukan"
    host: str = "127.0.0.1"
    port: int = 8000
    redis_url: str = "redis://127.0.0.1:6380/0"
    database_url: str = "sqlite+aiosqlite:///./var/rujukan.db"
    log_level: str = "INFO"
    # "text" (make run) or "json" lines (compose); configure_logging reads it at start.
    log_format: Literal["text", "json"] = "text"
    # Whose X-Forwarded-For/-Proto uvicorn believes: the reverse proxy's addresses ("*" where
    # only the proxy can reach the service, as on compose's network).
    forwarded_allow_ips: str = "127.0.0.1"
    # HTTP worker processes of a service that supports them (intake): replicas on one port.
    web_concurrency: int = Field(default=1, ge=1, le=64)
    # A stream consumer's name must be unique per process so that replicas in one group
    # never take each other's pending entries; hostname + pid is unique on a host and in
    # a container.
    consumer_name: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    # Batch size of one XREADGROUP call, and how long it blocks waiting for entries.
    stream_batch: int = 100
    stream_block_ms: int = 1000
    # Entries pending longer than this on a consumer are taken over by another (XAUTOCLAIM).
    reclaim_idle_ms: int = 30_000
    # After this many deliveries an entry that still fails goes to the dead-letter stream.
    max_deliveries: int = 5
    # How often streams are trimmed below what every group acknowledged (one replica a
    # period), and after how long a consumer with nothing pending is forgotten.
    stream_trim_interval_s: float = 60.0
    consumer_forget_after_s: float = 3600.0
    # The outbox relay publishes right after each commit; this poll is only the safety net
    # for rows a crash left unsent.
    outbox_poll_interval_s: float = 1.0
    # "development" allows development values (shared secrets from this repository, the
    # demo agency and directory, Redis without a password); `make run` and the tests set it.
    rujukan_env: Literal["production", "development"] = "production"
    # Seed the demo directory at start-up (development only).
    seed_demo: bool = False
    # Operators, each with a role and a key of its own: "name:role:sha256-of-key,..."
    # (shared/operators.py; `rujukan operators key NAME ROLE` prints an entry).
    operator_keys: str = ""
    # Failed authentications (401, 403) a client address or a credential may have in a
    # minute before it is answered 429 (shared.boundary); counted in Redis. 0: no limit.
    auth_failures_per_minute: int = Field(default=20, ge=0)

    @property
    def development(self) -> bool:
        return self.rujukan_env == "development"

    def development_values(self) -> list[str]:
        """What in these settings is fit only for development (empty: fit for production).
        A service extends it with its own secrets."""
        problems = [redis_url_problem(self.redis_url), database_url_problem(self.database_url),
                    operator_keys_problem(self.operator_keys)]
        if self.seed_demo:
            problems.append("SEED_DEMO seeds the demo directory")
        return [p for p in problems if p]

    def refuse_development_values(self) -> None:
        """Raise DevelopmentValue, naming each one, unless RUJUKAN_ENV=development."""
        if not self.development and (problems := self.development_values()):
            raise DevelopmentValue(problems)


S = TypeVar("S", bound=ServiceSettings)


def settings_to_start(cls: type[S]) -> S:
    """A service's settings read from the environment, or exit with one line on stderr
    saying what is wrong (no traceback: the operator needs the reason, not the stack)."""
    name = cls.model_fields["service_name"].default
    try:
        settings = cls()
        settings.refuse_development_values()
    except ValidationError as e:
        reasons = "; ".join(f"{'.'.join(map(str, err['loc'])).upper()}: {err['msg']}" for err in e.errors())
        sys.exit(f"{name}: refusing to start: {reasons}")
    except DevelopmentValue as e:
        sys.exit(f"{name}: {e}")
    return settings
