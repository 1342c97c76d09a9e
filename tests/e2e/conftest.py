"""The stack as separate processes, started the way `make run` starts it (devtools.devstack)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devtools.devstack import APP_SERVICES, Stack
from devtools.redis_server import free_port
from tests.apps import AGENCY_PEPPER, DEMO_KEY, GRANT_SECRET, OPERATOR_KEYS, TEST_KEYS

StackFactory = Callable[..., Stack]


@pytest.fixture
def stack_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[StackFactory]:
    """Start a stack: its own redis-server (as `make run` does), SQLite or PostgreSQL
    databases, mail to the given SMTP URL (else its own catcher under var/mail), each
    service on a free port with its log in var/logs/<service>.log, and the one address for
    people in front of them (`stack.origin`, `stack.url("/agency")`; devtools/proxy.py) on
    another, where the links in mails point."""
    stacks: list[Stack] = []

    def start(database: str = "sqlite", smtp_url: str | None = None, **env: str) -> Stack:
        var = tmp_path / f"var{len(stacks)}"
        base: dict[str, str] = {
            "PATH": __import__("os").environ["PATH"],
            "RUJUKAN_ENV": "development", "DEMO_API_KEY": DEMO_KEY, "OPERATOR_KEYS": OPERATOR_KEYS,
            "ENCRYPTION_KEYS": TEST_KEYS, "AGENCY_KEY_PEPPER": AGENCY_PEPPER, "RECEIVER_GRANT_SECRET": GRANT_SECRET,
            "RUJUKAN_REDIS_PORT": str(free_port()), "RUJUKAN_SMTP_PORT": str(free_port()),
            "RUJUKAN_PROXY_PORT": str(free_port()),
            "SEED_DEMO": "true", "OUTBOX_POLL_INTERVAL_S": "0.5", "LOG_LEVEL": "INFO",
        }
        for name in APP_SERVICES:
            base[f"RUJUKAN_{name.upper()}_PORT"] = str(free_port())
            if database == "postgres":
                server: Any = request.getfixturevalue("postgres_server")
                base[f"{name.upper()}_DATABASE_URL"] = server.create_database(f"e2e_{name}_{uuid.uuid4().hex[:8]}")
        if smtp_url:
            base["SMTP_URL"] = smtp_url
        base.update(env)
        stack = Stack(var, env=base, log_dir=var / "logs")
        stacks.append(stack)
        stack.start()
        stack.wait_healthy(timeout=90)
        return stack

    yield start
    for s in stacks:
        s.stop()
