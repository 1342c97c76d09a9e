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


def cpu_seconds(pid: int, with_children: bool = False) -> float:
    """User + system CPU seconds of a process, or of it and its direct children (a
    PostgreSQL postmaster's backends, which leave its process group), from /proc."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    if not with_children:
        return _proc_cpu(pid, tick)
    # Children that exited (a pooled connection closed, its backend gone) were added to the
    # parent's cutime/cstime when it reaped them: count those too.
    total = _proc_cpu(pid, tick, reaped_children=True) - _proc_cpu(pid, tick)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:  # itself, or ppid
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _proc_cpu(pid: int, tick: int, reaped_children: bool = False) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    own = int(fields[11]) + int(fields[12])  # utime, stime
    return (own + (int(fields[13]) + int(fields[14]) if reaped_children else 0)) / tick  # + cutime, cstime


def machine_cpu() -> tuple[float, float, float]:
    """(busy, steal, total) jiffies of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (values + [0] * 8)[:8]
    busy = user + nice + system + irq + softirq
    return float(busy), float(steal), float(busy + idle + iowait + steal)


def machine_load(before: tuple[float, float, float], after: tuple[float, float, float]) -> dict[str, float]:
    """How busy all the machine's CPUs were between two machine_cpu() readings (everyone's
    work, the bench's and other people's), and how much time the hypervisor took (steal)."""
    total = after[2] - before[2]
    if total <= 0:
        return {"busy_pct": 0.0, "steal_pct": 0.0}
    return {"busy_pct": round(100 * (after[0] - before[0]) / total, 1),
            "steal_pct": round(100 * (after[1] - before[1]) / total, 1)}
