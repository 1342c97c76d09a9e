"""A per-process, in-memory index of the directory's static facts, so that a decision at
100,000 services judges its candidates in memory and reads from the database only what
must be exact and current: the seat counts of the few candidates that can win.

Correctness across replicas: every directory write moves `directory_version` in its own
transaction (directory.write_records); each decision reads that number (one indexed row)
and rebuilds this replica's index when it differs, from the decision's own transaction.
Nothing here assumes a single matching process: each has its own index, and none trusts a
cached seat count (seats are read live here, and taken by seats.take's conditional UPDATE).

The answer is the one `shortlist` + `rank` give today, not an approximation: a candidate is
judged by `domain.decision.evaluate` on its static facts; the eligible ones are grouped by
the part of the score that does not depend on seats (support types covered, nearness,
language fit) and read tier by tier, best first, until at least MAX_CANDIDATES_LISTED have
a free seat. Everything ranked below those tiers ranks below all of them, and the audit
list shows only that many, so the decision and its candidate list are the same. When fewer
can be found the caller falls back to the exact database shortlist (small directories, a
waitlist), so the fast path never has to reason about who is full.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from matching.adapters.orm import DirectoryVersion, Service, ServiceArea, ServiceCategory
from matching.domain.decision import ReferralFacts, ServiceView, evaluate
from shared import regions
from shared.vocab import PROFESSIONAL_KINDS, Modality

# How many eligible candidates with a free seat make the fast answer exact (the decision's
# audit list shows this many; see services.MAX_CANDIDATES_LISTED).
ENOUGH = 25
# Seats are read for at least this many statically eligible candidates per round trip.
READ_AT_LEAST = 2 * ENOUGH


@dataclass(eq=False)  # identity hash: one object per distinct profile, a cheap memo key
class Profile:
    """The static facts `evaluate` weighs, shared by many services."""

    resource_kind: str
    online: bool
    support_types: frozenset[str]
    languages: frozenset[str]
    policies: frozenset[str]
    minimum_age: int | None
    maximum_age: int | None
    # What else `evaluate` asks of these facts, for any referral: whether it is a professional
    # kind, crisis-capable, women only, and its age limits.
    coarse: tuple[object, ...] = ()

    def __post_init__(self) -> None:
        self.coarse = (self.resource_kind in PROFESSIONAL_KINDS, "crisis_capable" in self.policies,
                       "women_only" in self.policies, self.minimum_age, self.maximum_age)


@dataclass(frozen=True)
class Entry:
    id: str
    profile: Profile


@dataclass
class Snapshot:
    version: int
    active: dict[str, Entry]
    # (category, region code) -> services of the category with that area (active or not,
    # as the database shortlist's `covering`).
    covering: dict[tuple[str, str], list[str]]
    online: dict[str, list[Entry]]  # category -> its active online services


def _view(e: Entry, category: str, areas: tuple[str, ...], seats_available: int, seats_max: int) -> ServiceView:
    p = e.profile
    return ServiceView(
        id=e.id, name="", organization_name="", resource_kind=p.resource_kind, active=True, online=p.online,
        pmks=frozenset({category}), support_types=p.support_types, areas=areas, languages=p.languages,
        policies=p.policies, minimum_age=p.minimum_age, maximum_age=p.maximum_age,
        seats_available=seats_available, seats_max=seats_max)


async def _build(s: AsyncSession, version: int) -> Snapshot:
    profiles: dict[tuple[object, ...], Profile] = {}
    active: dict[str, Entry] = {}
    for r in (await s.execute(select(
            Service.id, Service.resource_kind, Service.online, Service.support_types, Service.languages,
            Service.policies, Service.minimum_age, Service.maximum_age).where(Service.active))).all():
        key = (r.resource_kind, bool(r.online), frozenset(r.support_types or ()), frozenset(r.languages or ()),
               frozenset(r.policies or ()), r.minimum_age, r.maximum_age)
        p = profiles.get(key)
        if p is None:
            p = profiles[key] = Profile(*key)
        active[r.id] = Entry(r.id, p)
    categories: dict[str, list[str]] = defaultdict(list)
    online: dict[str, list[Entry]] = defaultdict(list)
    for sid, code in (await s.execute(select(ServiceCategory.service_id, ServiceCategory.pmks_code))).all():
        categories[sid].append(code)
        e = active.get(sid)
        if e is not None and e.profile.online:
            online[code].append(e)
    covering: dict[tuple[str, str], list[str]] = defaultdict(list)
    for sid, area in (await s.execute(select(ServiceArea.service_id, ServiceArea.region_code))).all():
        for code in categories.get(sid, ()):
            covering[(code, area)].append(sid)
    return Snapshot(version, active, dict(covering), dict(online))


@dataclass
class DirectoryIndex:
    snapshot: Snapshot | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def current(self, s: AsyncSession) -> Snapshot | None:
        """The index as of the directory version this transaction sees (rebuilt if stale)."""
        version = await s.scalar(select(DirectoryVersion.version).where(DirectoryVersion.id == 1))
        if version is None:
            return None  # a database without the version row: decide from the database
        snap = self.snapshot
        if snap is not None and snap.version == version:
            return snap
        async with self._lock:
            snap = self.snapshot
            if snap is None or snap.version != version:
                # The version is read before the rows: the index holds at least that
                # version's directory, never less.
                snap = self.snapshot = await _build(s, version)
        return snap

    async def shortlist(self, s: AsyncSession, f: ReferralFacts, declined: frozenset[str],
                        lapsed: frozenset[str]) -> list[ServiceView] | None:
        """The candidates that decide the outcome, or None when the exact database
        shortlist must answer (stale-free index unavailable, or too few with a seat)."""
        snap = await self.current(s)
        if snap is None:
            return None
        cat = f.pmks_category
        covering: dict[str, list[str]] = {}
        for area in regions.ancestors(f.region_code):
            for sid in snap.covering.get((cat, area), ()):
                covering.setdefault(sid, []).append(area)

        # (static score prefix) -> [(entry, areas)] of the statically eligible.
        tiers: dict[tuple[float, ...], list[tuple[Entry, tuple[str, ...]]]] = defaultdict(list)
        passed_by = declined | lapsed
        for sid, hits in covering.items():
            entry = snap.active.get(sid)
            if entry is None or sid in passed_by:
                continue
            mine = tuple(sorted(hits))
            v = evaluate(f, _view(entry, cat, mine, 1, 1))
            if v.eligible:
                tiers[v.score[:3]].append((entry, mine))
        if f.modality != Modality.in_person:
            # An online service outside the person's area is judged, for this referral, by
            # its coarse facts, the languages it shares and the needs it covers: `evaluate`
            # runs once per distinct such key, not once per service.
            needs, langs = frozenset(f.needs), frozenset(f.languages)
            by_profile: dict[Profile, tuple[float, ...] | None] = {}
            by_key: dict[tuple[object, ...], tuple[float, ...] | None] = {}
            for e in snap.online.get(cat, ()):
                if e.id in covering or e.id in passed_by:
                    continue
                p = e.profile
                prefix = by_profile.get(p, ())
                if prefix == ():
                    key = (p.coarse, p.languages & langs, p.support_types & needs)
                    prefix = by_key.get(key, ())
                    if prefix == ():
                        v = evaluate(f, _view(e, cat, (), 1, 1))
                        prefix = by_key[key] = v.score[:3] if v.eligible else None
                    by_profile[p] = prefix
                if prefix is not None:
                    tiers[prefix].append((e, ()))

        views: list[ServiceView] = []
        pending: list[tuple[Entry, tuple[str, ...]]] = []
        order = sorted(tiers, reverse=True)
        for i, prefix in enumerate(order):
            pending += tiers[prefix]
            if len(pending) < READ_AT_LEAST and i + 1 < len(order):
                continue  # read a few tiers in one round trip
            seats = dict((r.id, (r.seats_available, r.seats_max)) for r in (await s.execute(
                select(Service.id, Service.seats_available, Service.seats_max)
                .where(Service.id.in_([e.id for e, _ in pending]), Service.active))).all())
            for e, own in pending:
                free, most = seats.get(e.id, (0, 0))
                if free > 0:
                    views.append(_view(e, cat, own, free, most))
            pending = []
            if len(views) >= ENOUGH:
                return views  # whole tiers only: everything below ranks below all of these
        return None
