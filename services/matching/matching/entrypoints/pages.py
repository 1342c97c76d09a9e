"""Pages (server-rendered HTML): only translate between forms and the service layer.

The operators' home and the directory's pages, behind the directory role: search the
services, one service with its seats and receiving contact, and an HSDS JSON or CSV import
with its report. The same use cases as the JSON routes (entrypoints/http.py) answer them."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import UploadFile

from matching.adapters.hsds_csv import CsvHeaderError, parse_csv
from matching.adapters.hsds_json import parse_document
from matching.domain.record_issues import Parsed
from matching.entrypoints.http import wake_waitlist
from matching.service_layer import directory
from matching.service_layer.directory_seats import seat_use
from shared import pmks, regions
from shared.boundary import reads_body
from shared.operators import Role
from shared.web.i18n import gettext_for, language_of
from shared.web.operator import SERVICES, operator_for, page_context
from shared.web.pages import PageProblem, form_of

router = APIRouter(include_in_schema=False)

DIRECTORY = "/operator/directory"
PER_PAGE = 25
MAX_TEXT = 200


def _render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    response: HTMLResponse = request.app.state.pages.render(request, name, context, status=status)
    return response


def _categories() -> list[tuple[str, str]]:
    return [(c.code, c.nama) for c in sorted(pmks.categories().values(), key=lambda c: c.no)]


def _terms(svc: dict[str, Any], taxonomy: str) -> list[str]:
    return [str(a["taxonomy_term"].get("code")) for a in svc.get("attributes", [])
            if isinstance(a.get("taxonomy_term"), dict) and a["taxonomy_term"].get("taxonomy") == taxonomy]


def _seats(svc: dict[str, Any]) -> tuple[int | None, int | None]:
    extra = svc.get("rujukan", {})
    return extra.get("seats_available"), extra.get("seats_max")


def _row(svc: dict[str, Any]) -> dict[str, Any]:
    available, maximum = _seats(svc)
    names = pmks.categories()
    return {
        "id": svc["id"], "name": svc.get("name", ""), "organization": (svc.get("organization") or {}).get("name", ""),
        "categories": [names[c].nama if c in names else c for c in _terms(svc, "pmks")],
        "areas": [str(a.get("extent", "")) for a in svc.get("service_areas", [])],
        "matchable": bool(svc.get("rujukan", {}).get("matchable")), "status": svc.get("status", ""),
        "available": available, "maximum": maximum,
    }


def _moment(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text)) if text else None
    except ValueError:
        return None


@router.get("/operator/")
async def home(request: Request) -> Response:
    op = await operator_for(request)
    if isinstance(op, Response):
        return op
    return _render(request, "operator_home.html", {**page_context(op), "services": SERVICES})


@router.get(DIRECTORY)
async def search(request: Request) -> Response:
    op = await operator_for(request, Role.directory)
    if isinstance(op, Response):
        return op
    _ = gettext_for(language_of(request))
    q = request.query_params
    text = (q.get("q") or "").strip()[:MAX_TEXT]
    category = q.get("category") or ""
    region = (q.get("region") or "").strip()
    active = q.get("active") or ""
    page_text = q.get("page") or "1"
    page = int(page_text) if page_text.isdigit() and 0 < int(page_text) <= 100_000 else 1
    errors: dict[str, str] = {}
    if category and category not in pmks.categories():
        errors["category"] = _("Pick a category from the list.")
    if region:
        try:
            regions.validate(region)
        except ValueError:
            errors["region"] = _("Enter a Kemendagri code such as 12, 12.71 or 12.71.05.")
    if active not in ("", "yes", "no"):
        errors["active"] = _("Pick one of the choices.")
    found: directory.Found | None = None
    if not errors:
        found = await directory.find(
            request.app.state.runtime.sessions, taxonomy_term=f"pmks:{category}" if category else None,
            taxonomy_term_id=None, region=region or None, organization_id=None, text=text or None,
            matchable={"yes": True, "no": False}.get(active), page=page, per_page=PER_PAGE)
    total = found.total if found else 0
    pages = max(1, math.ceil(total / PER_PAGE))
    query = {"q": text, "category": category, "region": region, "active": active}
    return _render(request, "directory_search.html", {
        **page_context(op), "query": query, "errors": errors, "categories": _categories(),
        "rows": [_row(s) for s in found.services] if found else [], "total": total, "page": page,
        "pages": pages, "region_name": regions.name(region) if region and not errors.get("region") else "",
    }, status=422 if errors else 200)


@router.get(DIRECTORY + "/services/{service_id}")
async def service_page(request: Request, service_id: str) -> Response:
    op = await operator_for(request, Role.directory)
    if isinstance(op, Response):
        return op
    _ = gettext_for(language_of(request))
    sessions = request.app.state.runtime.sessions
    try:
        svc = await directory.service_full(sessions, service_id)
    except directory.NotFound:
        raise PageProblem(404, _("There is no service with this id in the directory."), title=_("Not found")) from None
    use = await seat_use(sessions, service_id)
    available, maximum = _seats(svc)
    contact = next((c for c in svc.get("contacts", []) if c.get("email")), None)
    names = pmks.categories()
    return _render(request, "directory_service.html", {
        **page_context(op), "svc": svc, "row": _row(svc), "use": use, "available": available, "maximum": maximum,
        "contact": contact, "receiver_id": svc.get("rujukan", {}).get("receiver_id"),
        "flags": svc.get("rujukan", {}).get("flags", []),
        "kinds": _terms(svc, "resource_kind"), "support": _terms(svc, "support_type"),
        "policies": _terms(svc, "policy"),
        "category_names": [names[c].nama if c in names else c for c in _terms(svc, "pmks")],
        "area_names": [(a, regions.name(a)) for a in _row(svc)["areas"] if a],
        "updated_at": _moment(svc.get("rujukan", {}).get("updated_at")),
    })


@router.get(DIRECTORY + "/import")
async def import_form(request: Request) -> Response:
    op = await operator_for(request, Role.directory)
    if isinstance(op, Response):
        return op
    return _render(request, "directory_import.html", {**page_context(op), "errors": {}})


def _chain(first: Parsed | None, rest: Iterator[Parsed]) -> Iterator[Parsed]:
    if first is not None:
        yield first
    yield from rest


def _kind(upload: UploadFile, raw: bytes) -> str:
    """'json' or 'csv': by the file's name, else its type, else its first character."""
    name = (upload.filename or "").lower()
    kind = (upload.content_type or "").split(";")[0].strip().lower()
    if name.endswith(".json") or kind == "application/json" or kind.endswith("+json"):
        return "json"
    if name.endswith(".csv") or kind in ("text/csv", "application/csv"):
        return "csv"
    return "json" if raw.lstrip()[:1] in (b"[", b"{") else "csv"


