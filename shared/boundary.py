"""What a request meets before any route reads it: one pure ASGI middleware, installed in
every service by shared.http.

- No credential at all (no Authorization header, no session cookie) on an endpoint that
  needs one: 401 at once, before a byte of the body is read.
- A body larger than the endpoint takes: 413, from Content-Length before reading, or as
  soon as the streamed body passes the cap; never more than the cap is held in memory.
- A body in a media type the endpoint does not take (JSON where a model is expected): 415.
- Failed authentication is rate-limited per client address and per credential, counted
  in Redis so that every replica sees the same count: a client or a credential past
  AUTH_FAILURES_PER_MINUTE failures (401 or 403; on a sign-in link, also 404 and 410) in
  the last minute is answered 429 with Retry-After, before its credential is checked. A
  request that succeeds is never counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from limits import RateLimitItemPerMinute
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.exceptions import RedisError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.problems import problem

log = logging.getLogger("rujukan.http")

# Answered without a credential, never rate-limited: health and the API's own description.
OPEN_PATHS = frozenset({"/health", "/metrics", "/ready", "/openapi.json", "/asyncapi.json", "/docs",
                        "/docs/oauth2-redirect", "/redoc"})
# The pages' assets and language switch: nothing to guard, never rate-limited.
OPEN_PREFIXES = ("/assets/", "/lang/")
# People's pages check their own session (a missing one is sent to sign in, not answered
# 401), so they pass here without a credential; their failures are still counted.
PAGE_PREFIXES = ("/receiver", "/agency", "/operator", "/person", "/signin/")
# Without a credential in a header (the credential is the link itself), rate-limited.
PUBLIC_PREFIXES = ("/v1/signin/", "/v1/signout", *PAGE_PREFIXES)
SESSION_COOKIE = "rujukan_session"
MAX_BODY_BYTES = 64 * 1024  # the agency and inbox APIs: a referral is a few KiB
FAILURE_STATUSES = frozenset({401, 403})
# Where the link is the credential, an unknown or spent link is a failed attempt too.
PUBLIC_FAILURE_STATUSES = FAILURE_STATUSES | {404, 410}
JSON_TYPES = ("application/json", "+json")
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class BodyPolicy:
    """The media types an endpoint that reads its own body takes (an entry starting with
    '+' is a suffix, e.g. '+json'), and the setting that caps its size."""

    media_types: tuple[str, ...]
    max_bytes_setting: str | None = None


def reads_body(*media_types: str, max_bytes_setting: str | None = None) -> Callable[[F], F]:
    """Mark an endpoint that reads the raw body itself (no pydantic body) with the media
    types it takes and the setting of its cap (MAX_BODY_BYTES when None)."""

    def mark(endpoint: F) -> F:
        endpoint.body_policy = BodyPolicy(media_types, max_bytes_setting)  # type: ignore[attr-defined]
        return endpoint

    return mark


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the body may hold at most {limit} bytes here")


class UnsupportedMediaType(HTTPException):
    def __init__(self, media_types: tuple[str, ...]) -> None:
        shown = ["application/*+json" if t == "+json" else t for t in media_types]
        super().__init__(415, "send the body as " + " or ".join(shown))


def media_type(headers: Headers) -> str:
    return headers.get("content-type", "").split(";")[0].strip().lower()


def accepted(kind: str, media_types: tuple[str, ...]) -> bool:
    return any(kind == t or (t.startswith("+") and kind.startswith("application/") and kind.endswith(t))
               for t in media_types)


def credential_of(headers: Headers) -> str | None:
    """The credential a request carries: its Authorization header, else its session cookie."""
    if authorization := headers.get("authorization"):
        return authorization
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == SESSION_COOKIE and value:
            return value
    return None


def credential_hash(credential: str) -> str:
    return hashlib.sha256(credential.encode("utf-8", "replace")).hexdigest()[:32]


class AuthFailures:
    """Failed authentications in the last minute, per client address and per credential
    (its hash), in Redis with the `limits` library's moving window."""

    def __init__(self, redis: Any, per_minute: int) -> None:
        storage = RedisStorage("async+redis://", implementation="redispy", key_prefix="rujukan:auth-failures",
                               connection_pool=redis.connection_pool)
        self._limiter = MovingWindowRateLimiter(storage)
        self._item = RateLimitItemPerMinute(per_minute)

    @staticmethod
    def _keys(client: str, credential: str | None) -> list[tuple[str, str]]:
        return [("client", client)] + ([("credential", credential)] if credential else [])

    async def retry_after(self, client: str, credential: str | None) -> int | None:
        """Seconds until this client and this credential may try again; None: they may now."""
        keys = self._keys(client, credential)
        allowed = await asyncio.gather(*(self._limiter.test(self._item, *k) for k in keys))
        if all(allowed):
            return None
        windows = await asyncio.gather(*(self._limiter.get_window_stats(self._item, *k)
                                         for k, ok in zip(keys, allowed, strict=True) if not ok))
        return max(1, math.ceil(max(w.reset_time for w in windows) - time.time()))

    async def record(self, client: str, credential: str | None) -> None:
        await asyncio.gather(*(self._limiter.hit(self._item, *k) for k in self._keys(client, credential)))


