"""What every service's pages share, against a real service app: assets, security headers,
the language switch, HTML errors and the CSRF check."""

from __future__ import annotations

import pytest
from fastapi import Request
from fastapi.responses import HTMLResponse

from intake.bootstrap import create_app
from shared.web.csrf import CSRF_COOKIE, CSRF_FIELD
from shared.web.pages import CONTENT_SECURITY_POLICY, PageProblem, form_of
from tests.apps import running
from tests.integration.test_intake import settings


def app_with_a_form(database_url: str, redis_url: str):  # type: ignore[no-untyped-def]
    app = create_app(settings(database_url, redis_url))

    @app.get("/agency/test-form")
    async def show(request: Request) -> HTMLResponse:
        return request.app.state.pages.render(request, "error.html", {"status": 200, "message": "form"})

    @app.post("/agency/test-form")
    async def take(request: Request) -> dict[str, str]:
        form = await form_of(request)
        return {"got": form.get("x", "")}

    @app.get("/agency/test-missing")
    async def missing(request: Request) -> None:
        raise PageProblem(404, "no such thing here")

    return app


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_assets_and_pages_carry_the_security_headers(database_url: str, redis_url: str) -> None:
    async with running(app_with_a_form(database_url, redis_url)) as client:
        css = await client.get("/assets/rujukan.css")
        assert css.status_code == 200
        assert css.headers["content-type"].startswith("text/css")
        assert css.headers["x-content-type-options"] == "nosniff"
        page = await client.get("/agency/test-form")
        assert page.status_code == 200
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "unsafe-inline" not in page.headers["content-security-policy"]
        assert page.headers["referrer-policy"] == "no-referrer"
        assert page.headers["cache-control"] == "no-store"
        assert '<html lang="id">' in page.text
        cookie = page.headers["set-cookie"]
        assert cookie.startswith(f"{CSRF_COOKIE}=")
        assert "httponly" in cookie.lower()
        assert "samesite=strict" in cookie.lower()
        assert "style=" not in page.text  # no inline style: the CSP would block it
        assert "<script>" not in page.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_language_switch_keeps_to_this_site(database_url: str, redis_url: str) -> None:
    async with running(app_with_a_form(database_url, redis_url)) as client:
        r = await client.get("/lang/en", params={"next": "/agency/test-form"})
        assert r.status_code == 303
        assert r.headers["location"] == "/agency/test-form"
        assert "rujukan_lang=en" in r.headers["set-cookie"]
        page = await client.get("/agency/test-form")
        assert '<html lang="en">' in page.text
        assert "Skip to content" in page.text
        # Another site, or an unknown language, changes nothing.
        r = await client.get("/lang/en", params={"next": "//evil.example/phish"})
        assert r.headers["location"] == "/"
        r = await client.get("/lang/xx", params={"next": "/agency/test-form"})
        assert "set-cookie" not in r.headers


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_form_without_its_token_is_refused(database_url: str, redis_url: str) -> None:
    async with running(app_with_a_form(database_url, redis_url)) as client:
        await client.get("/agency/test-form")  # the browser now holds its token
        token = client.cookies[CSRF_COOKIE]
        ok = await client.post("/agency/test-form", data={CSRF_FIELD: token, "x": "1"})
        assert ok.json() == {"got": "1"}
        for data in ({"x": "1"}, {CSRF_FIELD: "forged", "x": "1"}):
            refused = await client.post("/agency/test-form", data=data)
            assert refused.status_code == 403
            assert "text/html" in refused.headers["content-type"]
            assert "kedaluwarsa" in refused.text  # said in Bahasa Indonesia
        cross_site = await client.post("/agency/test-form", data={CSRF_FIELD: token, "x": "1"},
                                       headers={"Origin": "https://evil.example"})
        assert cross_site.status_code == 403


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_page_problem_is_a_page(database_url: str, redis_url: str) -> None:
    async with running(app_with_a_form(database_url, redis_url)) as client:
        r = await client.get("/agency/test-missing")
        assert r.status_code == 404
        assert "text/html" in r.headers["content-type"]
        assert "no such thing here" in r.text
