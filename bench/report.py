"""The one table: each figure, the reference it is compared with (measured in the same run),
their ratio, and the issue's target where there is one.

Which reference:
- a throughput is compared with the relay's drain throughput;
- a latency at a fixed rate with the relay's latency (same percentile) at that rate;
- intake's HTTP latency with the relay's at 500/s, the middle rate;
- a decision's latency with the relay's p50 at 100/s (one message through two hops, unloaded).
"""

from __future__ import annotations

from typing import Any

PIPELINE_SHARE_TARGET = 0.30
PIPELINE_P99_TARGET_MS = 25.0
PIPELINE_P99_TARGET_RATE = "500"
INTAKE_TARGET_PER_S = 1500.0
MATCHING_P99_TARGET_MS = 2.0
MATCHING_TARGET_SIZE = "100000"


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _ratio(value: Any, reference: Any) -> float | None:
    if not isinstance(value, int | float) or not isinstance(reference, int | float) or not reference:
        return None
    return round(value / reference, 3)


def _row(figure: str, value: Any, unit: str, reference: Any = None, target: str = "", met: bool | None = None,
         note: str = "") -> dict[str, Any]:
    return {"figure": figure, "value": value, "unit": unit, "reference": reference,
            "ratio": _ratio(value, reference), "target": target, "met": met, "note": note}


