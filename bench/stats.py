"""Small numeric helpers shared by the stages."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted values; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def latency_summary(latencies_s: Sequence[float]) -> dict[str, float | int | None]:
    return {
        "count": len(latencies_s),
        "p50_ms": ms(percentile(latencies_s, 50)),
        "p99_ms": ms(percentile(latencies_s, 99)),
        "max_ms": ms(max(latencies_s)) if latencies_s else None,
    }
