"""What intake answers when personal data was sealed with a key that ENCRYPTION_KEYS no
longer lists: a clear 409 naming the key and what to do, and one log line without the
data (not a 500 with a traceback)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request

from intake.adapters.crypto import KeyNotConfigured
from shared.problems import ProblemResponse, problem

log = logging.getLogger("rujukan.intake")


async def sealed_with_missing_key(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, KeyNotConfigured)
    log.error("%s %s: personal data sealed with key '%s', which ENCRYPTION_KEYS does not list",
              request.method, request.url.path, exc.kid)
    return problem(409, f"the personal data was sealed with key '{exc.kid}', which is not configured: the "
                        "operator must restore that key to ENCRYPTION_KEYS (or run `rujukan keys rotate` "
                        "before removing a key)")


def install(app: FastAPI) -> None:
    app.add_exception_handler(KeyNotConfigured, sealed_with_missing_key)
