"""HTTP conventions shared by the three FastAPI apps: every error as RFC 9457 problem
details naming the field and the reason (and never echoing the input back, which may hold
personal data), the boundary every request crosses first (shared.boundary: credential
present, body capped, failed authentications limited), and the bearer credential every
endpoint but health needs."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.boundary import Boundary
from shared.problems import ERROR_RESPONSES, FieldError, Problem, ProblemResponse, openapi_components, problem
from shared.text import RefuseControlCharactersInUrls

__all__ = ["ERROR_RESPONSES", "BearerToken", "Problem", "install_error_handlers", "problem", "unauthorized"]

log = logging.getLogger("rujukan.http")


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or "(body)"


def _reason(msg: str) -> str:
    return msg.removeprefix("Value error, ")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> ProblemResponse:
        # Only the location, the message and its type: pydantic's "input" is left out.
        errors = [FieldError(field=_field(e.get("loc", ())), reason=_reason(str(e.get("msg", ""))),
                             type=e.get("type"))
                  for e in exc.errors()]
        return problem(422, errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> ProblemResponse:
        return problem(exc.status_code, exc.detail, headers=exc.headers)

    async def _unavailable(request: Request, exc: Exception) -> ProblemResponse:
        # The database or Redis away (a restart, a failover) is not the caller's fault and
        # not a bug: say so with 503 and when to retry, and log one line, not a traceback.
        from shared.streams.consumer import is_transient

        if not is_transient(exc):
            raise exc  # a bug: the server logs it with its traceback and answers 500
        log.warning("%s %s: dependency unavailable (%s)", request.method, request.url.path, type(exc).__name__)
        return problem(503, "temporarily unavailable; retry shortly", headers={"Retry-After": "2"})

    # Registered per class (not for Exception) so that Starlette answers without re-raising.
    for cls in (DBAPIError, SATimeoutError, OSError, RedisConnectionError, RedisTimeoutError):
        app.add_exception_handler(cls, _unavailable)

    _document_problems(app)
    app.add_middleware(RefuseControlCharactersInUrls)  # a NUL in a path or query never reaches the database
    app.add_middleware(Boundary)  # credential present, body capped, failures limited: before any route


def _document_problems(app: FastAPI) -> None:
    """Add the Problem schema that ERROR_RESPONSES refers to to the app's OpenAPI, and give
    it to every error response a route documents with a description alone."""
    generate = app.openapi
    problem_content = ERROR_RESPONSES[422]["content"]

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(openapi_components())
            for item in schema.get("paths", {}).values():
                for operation in item.values():
                    for code, response in operation.get("responses", {}).items():
                        if code[:1] in ("4", "5") and "content" not in response:
                            response["content"] = problem_content
        return app.openapi_schema or {}

    app.openapi = openapi  # type: ignore[method-assign]


_bearer = HTTPBearer(auto_error=False)


async def bearer_token(  # async: a sync dependency would cost a thread-pool hop per request
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    if creds is None or not creds.credentials:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing bearer credential",
                            headers={"WWW-Authenticate": "Bearer"})
    if not is_token(creds.credentials):
        raise unauthorized()  # never a key of ours; and no comparison may choke on it
    return creds.credentials


def is_token(text: str) -> bool:
    """Printable ASCII without spaces: every credential the services issue (RFC 6750's
    token68 and a little more) and nothing that could not be one."""
    return text.isascii() and text.isprintable() and " " not in text


BearerToken = Annotated[str, Depends(bearer_token)]


def unauthorized() -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid credential", headers={"WWW-Authenticate": "Bearer"})
