"""Matching's admin API (directory and decisions). Routes only translate."""

from __future__ import annotations

import asyncio
import json
import math
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field, ValidationInfo, field_validator
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from matching.adapters.hsds_csv import CsvHeaderError, parse_csv
from matching.adapters.hsds_json import parse_document, parse_service
from matching.domain.directory_record import ServiceRecord
from matching.domain.record_issues import Issue, Parsed
from matching.service_layer import directory
from matching.service_layer.handlers import Matching
from shared import regions
from shared.boundary import reads_body
from shared.operators import Role, operator_with


def get_matching(request: Request) -> Matching:
    return request.app.state.matching


MatchingDep = Annotated[Matching, Depends(get_matching)]


def get_sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    return request.app.state.runtime.sessions


SessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_sessions)]


# The directory role keeps the directory (and reads the decisions made from it).
admin = operator_with(Role.directory)


router = APIRouter(prefix="/v1", dependencies=[Depends(admin)])


# ------------------------------------------------------------------------------------------
# Directory
# ------------------------------------------------------------------------------------------


def unprocessable(issues: list[Issue] | list[tuple[str, str]]) -> HTTPException:
    detail = [{"field": i.field, "reason": i.reason, "type": "directory"} if isinstance(i, Issue)
              else {"field": i[0], "reason": i[1], "type": "directory"} for i in issues]
    return HTTPException(422, detail=detail)


def not_found(service_id: str) -> HTTPException:
    return HTTPException(404, detail=f"no service '{service_id}'")


def wake_waitlist(matching: Matching, service_ids: list[str]) -> None:
    """After a directory write: waiting referrals the change could serve are matched again
    now, and for more seats or a service matchable anew, the waitlist is served."""
    matching.directory_changed(service_ids)


def woken(written: directory.Written) -> list[str]:
    return [written.id] if written.woke else []


async def _rendered(sessions: async_sessionmaker[AsyncSession], service_id: str) -> dict[str, Any]:
    try:
        return await directory.service_full(sessions, service_id)
    except directory.NotFound as e:
        raise not_found(service_id) from e


def _record(body: dict[str, Any], service_id: str | None = None) -> ServiceRecord:
    """A service_full body as a record; anything refused is a 422 naming field and reason."""
    if service_id is not None:
        if body.get("id") not in (None, service_id):
            raise unprocessable([("id", f"differs from the service in the path ('{service_id}')")])
        body = {**body, "id": service_id}
    parsed = parse_service(body)
    refused = [i for i in parsed.issues if i.severity == "reject"]
    if refused or parsed.record is None:
        raise unprocessable(refused)
    return parsed.record


