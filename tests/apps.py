"""Helpers to run a service's FastAPI app in-process with its real lifespan (migrations,
stream provisioning, outbox relay and consumer) against real Redis and a real database."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from intake.adapters.crypto import FieldCipher
from shared.operators import Role, entry_for, new_key

TEST_KEYS = FieldCipher.generate("test1")
DEMO_KEY = "test-demo-key"
# One operator per role, each with its own key (made per run: never a published value).
DIRECTORY_KEY, OPERATIONS_KEY, ONBOARDING_KEY, AUDIT_KEY = new_key(), new_key(), new_key(), new_key()
OPERATOR_KEYS = ",".join([
    entry_for("test-directory", Role.directory, DIRECTORY_KEY),
    entry_for("test-operations", Role.operations, OPERATIONS_KEY),
    entry_for("test-onboarding", Role.onboarding, ONBOARDING_KEY),
    entry_for("test-audit", Role.audit, AUDIT_KEY),
])
ROLE_KEYS = {Role.directory: DIRECTORY_KEY, Role.operations: OPERATIONS_KEY, Role.onboarding: ONBOARDING_KEY,
             Role.audit: AUDIT_KEY}
# The agency keys' pepper and the receivers' grant secret of the tests.
AGENCY_PEPPER = secrets.token_urlsafe(32)
GRANT_SECRET = secrets.token_urlsafe(32)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until `check` returns a truthy value (or raise its last AssertionError)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = await check()
            if result:
                return result
        except AssertionError as e:
            last = e
        await asyncio.sleep(interval)
    if last:
        raise last
    raise AssertionError(f"condition not met within {timeout}s")
