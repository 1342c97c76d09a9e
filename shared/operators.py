"""Operators and their roles: who may call an operator endpoint, and as what.

Each operator has a name, one role and a key of its own. The three services learn them
from OPERATOR_KEYS, a comma-separated list of `name:role:sha256-of-key` entries: the
configuration holds no key, only its hash, so it can be shared by every replica and
service without spreading a secret. `rujukan operators key NAME ROLE` makes a key and
prints its entry.

No role reads personal data or acts as a receiver. Every call an operator makes, allowed
or refused, is recorded in the audit log (shared/audit.py).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, status

from shared.audit import STATE_KEY, OperatorCall
from shared.http import BearerToken, unauthorized

KEY_PREFIX = "rjo_"  # marks an operator key


class Role(StrEnum):
    directory = "directory"  # the directory: services, import, seats
    operations = "operations"  # dead letters and replay, streams, deliveries, health details
    onboarding = "onboarding"  # agencies and their keys, receivers' system tokens
    audit = "audit"  # reads the audit log


@dataclass(frozen=True)
class Operator:
    name: str
    role: Role

    @property
    def actor(self) -> str:
        return f"operator:{self.name}"


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def entry_for(name: str, role: Role, key: str) -> str:
    """The OPERATOR_KEYS entry of a key."""
    return f"{name}:{role.value}:{key_digest(key)}"


@lru_cache(maxsize=8)
def parse_operator_keys(text: str) -> dict[str, Operator]:
    """`name:role:sha256hex,...` -> {sha256hex: Operator}. Raises ValueError naming the
    entry that is malformed, has an unknown role, or repeats a name or a key."""
    found: dict[str, Operator] = {}
    names: set[str] = set()
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        parts = item.split(":")
        if len(parts) != 3:
            raise ValueError(f"OPERATOR_KEYS entry {len(found) + 1}: expected name:role:sha256-of-key")
        name, role, digest = (p.strip() for p in parts)
        if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"OPERATOR_KEYS entry {len(found) + 1}: the name may hold letters, digits, - _ .")
        if role not in Role.__members__:
            raise ValueError(f"OPERATOR_KEYS entry '{name}': unknown role '{role}'; one of {', '.join(Role)}")
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest.lower()):
            raise ValueError(f"OPERATOR_KEYS entry '{name}': the key must be given as its SHA-256 (64 hex digits)")
        if name in names:
            raise ValueError(f"OPERATOR_KEYS: the name '{name}' appears twice")
        if digest.lower() in found:
            raise ValueError(f"OPERATOR_KEYS entry '{name}': the same key is given to another operator")
        names.add(name)
        found[digest.lower()] = Operator(name, Role(role))
    return found


def route_template(request: Request) -> str:
    """The matched route's path with its parameters named ("/v1/services/{service_id}"):
    FastAPI's view of the route as included (prefixes of nested routers and all), else the
    route's own path."""
    included = request.scope.get("fastapi", {}).get("effective_route_context")
    path = getattr(included, "path_format", None) or getattr(request.scope.get("route"), "path_format", None)
    return str(path or request.url.path)


def _call(request: Request, op: Operator) -> OperatorCall:
    return OperatorCall(operator=op.name, role=op.role.value, method=request.method,
                        action=route_template(request),
                        target={k: str(v)[:100] for k, v in request.path_params.items()},
                        client=request.client.host if request.client else "")


def _operators(request: Request) -> dict[str, Operator]:
    settings: Any = getattr(request.app.state, "settings", None) or request.app.state.runtime.settings
    return parse_operator_keys(settings.operator_keys or "")


def operator_with(*roles: Role) -> Callable[..., Awaitable[Operator]]:
    """A dependency that admits an operator holding one of `roles` (401 for no or an
    unknown key, 403 for a known key of another role) and names it on the request for the
    audit log, refused or not."""

    async def dependency(token: BearerToken, request: Request) -> Operator:
        op = _operators(request).get(key_digest(token))
        if op is None:
            raise unauthorized()
        setattr(request.state, STATE_KEY, _call(request, op))
        if op.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"the role '{op.role}' may not do this; it needs: {', '.join(roles)}")
        return op

    return dependency


DirectoryOperator = Annotated[Operator, Depends(operator_with(Role.directory))]
OperationsOperator = Annotated[Operator, Depends(operator_with(Role.operations))]
OnboardingOperator = Annotated[Operator, Depends(operator_with(Role.onboarding))]
AuditOperator = Annotated[Operator, Depends(operator_with(Role.audit))]
