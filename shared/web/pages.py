"""Rendering pages: one Jinja environment per service (its own templates first, then the
shared layout and macros), the catalogue in the person's language, CSRF, security headers,
the assets under /assets and the language switch under /lang."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, select_autoescape
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.web.csrf import CSRF_FIELD, csrf_ok, csrf_token, is_https, remember_csrf
from shared.web.i18n import LANG_COOKIE, LANGUAGES, gettext_for, language_of
from shared.web.zones import local_time, zone_of

SHARED_TEMPLATES = Path(str(resources.files("shared.web").joinpath("templates")))
ASSETS = Path(str(resources.files("shared.web").joinpath("static")))

# No inline script or style anywhere: every script and stylesheet is a file under /assets.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; object-src 'none'"
)
# The API's own HTML documentation loads its viewer from elsewhere; it holds no personal data.
_DOCS = ("/docs", "/redoc")


class PageProblem(Exception):
    """A page that cannot be shown, said to a person (HTML), not to a program (JSON)."""

    def __init__(self, status: int, message: str, *, title: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.title = status, message, title


class Pages:
    """A service's page renderer."""

    def __init__(self, templates: Path | None = None) -> None:
        loaders = ([FileSystemLoader(str(templates))] if templates else []) + [FileSystemLoader(str(SHARED_TEMPLATES))]
        self.env = Environment(loader=ChoiceLoader(loaders), autoescape=select_autoescape(default=True),
                               trim_blocks=True, lstrip_blocks=True)

    def render(self, request: Request, name: str, context: Mapping[str, Any] | None = None, *,
               status: int = 200) -> HTMLResponse:
        lang = language_of(request)
        gettext = gettext_for(lang)

        def when(moment: datetime | None, region: str | None = None) -> str:
            return local_time(moment, region, lang)

        values: dict[str, Any] = {
            "request": request, "lang": lang, "_": gettext, "other_lang": "en" if lang == "id" else "id",
            "csrf_field": CSRF_FIELD, "csrf_token": csrf_token(request), "when": when, "zone_of": zone_of,
            "here": request.url.path,
        }
        values.update(context or {})
        html = self.env.get_template(name).render(values)
        response = HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})
        remember_csrf(request, response)
        return response

    def problem(self, request: Request, exc: PageProblem) -> HTMLResponse:
        return self.render(request, "error.html", {"status": exc.status, "message": exc.message,
                                                    "title": exc.title}, status=exc.status)


async def form_of(request: Request) -> dict[str, str]:
    """The posted form (text fields; a repeated name keeps its last value), after its CSRF
    token was checked; refused with 403 when the token is missing or wrong."""
    form = await request.form()
    if not csrf_ok(request, str(form.get(CSRF_FIELD) or "")):
        gettext = gettext_for(language_of(request))
        raise PageProblem(403, gettext("This form has expired. Go back, reload the page and send it again."))
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def form_lists(request: Request) -> dict[str, list[str]]:
    """Every value of each field (checkboxes, multiple selects); call after form_of()."""
    form = await request.form()
    return {k: [v for v in form.getlist(k) if isinstance(v, str)] for k in form}


def safe_next(target: str | None) -> str:
    """A path on this site to go back to; anything else (another site, a scheme) is '/'."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def lang_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/lang/{code}")
    async def switch_language(code: str, request: Request, next: str = "/") -> RedirectResponse:
        response = RedirectResponse(safe_next(next), status_code=303)
        if code in LANGUAGES:
            response.set_cookie(LANG_COOKIE, code, max_age=365 * 24 * 3600, httponly=True, samesite="lax",
                                secure=is_https(request), path="/")
        return response

    return router


class SecurityHeaders:
    """Headers every answer carries; a Content-Security-Policy on HTML pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope["path"].startswith(_DOCS)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")  # a sign-in link never leaks onwards
                headers.setdefault("X-Frame-Options", "DENY")
                if headers.get("content-type", "").startswith("text/html") and not docs:
                    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install_pages(app: FastAPI, pages: Pages) -> None:
    """The assets, the language switch, HTML errors for pages and the security headers."""
    app.state.pages = pages
    app.mount("/assets", StaticFiles(directory=str(ASSETS)), name="assets")
    app.include_router(lang_router())
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(PageProblem)
    async def page_problem(request: Request, exc: PageProblem) -> HTMLResponse:
        return pages.problem(request, exc)
