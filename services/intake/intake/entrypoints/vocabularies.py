"""The vocabularies an agency's system needs to fill in and read referrals: PMKS categories,
region codes, and the codes of support types, urgencies, risk flags and reasons. Read-only,
straight from shared's catalogues (the same ones validation uses); routes only translate."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from intake.entrypoints.http import current_agency
from shared import pmks, regions
from shared.vocab import (
    REASON_LABELS,
    SUPPORT_TYPE_ID,
    CancelReason,
    DeclineReason,
    Gender,
    Modality,
    Outcome,
    ReferralStatus,
    RiskFlag,
    SupportType,
    Urgency,
)

router = APIRouter(prefix="/v1/vocabularies", tags=["vocabularies"], dependencies=[Depends(current_agency)])


class PmksCategoryView(BaseModel):
    no: int = Field(description="the category's number in Permensos No. 08/2012")
    code: str = Field(description="the stable code a referral's pmks_category takes")
    name_id: str = Field(description="the name in Bahasa Indonesia")
    name_en: str = Field(description="the name in English")


class PmksCategoryList(BaseModel):
    items: list[PmksCategoryView]


class RegionView(BaseModel):
    code: str = Field(description="Kemendagri code: province '12', regency/city '12.71'")
    name: str
    level: str = Field(description="'province' or 'regency'")
    parent: str | None = Field(description="the code of the region above it; none for a province")


class RegionList(BaseModel):
    items: list[RegionView]


class CodeView(BaseModel):
    code: str
    label_id: str | None = Field(description="how a social worker reads it in Bahasa Indonesia, when labelled")
    label_en: str | None = Field(description="the same in English, when labelled")


class CodeLists(BaseModel):
    support_types: list[CodeView]
    urgencies: list[CodeView]
    risk_flags: list[CodeView]
    genders: list[CodeView]
    modalities: list[CodeView]
    decline_reasons: list[CodeView]
    outcome_codes: list[CodeView]
    cancel_reasons: list[CodeView]
    referral_statuses: list[CodeView]


@router.get("/pmks-categories", response_model=PmksCategoryList,
            summary="The 26 PMKS categories, in Bahasa Indonesia and English")
async def pmks_categories() -> PmksCategoryList:
    return PmksCategoryList(items=[
        PmksCategoryView(no=c.no, code=c.code, name_id=c.nama, name_en=c.english)
        for c in sorted(pmks.categories().values(), key=lambda c: c.no)
    ])


def _named_regions() -> list[RegionView]:
    provinces = [RegionView(code=c, name=n, level="province", parent=None) for c, n in regions.PROVINCES.items()]
    regencies = [RegionView(code=c, name=n, level="regency", parent=c[:2]) for c, n in regions.REGENCIES.items()]
    return sorted(provinces + regencies, key=lambda r: r.code)


@router.get("/regions", response_model=RegionList, summary="Region codes and their names", description=(
    "All 38 provinces, and the regencies/cities the project names (not every one: any well-formed code "
    "under a known province is accepted in a referral). Without `parent` or `q`: the provinces. "
    "`parent`: the named regions directly under it. `q`: the named regions whose name contains it "
    "(case-insensitive), under `parent` when given, else at every level."))
async def list_regions(
    parent: Annotated[str | None, Query(pattern=regions.schema_pattern(), description="a region code")] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=100, description="part of a name")] = None,
) -> RegionList:
    found = _named_regions()
    if parent is not None:
        found = [r for r in found if r.parent == parent]
    elif q is None:
        found = [r for r in found if r.parent is None]
    if q is not None:
        needle = q.casefold()
        found = [r for r in found if needle in r.name.casefold()]
    return RegionList(items=found)


Labels = Mapping[str, tuple[str | None, str | None]]
# Support types are labelled in Bahasa Indonesia only (shared.vocab has no English for them).
SUPPORT_TYPE_LABELS: Labels = {code: (label, None) for code, label in SUPPORT_TYPE_ID.items()}


def _codes(values: type[StrEnum], labels: Labels | None = None) -> list[CodeView]:
    label = labels or {}
    return [CodeView(code=v.value, label_id=label.get(v.value, (None, None))[0],
                     label_en=label.get(v.value, (None, None))[1]) for v in values]


@router.get("/codes", response_model=CodeLists,
            summary="Support types, urgencies, risk flags, genders, modalities, reason and outcome codes, statuses")
async def codes() -> CodeLists:
    return CodeLists(
        support_types=_codes(SupportType, SUPPORT_TYPE_LABELS),
        urgencies=_codes(Urgency),
        risk_flags=_codes(RiskFlag),
        genders=_codes(Gender),
        modalities=_codes(Modality),
        decline_reasons=_codes(DeclineReason, REASON_LABELS),
        outcome_codes=_codes(Outcome, REASON_LABELS),
        cancel_reasons=_codes(CancelReason, REASON_LABELS),
        referral_statuses=_codes(ReferralStatus),
    )
