"""`rujukan-directory` (or `python -m matching.cli`): import a directory into matching's
database directly, through the same service-layer function as POST /v1/directory/import.

    rujukan-directory import services.json                  # HSDS 3.0/3.1 JSON
    rujukan-directory import dinsos.csv --format csv        # the project's CSV
    rujukan-directory check dinsos.csv                      # what an import would say, no database

Exit status: 0 when every record was stored, 1 when some were rejected (the rest are stored),
2 when the file cannot be read at all.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from matching.adapters.hsds_csv import CsvHeaderError, count_csv_rows, parse_csv
from matching.adapters.hsds_json import count_records, parse_document
from matching.domain.record_issues import Parsed
from matching.service_layer.directory import ImportReport, import_parsed

app = typer.Typer(help="Matching's directory of services (HSDS): import and check files.", no_args_is_help=True,
                  add_completion=False)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
SHOWN = 40  # issues printed; the --report file has them all


class Format(StrEnum):
    hsds = "hsds"
    csv = "csv"


@app.callback()
def main() -> None:
    """Matching's directory of services (HSDS): import and check files."""


def _format(file: Path, given: Format | None) -> Format:
    if given:
        return given
    return Format.csv if file.suffix.lower() in (".csv", ".txt") else Format.hsds


def _read(file: Path, fmt: Format) -> tuple[Iterator[Parsed], int]:
    """The parsed records (lazily) and how many there are, or exit 2 with why not."""
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        err.print(f"[red]cannot read {file}:[/red] {e}")
        raise typer.Exit(2) from e
    if fmt is Format.csv:
        try:
            items = parse_csv(text)
            first = next(items, None)
        except CsvHeaderError as e:
            err.print(f"[red]{file}:[/red] {e}")
            raise typer.Exit(2) from e
        return _chain(first, items), count_csv_rows(text)
    try:
        doc = json.loads(text)
    except ValueError as e:
        err.print(f"[red]{file} is not valid JSON:[/red] {e}")
        raise typer.Exit(2) from e
    return parse_document(doc), count_records(doc)


def _chain(first: Parsed | None, rest: Iterator[Parsed]) -> Iterator[Parsed]:
    if first is not None:
        yield first
    yield from rest


def _where(r: dict[str, Any]) -> str:
    if "line" in r:
        return f"line {r['line']}"
    return f"record {r.get('pointer') or r['index']}"


def _print_report(report: ImportReport, *, warnings: bool, counts: bool = True) -> None:
    if counts:
        table = Table(title="Directory import", show_header=True)
        columns = ("created", "updated", "unchanged", "flagged", "rejected")
        for col in columns:
            table.add_column(col, justify="right")
        table.add_row(*(str(getattr(report, c)) for c in columns))
        out.print(table)
    shown = 0
    hidden = 0
    for r in report.records:
        for i in r.get("issues", []):
            if i["severity"] == "warning" and not warnings:
                continue
            if shown >= SHOWN:
                hidden += 1
                continue
            shown += 1
            colour = {"reject": "red", "flag": "yellow", "warning": "dim"}[i["severity"]]
            out.print(f"[{colour}]{i['severity']:<7}[/{colour}] {_where(r)} ({r.get('id') or 'no id'}): "
                      f"{i['field']}: {i['reason']}", highlight=False, soft_wrap=True)
    if hidden:
        out.print(f"... and {hidden} more (--report FILE writes them all)")


async def _import(file: Path, fmt: Format, database_url: str, batch: int, progress_bar: bool) -> ImportReport:
    from matching.bootstrap import MIGRATIONS
    from shared.db import make_engine, sessions, upgrade

    items, total = _read(file, fmt)
    await upgrade(database_url, MIGRATIONS)
    engine = make_engine(database_url)
    try:
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err, disable=not progress_bar, transient=False) as bar:
            task = bar.add_task(f"importing {file.name}", total=total)
            return await import_parsed(sessions(engine), items, batch=batch,
                                       progress=lambda n: bar.advance(task, n))
    finally:
        await engine.dispose()


@app.command("import")
def import_(
    file: Annotated[Path, typer.Argument(help="HSDS JSON (service_full, organization_full or a list) or CSV",
                                         exists=True, dir_okay=False, readable=True)],
    format: Annotated[Format | None, typer.Option("--format", "-f", help="default: from the file's extension")] = None,
    database_url: Annotated[str | None, typer.Option(
        "--database-url", envvar="DATABASE_URL", help="matching's database (default: the service's setting)",
        show_default=False)] = None,
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="services written per transaction")] = 500,
    report: Annotated[Path | None, typer.Option(help="write the full report (every record) as JSON here")] = None,
    warnings: Annotated[bool, typer.Option("--warnings/--no-warnings", help="also print warnings")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Create or update the services of FILE; unchanged ones are left alone."""
    if database_url is None:
        from matching.settings import Settings

        database_url = Settings().database_url
    result = asyncio.run(_import(file, _format(file, format), database_url, batch, progress))
    if report:
        report.write_text(json.dumps(result.as_dict(), indent=1, ensure_ascii=False), encoding="utf-8")
    _print_report(result, warnings=warnings)
    raise typer.Exit(1 if result.rejected else 0)


@app.command()
def check(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    format: Annotated[Format | None, typer.Option("--format", "-f")] = None,
    warnings: Annotated[bool, typer.Option("--warnings/--no-warnings")] = True,
) -> None:
    """Read FILE as an import would, without a database: what would be flagged or rejected."""
    items, _ = _read(file, _format(file, format))
    result = ImportReport()
    seen: set[str] = set()
    for p in items:
        if p.record is not None and p.record.id in seen:
            p.reject("id", "duplicate: given twice in this file")
        outcome = "rejected" if p.record is None else "ok"
        if p.record is None:
            result.rejected += 1
        else:
            seen.add(p.record.id)
            result.flagged += bool(p.flags)
        entry: dict[str, Any] = {"index": p.index, "id": p.service_id, "outcome": outcome,
                                 "issues": [i.as_dict() for i in p.issues]}
        if p.line is not None:
            entry["line"] = p.line
        if p.pointer:
            entry["pointer"] = p.pointer
        result.records.append(entry)
    out.print(f"{len(result.records)} records: {len(result.records) - result.rejected} can be stored, "
              f"{result.flagged} of them flagged (not matchable), {result.rejected} rejected")
    _print_report(result, warnings=warnings, counts=False)
    raise typer.Exit(1 if result.rejected else 0)


if __name__ == "__main__":
    app()
