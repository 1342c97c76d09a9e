"""Who gets sent where, and why: a pure function of the referral's facts and the
candidate services (already narrowed by an index query), so that the same inputs and
directory version always give the same decision, and so it is easy to test exhaustively.

Hard constraints first, each refusal with its reason; then the eligible services are
ranked by, in this order: support types covered, nearness (same district, regency,
province, then online), language fit, load (emptier first), and a fair tie-break.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from shared import regions
from shared.pmks import categories
from shared.vocab import PROFESSIONAL_KINDS, SUPPORT_TYPE_ID, Gender, Modality, is_urgent, parse_age_band


@dataclass(frozen=True)
class ReferralFacts:
    referral_id: str
    pmks_category: str
    region_code: str
    age_band: str
    gender: str
    languages: tuple[str, ...]  # the person's first language first
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
    # Region codes of the service's physical places, when the directory knows them: a
    # better measure of nearness than how widely its service area is drawn.
    locations: tuple[str, ...] = ()


# Why a service was refused: a stable code (for the service layer: "full" means it would
# have been eligible but for a seat, so the referral waits) and the words a worker reads.
EXCLUSIONS: dict[str, tuple[str, str]] = {
    "inactive": ("layanan tidak aktif", "service inactive"),
    "category": ("tidak melayani kategori ini", "does not serve this category"),
    "support_group_in_crisis": ("kelompok dukungan tidak menangani situasi darurat",
                                "a support group is never the answer to danger"),
    "not_professional": ("bukan layanan profesional", "not a professional service"),
    "not_crisis_capable": ("tidak menangani kasus krisis", "not crisis-capable"),
    "online_only": ("hanya daring, klien memilih tatap muka", "online only; the person wants in person"),
    "outside_area": ("di luar wilayah layanan", "outside the service area"),
    "in_person_only": ("hanya tatap muka, klien memilih daring", "in person only; the person wants online"),
    "women_only": ("khusus perempuan", "women only"),
    "minimum_age": ("di bawah usia minimal", "below the minimum age"),
    "maximum_age": ("di atas usia maksimal", "above the maximum age"),
    "language": ("tidak ada bahasa yang sama", "no shared language"),
    "full": ("tidak ada kursi tersedia", "no free seat"),
    "declined": ("sudah menolak rujukan ini", "already declined this referral"),
    "lapsed": ("tidak menanggapi usulan sebelumnya dalam batas waktu",
               "did not answer an earlier proposal in time"),
    "taken": ("kursi terakhir baru saja diambil rujukan lain", "the last seat was just taken by another referral"),
    "proposed": ("sudah diusulkan rujukan ini, menunggu jawaban",
                 "already proposed this referral, waiting for an answer"),
}

# Nearness levels, the higher the nearer.
NEAR_DISTRICT, NEAR_REGENCY, NEAR_PROVINCE, NEAR_ONLINE, NEAR_NONE = 4, 3, 2, 1, 0
NEAR_WORDS: dict[int, tuple[str, str]] = {
    NEAR_DISTRICT: ("kecamatan yang sama", "same district"),
    NEAR_REGENCY: ("kabupaten/kota yang sama", "same regency or city"),
    NEAR_PROVINCE: ("provinsi yang sama", "same province"),
    NEAR_ONLINE: ("daring", "online"),
}


@dataclass
class Verdict:
    service: ServiceView
    eligible: bool
    score: tuple[float, ...] = ()
    excluded_code: str = ""
    excluded_id: str = ""
    excluded_en: str = ""
    near: int = NEAR_NONE
    covered: tuple[str, ...] = ()
    # What the reasons are made of; they are worded only when read (a decision ranks a
    # thousand services and explains the one it chooses).
    facts: ReferralFacts | None = None
    area_hit: str | None = None
    shared_languages: tuple[str, ...] = ()
    _reasons: tuple[list[str], list[str]] | None = field(default=None, repr=False)

    @property
    def reasons_id(self) -> list[str]:
        return self._explained()[0]

    @property
    def reasons_en(self) -> list[str]:
        return self._explained()[1]

    def _explained(self) -> tuple[list[str], list[str]]:
        if self._reasons is None:
            self._reasons = explain(self) if self.eligible and self.facts is not None else ([], [])
        return self._reasons

    def exclude(self, code: str, detail_id: str = "", detail_en: str = "") -> Verdict:
        self.eligible = False
        self.excluded_code = code
        words_id, words_en = EXCLUSIONS[code]
        self.excluded_id = f"{words_id} {detail_id}".strip()
        self.excluded_en = f"{words_en} {detail_en}".strip()
        return self

    @property
    def composite(self) -> float:
        """One number for the audit trail, ordered like the score tuple (ties aside)."""
        if not self.score:
            return 0.0
        covered, near, lang, load, _ = self.score
        return round(covered * 1000 + near * 100 + lang * 10 + load, 3)


def _shared_levels(a: str, b: str) -> int:
    """How many leading levels two region codes share: 12.71.05 vs 12.71.09 -> 2."""
    n = 0
    for x, y in zip(a.split("."), b.split("."), strict=False):
        if x != y:
            break
        n += 1
    return n


def nearness(s: ServiceView, region: str) -> tuple[int, str | None]:
    """(level, the most specific of its areas covering the region)."""
    covering = [a for a in s.areas if regions.covers(a, region)]
    if not covering:
        return (NEAR_ONLINE if s.online else NEAR_NONE), None
    area_hit = max(covering, key=lambda a: (a.count("."), a))
    shared = max(_shared_levels(loc, region) for loc in s.locations) if s.locations else area_hit.count(".") + 1
    # At least "same province": an area that covers the person is never worse than that.
    return max(NEAR_PROVINCE, 1 + min(shared, 3)), area_hit


def tiebreak(referral_id: str, service_id: str) -> float:
    """Fairness between equally good candidates: a stable per-referral draw, so equal
    services take turns across referrals, yet the same referral always gets the same answer."""
    digest = hashlib.sha256(f"{referral_id}:{service_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


def evaluate(f: ReferralFacts, s: ServiceView) -> Verdict:
    """Hard constraints first (each refusal says why), then the reasons for a match."""
    v = Verdict(s, eligible=False)
    if not s.active:
        return v.exclude("inactive")
    if f.pmks_category not in s.pmks:
        return v.exclude("category")
    if f.urgent:
        # Danger needs a professional who takes crisis cases: never a peer or self-help group,
        # and never a service whose kind the directory does not know.
        if s.resource_kind not in PROFESSIONAL_KINDS:
            return v.exclude("support_group_in_crisis" if s.resource_kind else "not_professional")
        if "crisis_capable" not in s.policies:
            return v.exclude("not_crisis_capable")
    near, area_hit = nearness(s, f.region_code)
    if near == NEAR_NONE:
        return v.exclude("outside_area")
    if near == NEAR_ONLINE and f.modality == Modality.in_person:
        return v.exclude("online_only")
    if near >= NEAR_PROVINCE and not s.online and f.modality == Modality.online:
        return v.exclude("in_person_only")
    if "women_only" in s.policies and f.gender != Gender.female:
        return v.exclude("women_only")
    # The person's age travels as a five-year band: refuse unless the whole band fits.
    low, high = parse_age_band(f.age_band)
    if s.minimum_age is not None and low < s.minimum_age:
        return v.exclude("minimum_age", f"({s.minimum_age})", f"({s.minimum_age})")
    if s.maximum_age is not None and high > s.maximum_age:
        return v.exclude("maximum_age", f"({s.maximum_age})", f"({s.maximum_age})")
    shared_langs = [lang for lang in f.languages if lang in s.languages]
    if not shared_langs:
        return v.exclude("language")
    if s.seats_available <= 0:
        return v.exclude("full", f"(0/{s.seats_max})", f"(0/{s.seats_max})")

    covered = tuple(sorted(set(f.needs) & s.support_types))
    v.eligible, v.near, v.covered = True, near, covered
    v.facts, v.area_hit, v.shared_languages = f, area_hit, tuple(shared_langs)
    first_language_fits = 2.0 if f.languages and f.languages[0] in s.languages else 1.0
    load = round(s.seats_available / s.seats_max, 3) if s.seats_max > 0 else 0.0
    v.score = (float(len(covered)), float(near), first_language_fits, load, -tiebreak(f.referral_id, s.id))
    return v


def explain(v: Verdict) -> tuple[list[str], list[str]]:
    """Why an eligible service fits, in Bahasa Indonesia and English: what a social worker
    reads, e.g. "melayani korban tindak kekerasan; wilayah Kota Medan; kursi tersedia 3/12"."""
    f, s = v.facts, v.service
    assert f is not None
    cat = categories()[f.pmks_category]
    ids: list[str] = [f"melayani {cat.nama.lower()}"]
    ens: list[str] = [f"serves {cat.english[0].lower()}{cat.english[1:]}"]
    if f.urgent:
        ids.append("menangani kasus krisis")
        ens.append("takes crisis cases")
        if "open_24h" in s.policies:
            ids.append("buka 24 jam")
            ens.append("open 24 hours")
    if v.area_hit is not None:
        ids.append(f"wilayah {regions.name(v.area_hit)}")
        ens.append(f"area {regions.name(v.area_hit)}")
    else:
        ids.append("layanan daring")
        ens.append("online service")
    if v.covered:
        wanted = len(set(f.needs))
        covered_id = ", ".join(SUPPORT_TYPE_ID.get(c, c) for c in v.covered)
        ids.append(f"dukungan {covered_id} ({len(v.covered)} dari {wanted} kebutuhan)")
        ens.append(f"support: {', '.join(v.covered)} ({len(v.covered)} of {wanted} needs)")
    ids.append(f"bahasa {', '.join(v.shared_languages)}")
    ens.append(f"language {', '.join(v.shared_languages)}")
    ids.append(f"kursi tersedia {s.seats_available}/{s.seats_max}")
    ens.append(f"seats available {s.seats_available}/{s.seats_max}")
    return ids, ens


def why_lower(chosen: Verdict, other: Verdict) -> tuple[str, str]:
    """Why an eligible service ranked below the chosen one: the first criterion that differs."""
    (c_cov, c_near, c_lang, c_load, _), (o_cov, o_near, o_lang, o_load, _) = chosen.score, other.score
    if o_cov != c_cov:
        return (f"mencakup {int(o_cov)} kebutuhan, yang dipilih {int(c_cov)}",
                f"covers {int(o_cov)} of the needs, the chosen one {int(c_cov)}")
    if o_near != c_near:
        o_id, o_en = NEAR_WORDS.get(int(o_near), ("", ""))
        c_id, c_en = NEAR_WORDS.get(int(c_near), ("", ""))
        return f"lebih jauh: {o_id} (yang dipilih: {c_id})", f"farther: {o_en} (the chosen one: {c_en})"
    if o_lang != c_lang:
        return "tidak melayani bahasa utama klien", "does not serve the person's first language"
    s, c = other.service, chosen.service
    if o_load != c_load:
        return (f"lebih penuh: kursi tersedia {s.seats_available}/{s.seats_max} "
                f"(yang dipilih {c.seats_available}/{c.seats_max})",
                f"fuller: seats available {s.seats_available}/{s.seats_max} "
                f"(the chosen one {c.seats_available}/{c.seats_max})")
    return ("sama baiknya; giliran adil memilih layanan lain",
            "equally good; the fair rotation chose another service")


@dataclass
class Ranking:
    chosen: list[Verdict]  # eligible, best first
    excluded: list[Verdict]


def rank(f: ReferralFacts, services: list[ServiceView], declined: frozenset[str] = frozenset(),
         lapsed: frozenset[str] = frozenset(), proposed: frozenset[str] = frozenset()) -> Ranking:
    """Every service judged; never one that declined this referral (or let an earlier
    proposal of it lapse) again, nor one it is proposed to now (an escalation asks another)."""
    verdicts = []
    for s in sorted(services, key=lambda s: s.id):
        if s.id in proposed:
            v = Verdict(s, eligible=False).exclude("proposed")
        elif s.id in declined:
            v = Verdict(s, eligible=False).exclude("declined")
        elif s.id in lapsed:
            v = Verdict(s, eligible=False).exclude("lapsed")
        else:
            v = evaluate(f, s)
        verdicts.append(v)
    eligible = sorted((v for v in verdicts if v.eligible), key=lambda v: v.score, reverse=True)
    return Ranking(eligible, [v for v in verdicts if not v.eligible])