def rows(r: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    ref_drain = _get(r, "reference", "drain", "throughput_per_s")
    ref_paced = _get(r, "reference", "paced") or {}
    if ref_drain is not None:
        out.append(_row("reference relay: drain (2 hops)", ref_drain, "msg/s", ref_drain))
        for rate, p in ref_paced.items():
            out.append(_row(f"reference relay: p50 at {rate}/s", p.get("p50_ms"), "ms", p.get("p50_ms")))
            out.append(_row(f"reference relay: p99 at {rate}/s", p.get("p99_ms"), "ms", p.get("p99_ms")))

    pipe = r.get("pipeline") or {}
    if "drain" in pipe:
        value = pipe["drain"]["throughput_per_s"]
        share = _ratio(value, ref_drain)
        out.append(_row("pipeline: drain throughput", value, "referrals/s", ref_drain,
                        f">= {PIPELINE_SHARE_TARGET:.0%} of reference",
                        None if share is None else share >= PIPELINE_SHARE_TARGET,
                        f"{pipe['drain']['completed']} referrals drained; the stage sent "
                        f"{pipe.get('referrals_submitted', '?')} referrals in all and the SMTP sink accepted "
                        f"{pipe.get('mails_received', '?')} mails"))
        for rate, p in (pipe.get("paced") or {}).items():
            ref = ref_paced.get(rate, {})
            note = "" if p.get("sustained") else (
                f"not sustained: {p.get('achieved_per_s')}/s came out"
                + (f"; sending stopped after {p.get('sent')} of {p.get('planned')}"
                   if p.get("sent") != p.get("planned") else ""))
            out.append(_row(f"pipeline: p50 at {rate}/s", p.get("p50_ms"), "ms", ref.get("p50_ms"), note=note))
            is_target = rate == PIPELINE_P99_TARGET_RATE
            met = None
            if is_target and p.get("p99_ms") is not None:
                met = bool(p.get("sustained")) and p["p99_ms"] <= PIPELINE_P99_TARGET_MS
            out.append(_row(f"pipeline: p99 at {rate}/s", p.get("p99_ms"), "ms", ref.get("p99_ms"),
                            f"<= {PIPELINE_P99_TARGET_MS:g} ms" if is_target else "", met, note))
        half = pipe.get("paced_half_capacity")
        if half:
            ref = ref_paced.get("100", {})
            note = f"{half.get('sent')} referrals" + ("" if half.get("sustained") else "; not sustained")
            for q in ("p50", "p99"):
                out.append(_row(f"pipeline: {q} at {half['rate_per_s']:g}/s (half its capacity)",
                                half.get(f"{q}_ms"), "ms", ref.get(f"{q}_ms"), note=note + "; reference at 100/s"))
    elif "error" in pipe:
        out.append(_row("pipeline", None, "", note=pipe["error"]))

    ref_500 = _get(ref_paced, "500", "p99_ms")
    for key, it in sorted((r.get("intake") or {}).items()):
        label = key.replace("workers_", "")
        if "error" in it:
            out.append(_row(f"intake ({label} workers)", None, "", note=it["error"]))
            continue
        ok = it.get("other_status", 0) == 0 and it.get("all_accepted_committed")
        out.append(_row(f"intake HTTP, {label} worker(s): accepted", it["accepted_per_s"], "referrals/s", ref_drain,
                        f">= {INTAKE_TARGET_PER_S:,.0f}/s", it["accepted_per_s"] >= INTAKE_TARGET_PER_S,
                        "" if ok else f"{it.get('other_status')} non-202, rows committed {it.get('rows_committed')}"))
        out.append(_row(f"intake HTTP, {label} worker(s): p99", it["p99_ms"], "ms", ref_500,
                        note=f"{it['connections']} connections (closed loop)"))

    ref_p50_100 = _get(ref_paced, "100", "p50_ms")
    sizes = _get(r, "matching", "sizes") or {}
    for size, m in sizes.items():
        is_target = size == MATCHING_TARGET_SIZE
        out.append(_row(f"matching: decision p50 at {int(size):,} services", m.get("p50_ms"), "ms", ref_p50_100,
                        note=f"reads {m.get('candidates_read_mean')} candidates on average"))
        out.append(_row(f"matching: decision p99 at {int(size):,} services", m.get("p99_ms"), "ms", ref_p50_100,
                        f"<= {MATCHING_P99_TARGET_MS:g} ms" if is_target else "",
                        (m.get("p99_ms") or 1e9) <= MATCHING_P99_TARGET_MS if is_target else None))
    if _get(r, "matching", "error"):
        out.append(_row("matching", None, "", note=r["matching"]["error"]))
    return out


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"target": row["target"], "figure": row["figure"], "value": row["value"], "unit": row["unit"],
             "ratio_to_reference": row["ratio"], "met": row["met"]}
            for row in r.get("table") or rows(r) if row["target"]]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def print_table(r: dict[str, Any]) -> None:
    m = r.get("machine") or {}
    pg, rd = m.get("postgresql") or {}, m.get("redis") or {}
    print()
    print(f"Rujukan bench ({r.get('mode')}, commit {r.get('commit')}, {r.get('elapsed_s')} s) on {m.get('host')}: "
          f"{m.get('cpus')} CPUs ({m.get('cpu_model')}), load average {m.get('load_average_at_start')} at start, "
          f"{m.get('load_average_at_end')} at end")
    print(f"Against PostgreSQL {pg.get('version', '?').split(' ')[0]} as in compose (fsync={pg.get('fsync')}, "
          f"synchronous_commit={pg.get('synchronous_commit')}, full_page_writes={pg.get('full_page_writes')}) and "
          f"{rd.get('version', 'redis').split(' sha')[0]} (appendonly, appendfsync=everysec), both the bench's own.")
    stages = [(name, r[name].get("machine_cpu")) for name in ("reference", "pipeline", "matching")
              if isinstance(r.get(name), dict)]
    stages += [(f"intake {k.replace('workers_', '')}w", v.get("machine_cpu"))
               for k, v in sorted((r.get("intake") or {}).items())]
    busy = ", ".join(f"{n} {c['busy_pct']:.0f}% (steal {c['steal_pct']:.0f}%)" for n, c in stages if c)
    if busy:
        print(f"Machine CPU busy during each stage, everyone's work included: {busy}")
    print("Ratio = figure / reference measured in the same run (see bench/README.md).")
    header = ("figure", "value", "unit", "reference", "ratio", "target", "met")
    table = [header] + [(row["figure"], _fmt(row["value"]), row["unit"], _fmt(row["reference"]), _fmt(row["ratio"]),
                         row["target"], {True: "yes", False: "NO", None: ""}[row["met"]])
                        for row in r.get("table", [])]
    widths = [max(len(str(t[i])) for t in table) for i in range(len(header))]
    for i, t in enumerate(table):
        print("  ".join(str(c).rjust(w) if 0 < j < 5 else str(c).ljust(w) for j, (c, w) in enumerate(zip(t, widths,
                                                                                                       strict=True))))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    notes = [f"  {row['figure']}: {row['note']}" for row in r.get("table", []) if row["note"]]
    if notes:
        print("Notes:")
        print("\n".join(notes))
    print()
