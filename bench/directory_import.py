"""Directory import at 1k and 10k services, on SQLite and on the bench's own PostgreSQL
(durable, as compose runs it): the first import, the same file again (unchanged), and a
file where every service changed (new capacity).

    uv run python -m bench.directory_import [--sizes 1000,10000] [--json bench/results/directory_import.json]

The reference, measured in the same run, is parsing the file alone (no database): the
figures are given as seconds and as a ratio to it, so that they compare across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from matching.adapters.hsds_csv import parse_csv
from matching.bootstrap import MIGRATIONS
from matching.service_layer.directory import import_parsed
from shared.db import make_engine, sessions, upgrade


def directory_csv(n: int, *, seats: int = 5, start: int = 0) -> str:
    """A Dinas Sosial spreadsheet of n services spread over provinces and categories."""
    from shared.pmks import categories
    from shared.regions import PROVINCES

    codes, provinces = sorted(categories()), sorted(PROVINCES)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "name", "organization_name", "resource_kind", "pmks", "support_types", "areas", "online",
                "languages", "seats_available", "seats_max", "contact_email", "schedule"])
    for i in range(start, start + n):
        prov = provinces[i % len(provinces)]
        w.writerow([f"svc-{i:06d}", f"Layanan {i}", f"Dinas Sosial {prov}", "social_worker" if i % 3 else "self_help",
                    f"{codes[i % 26]};{codes[(i * 7) % 26]}", "emotional;instrumental", f"{prov}.{i % 40 + 1:02d}",
                    "ya" if i % 10 == 0 else "tidak", "id;jv", seats, 10, f"layanan{i}@dinsos.example",
                    "Senin-Jumat 08.00-16.00"])
    return buf.getvalue()


async def _import(url: str, text: str) -> tuple[float, dict[str, Any]]:
    engine = make_engine(url)
    try:
        t0 = time.perf_counter()
        report = await import_parsed(sessions(engine), parse_csv(text))
        return time.perf_counter() - t0, {k: v for k, v in report.as_dict().items() if k != "records"}
    finally:
        await engine.dispose()


async def stage(name: str, url: str, size: int) -> dict[str, Any]:
    await upgrade(url, MIGRATIONS)
    text, changed = directory_csv(size), directory_csv(size, seats=7)
    t0 = time.perf_counter()
    parsed = sum(1 for _ in parse_csv(text))
    reference = time.perf_counter() - t0
    assert parsed == size
    out: dict[str, Any] = {"database": name, "services": size, "parse_only_s": round(reference, 3)}
    for label, body in (("first", text), ("again", text), ("all_changed", changed)):
        seconds, counts = await _import(url, body)
        out[label] = {"seconds": round(seconds, 3), "ratio_to_parse": round(seconds / reference, 2),
                      "services_per_s": round(size / seconds), **counts}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    from tests.servers import PostgresProcess

    results = []
    pg = PostgresProcess(durable=True).start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for size in sizes:
                sqlite_url = f"sqlite+aiosqlite:///{tmp}/dir-{size}.db"
                pg.drop_database(f"dir_{size}")
                pg_url = pg.create_database(f"dir_{size}")
                for name, url in (("sqlite", sqlite_url), ("postgresql", pg_url)):
                    r = asyncio.run(stage(name, url, size))
                    results.append(r)
                    print(f"{name:>10} {size:>6} services: parse {r['parse_only_s']:.2f}s | "
                          + " | ".join(f"{k} {r[k]['seconds']:.2f}s (x{r[k]['ratio_to_parse']})"
                                       for k in ("first", "again", "all_changed")), flush=True)
    finally:
        pg.cleanup()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