class Boundary:
    """The ASGI middleware (see the module's docstring)."""

    def __init__(self, app: ASGIApp, *, public_prefixes: tuple[str, ...] = PUBLIC_PREFIXES) -> None:
        self.app = app
        self.public_prefixes = public_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = Headers(scope=scope)
        is_open = path in OPEN_PATHS or path == "/" or path.startswith(OPEN_PREFIXES)
        is_public = path.startswith(self.public_prefixes)
        credential = credential_of(headers)
        if credential is None and not is_open and not is_public:
            await problem(401, "this endpoint needs a credential: a bearer key or token, or a session",
                          headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
            return
        length = headers.get("content-length")
        if length is not None and not length.isdigit():
            await problem(400, "Content-Length is not a number")(scope, receive, send)
            return

        failures = None if is_open else _auth_failures(scope)
        client = scope["client"][0] if scope.get("client") else "unknown"
        hashed = credential_hash(credential) if credential else None
        if failures is not None:
            try:
                wait = await failures.retry_after(client, hashed)
            except (RedisError, OSError) as e:  # no count to check: the credential check still holds
                log.warning("auth failure count unavailable (%s); not limiting", type(e).__name__)
                wait = None
            if wait is not None:
                # A sign-in link's path is its credential: only its prefix is logged.
                where = next((p + "..." for p in self.public_prefixes if path.startswith(p)), path)
                log.warning("refused %s %s from %s: too many failed authentications (credential %s); "
                            "retry in %ss", scope["method"], where, client, hashed[:8] if hashed else "-", wait)
                await problem(429, "too many failed authentications; retry later",
                              headers={"Retry-After": str(wait)})(scope, receive, send)
                return

        read = 0
        cap: int | None = None

        async def checked_receive() -> Message:
            # The route is known once the app reads the body (routing put it in the scope):
            # its cap and media types are checked before the first byte is taken.
            nonlocal read, cap
            if cap is None:
                cap, media_types = _body_policy(scope)
                if length is not None and int(length) > cap:
                    raise BodyTooLarge(cap)
                has_body = int(length or 0) > 0 or "chunked" in headers.get("transfer-encoding", "").lower()
                if has_body and media_types and not accepted(media_type(headers), media_types):
                    raise UnsupportedMediaType(media_types)
            message = await receive()
            if message["type"] == "http.request":
                read += len(message.get("body", b""))
                if read > cap:
                    raise BodyTooLarge(cap)
            return message

        started = False
        failed = PUBLIC_FAILURE_STATUSES if is_public else FAILURE_STATUSES

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if failures is not None and message["status"] in failed:
                    try:  # counted before the answer leaves: the next attempt sees it
                        await failures.record(client, hashed)
                    except (RedisError, OSError) as e:
                        log.warning("auth failure not counted (%s)", type(e).__name__)
            await send(message)

        try:
            await self.app(scope, checked_receive, watched_send)
        except (BodyTooLarge, UnsupportedMediaType) as e:  # raised where no exception handler answers it
            if started:
                raise
            await problem(e.status_code, e.detail)(scope, receive, send)


def _body_policy(scope: Scope) -> tuple[int, tuple[str, ...]]:
    """The largest body the request's route takes, and its media types (empty: the route
    decides)."""
    policy: BodyPolicy | None = getattr(scope.get("endpoint"), "body_policy", None)
    if policy is not None:
        cap = MAX_BODY_BYTES
        if policy.max_bytes_setting:
            settings = getattr(scope["app"].state, "settings", None)
            cap = int(getattr(settings, policy.max_bytes_setting, cap))
        return cap, policy.media_types
    body_field = getattr(scope.get("route"), "body_field", None)
    if body_field is None:
        return MAX_BODY_BYTES, ()
    kind = getattr(body_field.field_info, "media_type", "application/json")
    return MAX_BODY_BYTES, FORM_TYPES if kind in FORM_TYPES else JSON_TYPES


def _auth_failures(scope: Scope) -> AuthFailures | None:
    """The app's counter of failures, made on first use (Redis is there after start-up)."""
    state = scope["app"].state
    found: AuthFailures | None = getattr(state, "auth_failures", None)
    if found is None:
        runtime, settings = getattr(state, "runtime", None), getattr(state, "settings", None)
        per_minute = int(getattr(settings, "auth_failures_per_minute", 0) or 0)
        if runtime is None or per_minute <= 0:
            return None
        found = state.auth_failures = AuthFailures(runtime.redis, per_minute)
    return found