@router.post(DIRECTORY + "/import")
@reads_body("multipart/form-data", max_bytes_setting="directory_import_max_bytes")
async def import_file(request: Request) -> Response:
    op = await operator_for(request, Role.directory)
    if isinstance(op, Response):
        return op
    await form_of(request)
    _ = gettext_for(language_of(request))
    upload = (await request.form()).get("file")

    def refused(message: str) -> HTMLResponse:
        return _render(request, "directory_import.html", {**page_context(op), "errors": {"file": message}},
                       status=422)

    if not isinstance(upload, UploadFile) or not upload.filename:
        return refused(_("Choose an HSDS JSON or CSV file."))
    raw = await upload.read()
    if not raw.strip():
        return refused(_("The file is empty."))
    kind = _kind(upload, raw)
    if kind == "json":
        try:
            doc = await asyncio.to_thread(json.loads, raw)
        except (ValueError, RecursionError):
            return refused(_("The file is not valid JSON."))
        items: Iterator[Parsed] = parse_document(doc)
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return refused(_("The CSV is not UTF-8 text: save it as UTF-8 and send it again."))
        try:
            rows = parse_csv(text)
            first = next(rows, None)  # a bad header fails here, before anything is written
        except CsvHeaderError as e:
            return refused(_("The CSV's header is not the directory's:") + f" {e}")
        items = _chain(first, rows)
    report = await directory.import_parsed(request.app.state.runtime.sessions, items)
    wake_waitlist(request.app.state.matching, report.woke)
    return _render(request, "directory_report.html", {
        **page_context(op), "report": report.as_dict(), "kind": kind.upper(),
    })
