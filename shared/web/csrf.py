"""A CSRF token on every form: double submit. The browser holds a random token in an
HttpOnly, SameSite=Strict cookie; each form carries the same token in a hidden field; a
POST whose field does not match the cookie, or whose Origin is another site, is refused.
Stateless, so it holds across the three services behind one origin."""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

CSRF_COOKIE = "rujukan_csrf"
CSRF_FIELD = "csrf_token"


def is_https(request: Request) -> bool:
    settings = getattr(request.app.state, "settings", None)
    public = str(getattr(settings, "public_url", "") or "")
    return request.url.scheme == "https" or public.startswith("https://")


def csrf_token(request: Request) -> str:
    """The browser's token; a new one (set on the response by `remember_csrf`) if it has none."""
    token = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "new_csrf", None)
    if not token:
        token = request.state.new_csrf = secrets.token_urlsafe(32)
    return token


def remember_csrf(request: Request, response: Response) -> None:
    if new := getattr(request.state, "new_csrf", None):
        response.set_cookie(CSRF_COOKIE, new, httponly=True, samesite="strict", secure=is_https(request), path="/")


def csrf_ok(request: Request, submitted: str | None) -> bool:
    """The form's token matches the browser's cookie, and the request comes from this site."""
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = request.headers.get("x-forwarded-host") or request.headers.get("host", "")
        if urlsplit(origin).netloc != host:
            return False
    if request.headers.get("sec-fetch-site") in ("cross-site",):
        return False
    cookie = request.cookies.get(CSRF_COOKIE)
    return bool(cookie and submitted and hmac.compare_digest(cookie, submitted))
