"""HTTP conventions shared by the three FastAPI apps: 422 bodies that name the field and
the reason (and never echo the input back, which may hold personal data), and the bearer
credential every endpoint but health needs."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SATimeoutError

log = logging.getLogger("rujukan.http")


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "(body)"


def _reason(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _field(e.get("loc", ())), "reason": _reason(str(e.get("msg", ""))), "type": e.get("type")}
            for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": errors})

    async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
        # The database or Redis away (a restart, a failover) is not the caller's fault and
        # not a bug: say so with 503 and when to retry, and log one line, not a traceback.
        from shared.streams import is_transient

        if not is_transient(exc):
            raise exc  # a bug: the server logs it with its traceback and answers 500
        log.warning("%s %s: dependency unavailable (%s)", request.method, request.url.path, type(exc).__name__)
        return JSONResponse(status_code=503, headers={"Retry-After": "2"},
                            content={"detail": "temporarily unavailable; retry shortly"})

    # Registered per class (not for Exception) so that Starlette answers without re-raising.
    for cls in (DBAPIError, SATimeoutError, OSError, RedisConnectionError, RedisTimeoutError):
        app.add_exception_handler(cls, _unavailable)


_bearer = HTTPBearer(auto_error=False)


async def bearer_token(  # async: a sync dependency would cost a thread-pool hop per request
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    if creds is None or not creds.credentials:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer credential",
                            headers={"WWW-Authenticate": "Bearer"})
    return creds.credentials


BearerToken = Annotated[str, Depends(bearer_token)]


def unauthorized() -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid credential", headers={"WWW-Authenticate": "Bearer"})
