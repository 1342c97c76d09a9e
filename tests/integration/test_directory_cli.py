"""`rujukan-directory` against a real database (SQLite and PostgreSQL), and the importer's
batching: the number of SQL statements of an import grows with the batches, not the services."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select
from typer.testing import CliRunner

from bench.directory_import import directory_csv
from matching.adapters.hsds_csv import parse_csv
from matching.adapters.orm import Service
from matching.bootstrap import MIGRATIONS
from matching.cli import app
from matching.service_layer.directory import import_parsed
from shared.db import make_engine, sessions, upgrade

DATA = Path(__file__).parents[1] / "data" / "hsds"
EXAMPLE_CSV = Path(__file__).parents[2] / "services" / "matching" / "matching" / "seed" / "example_directory.csv"
runner = CliRunner()


def services_in(url: str) -> dict[str, tuple[bool, int]]:
    async def read() -> dict[str, tuple[bool, int]]:
        engine = make_engine(url)
        try:
            async with sessions(engine)() as s:
                rows = await s.execute(select(Service.id, Service.active, Service.seats_available))
                return {r.id: (r.active, r.seats_available) for r in rows}
        finally:
            await engine.dispose()

    return asyncio.run(read())


def run(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_cli_imports_csv_and_hsds_and_reimport_changes_nothing(database_url: str, tmp_path: Path) -> None:
    r = run("import", str(EXAMPLE_CSV), "--database-url", database_url)
    assert r.exit_code == 0, r.output
    assert "importing example_directory.csv" in r.output  # the progress bar
    assert services_in(database_url) == {
        "svc-uptd-ppa-medan": (True, 6), "svc-kds-odgj-sleman": (True, 8), "svc-psikolog-daring-jatim": (True, 3),
        "svc-prse-kupang-2": (True, 10)}

    report = tmp_path / "report.json"
    r = run("import", str(EXAMPLE_CSV), "--database-url", database_url, "--report", str(report), "--no-progress")
    assert r.exit_code == 0, r.output
    counts = json.loads(report.read_text())
    assert (counts["unchanged"], counts["created"], counts["updated"]) == (4, 0, 0)

    for name in ("service_full.hsds-3.0.json", "organization_full.hsds-3.0.json", "service_full.hsds-3.1-dev.json"):
        r = run("import", str(DATA / name), "--database-url", database_url, "--no-progress")
        assert r.exit_code == 0, r.output
        assert "flag" in r.output
        assert "no taxonomy term of taxonomy 'pmks'" in r.output
    assert "capacities[0].available: greater than maximum (12 > 10)" in r.output
    assert services_in(database_url)["ac148810-d857-441c-9679-408f346de14b"] == (False, 0)


def test_cli_exit_status_says_whether_rows_were_rejected_or_the_file_unreadable(
    database_url: str, tmp_path: Path
) -> None:
    bad_row = tmp_path / "dinsos.csv"
    bad_row.write_text("id,name,organization_name,seats_available,seats_max\n"
                       "s1,Satu,Dinsos,1,2\n"
                       "s2,Dua,Dinsos,banyak,2\n", encoding="utf-8")
    r = run("import", str(bad_row), "--database-url", database_url, "--no-progress")
    assert r.exit_code == 1, r.output
    assert "line 3 (s2): seats_available: must be a whole number, not 'banyak'" in r.output
    assert set(services_in(database_url)) == {"s1"}  # the good row is stored (flagged)

    no_header = tmp_path / "nama.csv"
    no_header.write_text("nama,alamat\nSatu,Jl. X\n", encoding="utf-8")
    r = run("import", str(no_header), "--database-url", database_url)
    assert r.exit_code == 2
    assert "missing column(s) id, name, organization_name" in r.output

    not_json = tmp_path / "services.json"
    not_json.write_text("{", encoding="utf-8")
    assert run("import", str(not_json), "--database-url", database_url).exit_code == 2
    r = run("import", str(not_json), "--format", "csv", "--database-url", database_url)
    assert r.exit_code == 2


def test_cli_check_reads_without_a_database(tmp_path: Path) -> None:
    f = tmp_path / "d.csv"
    f.write_text(directory_csv(3) + "svc-000001,Lagi,Dinsos,,,,,,,,,,\n", encoding="utf-8")
    r = run("check", str(f))
    assert r.exit_code == 1, r.output
    assert "4 records: 3 can be stored, 0 of them flagged (not matchable), 1 rejected" in r.output
    assert "duplicate" in r.output


def test_a_large_import_is_batched_and_its_reimport_is_cheap(database_url: str) -> None:
    """Without timing anything: an import of 1,200 services takes a few dozen statements
    (a fixed number per batch of 500), and importing it again reads only the hashes."""
    text = directory_csv(1200)

    async def go() -> tuple[Any, ...]:
        await upgrade(database_url, MIGRATIONS)
        engine = make_engine(database_url)
        statements: list[str] = []
        event.listen(engine.sync_engine, "before_cursor_execute",
                     lambda _c, _cur, sql, *_: statements.append(sql))
        try:
            first = await import_parsed(sessions(engine), parse_csv(text), batch=500)
            n_first = len(statements)
            statements.clear()
            again = await import_parsed(sessions(engine), parse_csv(text), batch=500)
            n_again = len(statements)
            statements.clear()
            more = await import_parsed(sessions(engine), parse_csv(directory_csv(1200, seats=7)), batch=500)
            n_more = len(statements)
            async with sessions(engine)() as s:
                total = await s.scalar(select(func.count()).select_from(Service).where(Service.active.is_(True)))
            return first, n_first, again, n_again, more, n_more, total
        finally:
            await engine.dispose()

    first, n_first, again, n_again, more, n_more, total = asyncio.run(go())
    assert (first.created, first.rejected, first.flagged) == (1200, 0, 0)
    assert total == 1200
    assert (again.unchanged, again.created, again.updated) == (1200, 0, 0)
    assert (more.updated, more.unchanged) == (1200, 0)
    batches = 3
    assert n_first <= batches * 25, n_first  # not one statement (or more) per service
    assert n_again <= batches * 4, n_again  # the write lock, the hashes, commit
    assert n_more <= batches * 30, n_more
