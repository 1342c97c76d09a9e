"""Who gets sent where, and why: a pure function of the referral's facts and the
candidate services (already narrowed by an index query), so that the same inputs and
directory version always give the same decision, and so it is easy to test exhaustively."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from shared import regions
from shared.pmks import categories
from shared.vocab import SUPPORT_GROUP_KINDS, Gender, Modality, is_urgent, parse_age_band


@dataclass(frozen=True)
class ReferralFacts:
    referral_id: str
    pmks_category: str
    region_code: str
    age_band: str
    gender: str
    languages: tuple[str, ...]
    modality: str
    urgency: str
    risk_flags: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()

    @property
    def urgent(self) -> bool:
        return is_urgent(self.urgency, list(self.risk_flags))


@dataclass(frozen=True)
class ServiceView:
    id: str
    name: str
    organization_name: str
    resource_kind: str
    active: bool
    online: bool
    pmks: frozenset[str]
    support_types: frozenset[str]
    areas: tuple[str, ...]
    languages: frozenset[str]
    policies: frozenset[str]
    minimum_age: int | None
    maximum_age: int | None
    seats_available: int
    seats_max: int


@dataclass
class Verdict:
    service: ServiceView
    eligible: bool
    score: tuple[float, ...] = ()
    reasons_id: list[str] = field(default_factory=list)
    reasons_en: list[str] = field(default_factory=list)
    excluded_id: str = ""
    excluded_en: str = ""


def _nearness(s: ServiceView, region: str) -> tuple[int, str | None]:
    """4 same district (or finer), 3 same regency, 2 same province, 1 online only, 0 none."""
    best, area_hit = 0, None
    depth_score = {3: 4, 4: 4, 2: 3, 1: 2}
    for area in s.areas:
        if regions.covers(area, region):
            sc = depth_score.get(len(area.split(".")), 2)
            if sc > best:
                best, area_hit = sc, area
    if best == 0 and s.online:
        return 1, None
    return best, area_hit


def evaluate(f: ReferralFacts, s: ServiceView) -> Verdict:
    """Hard constraints first (each refusal says why), then the reasons for a match."""
    v = Verdict(s, eligible=False)

    def no(reason_id: str, reason_en: str) -> Verdict:
        v.excluded_id, v.excluded_en = reason_id, reason_en
        return v

    if not s.active:
        return no("layanan tidak aktif", "service inactive")
    if f.pmks_category not in s.pmks:
        return no("tidak melayani kategori ini", "does not serve this category")
    if f.urgent:
        if s.resource_kind in SUPPORT_GROUP_KINDS:
            return no("kelompok dukungan tidak menangani situasi darurat",
                      "a support group is never the answer to danger")
        if "crisis_capable" not in s.policies:
            return no("tidak menangani kasus krisis", "not crisis-capable")
    near, area_hit = _nearness(s, f.region_code)
    if near == 1 and f.modality == Modality.in_person:
        return no("hanya daring, klien memilih tatap muka", "online only; the person wants in person")
    if near == 0:
        return no("di luar wilayah layanan", "outside the service area")
    if near >= 2 and not s.online and f.modality == Modality.online:
        return no("hanya tatap muka, klien memilih daring", "in person only; the person wants online")
    if "women_only" in s.policies and f.gender != Gender.female:
        return no("khusus perempuan", "women only")
    low, high = parse_age_band(f.age_band)
    if s.minimum_age is not None and low < s.minimum_age:
        return no(f"usia minimal {s.minimum_age}", f"minimum age {s.minimum_age}")
    if s.maximum_age is not None and high > s.maximum_age:
        return no(f"usia maksimal {s.maximum_age}", f"maximum age {s.maximum_age}")
    shared_langs = sorted(set(f.languages) & s.languages)
    if not shared_langs:
        return no("tidak ada bahasa yang sama", "no shared language")
    if s.seats_available <= 0:
        return no("tidak ada kursi tersedia", "no free seat")

    cat = categories()[f.pmks_category]
    covered = sorted(set(f.needs) & s.support_types)
    v.eligible = True
    v.reasons_id.append(f"melayani {cat.nama.lower()}")
    v.reasons_en.append(f"serves {cat.english[0].lower()}{cat.english[1:]}")
    if f.urgent:
        v.reasons_id.append("menangani kasus krisis")
        v.reasons_en.append("takes crisis cases")
    if area_hit is not None:
        v.reasons_id.append(f"wilayah {regions.name(area_hit)}")
        v.reasons_en.append(f"area {regions.name(area_hit)}")
    else:
        v.reasons_id.append("layanan daring")
        v.reasons_en.append("online service")
    if covered:
        v.reasons_id.append("dukungan " + ", ".join(covered))
        v.reasons_en.append("support: " + ", ".join(covered))
    v.reasons_id.append(f"bahasa {', '.join(shared_langs)}")
    v.reasons_en.append(f"language {', '.join(shared_langs)}")
    v.reasons_id.append(f"kursi tersedia {s.seats_available}/{s.seats_max}")
    v.reasons_en.append(f"seats available {s.seats_available}/{s.seats_max}")
    load = s.seats_available / s.seats_max if s.seats_max else 0.0
    # Fairness between equally good candidates: a stable per-referral tiebreak, so equal
    # services take turns across referrals, yet the same referral always gets the same answer.
    tiebreak = int.from_bytes(hashlib.sha256(f"{f.referral_id}:{s.id}".encode()).digest()[:4], "big")
    v.score = (float(len(covered)), float(near), float(len(shared_langs)), round(load, 3), -tiebreak / 2**32)
    return v


@dataclass
class Ranking:
    chosen: list[Verdict]  # eligible, best first
    excluded: list[Verdict]


def rank(f: ReferralFacts, services: list[ServiceView], exclude_ids: frozenset[str] = frozenset()) -> Ranking:
    verdicts = []
    for s in sorted(services, key=lambda s: s.id):
        if s.id in exclude_ids:
            v = Verdict(s, eligible=False, excluded_id="sudah menolak rujukan ini",
                        excluded_en="already declined this referral")
        else:
            v = evaluate(f, s)
        verdicts.append(v)
    eligible = sorted((v for v in verdicts if v.eligible), key=lambda v: v.score, reverse=True)
    return Ranking(eligible, [v for v in verdicts if not v.eligible])
