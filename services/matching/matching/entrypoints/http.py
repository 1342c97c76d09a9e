"""Matching's admin API (directory and decisions). Routes only translate."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy import func, select

from matching.adapters.orm import Service, ServiceArea, ServiceCategory
from matching.service_layer.directory import view_record
from matching.service_layer.services import Matching
from shared.http import BearerToken, unauthorized


def get_matching(request: Request) -> Matching:
    return request.app.state.matching


MatchingDep = Annotated[Matching, Depends(get_matching)]


def admin(token: BearerToken, request: Request) -> None:
    key = request.app.state.settings.admin_api_key
    if not key or not hmac.compare_digest(token, key):
        raise unauthorized()


router = APIRouter(prefix="/v1", dependencies=[Depends(admin)])


@router.get("/services")
async def list_services(
    matching: MatchingDep,
    taxonomy_term: Annotated[str | None, Query(description="a pmks code")] = None,
    region: Annotated[str | None, Query(description="services whose area is this region code")] = None,
    page: Annotated[int, Query(ge=1)] = 1,
    per_page: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    q = select(Service)
    if taxonomy_term:
        q = q.where(Service.id.in_(select(ServiceCategory.service_id)
                                   .where(ServiceCategory.pmks_code == taxonomy_term)))
    if region:
        q = q.where(Service.id.in_(select(ServiceArea.service_id).where(ServiceArea.region_code == region)))
    async with matching.sessions() as s:
        total = await s.scalar(select(func.count()).select_from(q.subquery()))
        rows = (await s.scalars(q.order_by(Service.id).limit(per_page).offset((page - 1) * per_page))).all()
        items = [view_record(r).__dict__ for r in rows]
    return {"total_items": total, "page": page, "per_page": per_page, "contents": items}


@router.get("/decisions")
async def decisions(referral_id: str, matching: MatchingDep) -> dict[str, Any]:
    rows = await matching.decisions_for(referral_id)
    return {"items": [
        {"id": d.id, "referral_id": d.referral_id, "outcome": d.outcome, "service_id": d.service_id,
         "reasons": {"id": d.reasons_id, "en": d.reasons_en}, "candidates": d.candidates,
         "created_at": d.created_at.isoformat()} for d in rows
    ]}