@router.get("/services")
async def list_services(
    sessions: SessionsDep,
    taxonomy_term: Annotated[str | None, Query(
        description="a term code (e.g. korban_tindak_kekerasan) or taxonomy:code (e.g. policy:crisis_capable)",
        max_length=300)] = None,
    taxonomy_term_id: Annotated[str | None, Query(max_length=64)] = None,
    region: Annotated[str | None, Query(
        description="Kemendagri code: services whose area covers it or lies within it")] = None,
    organization_id: Annotated[str | None, Query(max_length=64)] = None,
    search: Annotated[str | None, Query(description="part of the service's name", max_length=200)] = None,
    matchable: Annotated[bool | None, Query(description="false: the flagged or inactive ones")] = None,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,  # bounded: the offset must fit the database's integer
    per_page: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    """HSDS-style search, paginated in the HSDS 3 API page shape."""
    if region is not None:
        try:
            regions.validate(region)
        except ValueError as e:
            raise HTTPException(422, detail=[{"field": "region", "reason": str(e), "type": "value_error"}]) from e
    found = await directory.find(
        sessions, taxonomy_term=taxonomy_term, taxonomy_term_id=taxonomy_term_id, region=region,
        organization_id=organization_id, text=search, matchable=matchable, page=page, per_page=per_page)
    contents = found.services
    total_pages = math.ceil(found.total / per_page)
    return {
        "total_items": found.total, "total_pages": total_pages, "page_number": page, "size": len(contents),
        "first_page": page == 1, "last_page": page >= total_pages, "empty": not contents, "contents": contents,
    }


# An HSDS service_full as the directory reads it (docs/directory-csv.md has the CSV's).
SERVICE_EXAMPLE: dict[str, Any] = {
    "id": "svc-kds-medan", "name": "Kelompok Dukungan Sebaya Kota Medan",
    "organization": {"id": "org-kds-medan", "name": "Komunitas Dukungan Medan"},
    "contacts": [{"id": "ct-kds-medan", "email": "fasilitator@kds-medan.example"}],
    "service_areas": [{"extent": "12.71", "extent_type": "text"}], "languages": [{"code": "id"}],
    "capacities": [{"available": 4, "maximum": 12}],
    "attributes": [{"taxonomy_term": {"taxonomy": t, "code": c}} for t, c in (
        ("pmks", "korban_tindak_kekerasan"), ("resource_kind", "peer_support"), ("support_type", "emotional"))],
}
CSV_EXAMPLE = ("id,name,organization_id,organization_name,resource_kind,pmks,areas,contact_email,seats_available,"
               "seats_max\nsvc-kds-deli,KDS Deli Serdang,org-kds-deli,Komunitas Deli,peer_support,"
               "korban_tindak_kekerasan,12.07,fasilitator@kds-deli.example,3,10\n")


@router.post("/services", status_code=201)
async def create_service(
    body: Annotated[dict[str, Any], Body(description="an HSDS service_full", examples=[SERVICE_EXAMPLE])],
    response: Response, sessions: SessionsDep, matching: MatchingDep,
) -> dict[str, Any]:
    rec = _record(body)
    try:
        written = await directory.add_service(sessions, rec)
    except directory.AlreadyExists as e:
        raise HTTPException(409, detail=f"service '{rec.id}' exists: PUT /v1/services/{rec.id} to change it") from e
    wake_waitlist(matching, woken(written))
    response.headers["Location"] = f"/v1/services/{rec.id}"
    return await _rendered(sessions, rec.id)


@router.get("/services/{service_id}")
async def get_service(service_id: str, sessions: SessionsDep) -> dict[str, Any]:
    return await _rendered(sessions, service_id)


@router.put("/services/{service_id}")
async def replace_service(
    service_id: str, body: Annotated[dict[str, Any], Body(
        description="an HSDS service_full", examples=[{k: v for k, v in SERVICE_EXAMPLE.items() if k != "id"}])],
    sessions: SessionsDep, matching: MatchingDep,
) -> dict[str, Any]:
    rec = _record(body, service_id)
    try:
        written = await directory.replace_service(sessions, rec)
    except directory.NotFound as e:
        raise not_found(service_id) from e
    wake_waitlist(matching, woken(written))
    return await _rendered(sessions, service_id)


async def _status(matching: Matching, sessions: async_sessionmaker[AsyncSession], service_id: str,
                  status: str) -> dict[str, Any]:
    try:
        written = await directory.change_status(sessions, service_id, status)
    except directory.NotFound as e:
        raise not_found(service_id) from e
    wake_waitlist(matching, woken(written))
    return await _rendered(sessions, service_id)


@router.post("/services/{service_id}/deactivate")
async def deactivate_service(service_id: str, sessions: SessionsDep, matching: MatchingDep) -> dict[str, Any]:
    """No new referral is matched to it (seats already held stay with their referrals)."""
    return await _status(matching, sessions, service_id, "inactive")


@router.post("/services/{service_id}/activate")
async def activate_service(service_id: str, sessions: SessionsDep, matching: MatchingDep) -> dict[str, Any]:
    """Active again; matchable when it has no flags (`rujukan.flags` says what is missing)."""
    return await _status(matching, sessions, service_id, "active")


class CapacityIn(BaseModel):
    """The seat capacity as the provider declares it (HSDS 3.1 service_capacity)."""

    maximum: int = Field(ge=0, le=100_000, description="seats in all")
    available: int = Field(ge=0, le=100_000, description="seats free now, for referrals")

    @field_validator("available")
    @classmethod
    def _not_above_maximum(cls, v: int, info: ValidationInfo) -> int:
        maximum = info.data.get("maximum")
        if maximum is not None and v > maximum:
            raise ValueError(f"greater than maximum ({v} > {maximum})")
        return v


@router.put("/services/{service_id}/capacity")
async def update_capacity(service_id: str, body: CapacityIn, sessions: SessionsDep,
                          matching: MatchingDep) -> dict[str, Any]:
    """Live seats become `available` less the seats held now for referrals."""
    try:
        written = await directory.declare_capacity(sessions, service_id, body.available, body.maximum)
    except directory.NotFound as e:
        raise not_found(service_id) from e
    wake_waitlist(matching, woken(written))
    return await _rendered(sessions, service_id)


@router.post("/directory/import", openapi_extra={"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"description": "a service_full, an organization_full, or a list of them"},
                         "example": [SERVICE_EXAMPLE]},
    "text/csv": {"schema": {"type": "string"}, "example": CSV_EXAMPLE}}}})
@reads_body("application/json", "+json", "text/csv", "application/csv", max_bytes_setting="directory_import_max_bytes")
async def import_directory(request: Request, sessions: SessionsDep, matching: MatchingDep) -> dict[str, Any]:
    """HSDS JSON (`application/json`: one service_full or organization_full, or a list of
    them) or the project's CSV (`text/csv`, see docs/directory-csv.md). Reports per record
    what was created, updated, unchanged, flagged or rejected, and why."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    if kind in ("application/json", "application/hsds+json") or kind.endswith("+json"):
        try:
            doc = await asyncio.to_thread(json.loads, raw)
        except RecursionError as e:
            raise unprocessable([("(body)", "nesting too deep")]) from e
        except ValueError as e:
            raise unprocessable([("(body)", f"not valid JSON: {e}")]) from e
        items = parse_document(doc)
    elif kind in ("text/csv", "application/csv"):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise unprocessable([("(body)", f"not UTF-8 text (save the CSV as UTF-8): {e.reason} at byte "
                                            f"{e.start}")]) from e
        try:
            items = parse_csv(text)
            first = next(items, None)  # a bad header fails here, before anything is written
        except CsvHeaderError as e:
            raise unprocessable([("header", str(e))]) from e
        items = _chain(first, items)
    else:
        raise HTTPException(415, detail="send application/json (HSDS) or text/csv (the project's CSV)")
    report = await directory.import_parsed(sessions, items)
    wake_waitlist(matching, report.woke)
    return report.as_dict()


def _chain(first: Parsed | None, rest: Any) -> Any:
    if first is not None:
        yield first
    yield from rest


# ------------------------------------------------------------------------------------------
# Decisions
# ------------------------------------------------------------------------------------------


@router.get("/decisions")
async def decisions(referral_id: str, matching: MatchingDep) -> dict[str, Any]:
    rows = await matching.decisions_for(referral_id)
    return {"items": [
        {"id": d.id, "referral_id": d.referral_id, "outcome": d.outcome, "service_id": d.service_id,
         "reasons": {"id": d.reasons_id, "en": d.reasons_en}, "candidates": d.candidates,
         "created_at": d.created_at.isoformat()} for d in rows
    ]}
