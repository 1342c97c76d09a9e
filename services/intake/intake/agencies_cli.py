"""`rujukan agencies ...`: onboarding of referring agencies on intake's database
(DATABASE_URL and AGENCY_KEY_PEPPER as intake has them; e.g. `docker compose exec intake
rujukan agencies list`). Each action is recorded in intake's audit log.

    rujukan agencies create "UPTD PPA Kota Medan" [--id ppa-medan]   # prints the key, once
    rujukan agencies list
    rujukan agencies rotate ppa-medan                                  # a new key, once
    rujukan agencies revoke ppa-medan
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from intake.service_layer.agencies import AGENCY_ID, Agencies, AgencyExists, IssuedKey, NoSuchAgency
from intake.settings import Settings
from shared.audit import Audited
from shared.db import make_engine, sessions, upgrade

app = typer.Typer(help="Referring agencies and their API keys (intake).", no_args_is_help=True)
console = Console()
err = Console(stderr=True)
T = TypeVar("T")


def _settings() -> Settings:
    settings = Settings()
    if not settings.agency_key_pepper:
        err.print("[red]AGENCY_KEY_PEPPER is not set: give the one intake runs with[/red]")
        raise typer.Exit(2)
    return settings


def _run(action: Callable[[Agencies], Awaitable[T]]) -> T:
    settings = _settings()

    async def main() -> T:
        engine = make_engine(settings.database_url)
        try:
            return await action(Agencies(sessions(engine), settings.agency_key_pepper))
        finally:
            await engine.dispose()

    return asyncio.run(main())


def _audited(command: str, target: dict[str, str] | None = None) -> Audited:
    """The command, recorded in intake's audit log (the database migrated first, as intake
    would at start: the command line may run before the service ever did)."""
    from intake.bootstrap import MIGRATIONS

    settings = _settings()
    asyncio.run(upgrade(settings.database_url, MIGRATIONS))
    return Audited(f"agencies {command}", target, required=True, database_url=settings.database_url)


def _show_key(issued: IssuedKey, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"id": issued.agency.id, "name": issued.agency.name, "api_key": issued.api_key}))
        return
    console.print(f"agency [bold]{issued.agency.id}[/bold] ({issued.agency.name})")
    console.print(f"API key (shown once; give it to the agency): {issued.api_key}", soft_wrap=True)


def _check_id(agency_id: str) -> None:
    if not AGENCY_ID.fullmatch(agency_id):
        raise typer.BadParameter("lower-case letters, digits, . _ - (at most 64)", param_hint="ID")


JsonOption = Annotated[bool, typer.Option("--json")]


@app.command()
def create(name: str, agency_id: Annotated[str | None, typer.Option("--id")] = None,
           as_json: JsonOption = False) -> None:
    """Create an agency and print its API key (once)."""
    if agency_id is not None:
        _check_id(agency_id)
    with _audited("create", {"agency_id": agency_id or ""}) as audit:
        try:
            issued = _run(lambda agencies: agencies.create(name, agency_id))
        except AgencyExists:
            audit.status = 409
            err.print(f"[red]an agency '{agency_id}' exists[/red]")
            raise typer.Exit(1) from None
        audit.call.target = {"agency_id": issued.agency.id}
        audit.status = 201
    _show_key(issued, as_json)


@app.command("list")
def list_agencies(as_json: JsonOption = False) -> None:
    """Agencies, their state and the first characters of their key."""
    with _audited("list"):
        agencies = _run(lambda a: a.all())
    rows: list[dict[str, Any]] = [
        {"id": a.id, "name": a.name, "active": a.active, "key_hint": a.key_hint,
         "key_issued_at": a.key_issued_at.isoformat() if a.key_issued_at else None,
         "revoked_at": a.revoked_at.isoformat() if a.revoked_at else None} for a in agencies]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table("id", "name", "active", "key", "key issued", "revoked")
    for r in rows:
        table.add_row(r["id"], r["name"], "yes" if r["active"] else "no", (r["key_hint"] or "") + "…",
                      (r["key_issued_at"] or "")[:19], (r["revoked_at"] or "")[:19])
    console.print(table)


@app.command()
def rotate(agency_id: str, as_json: JsonOption = False) -> None:
    """Issue a new key (printed once); the old one stops working now."""
    _check_id(agency_id)
    with _audited("rotate", {"agency_id": agency_id}) as audit:
        try:
            issued = _run(lambda a: a.rotate(agency_id))
        except NoSuchAgency:
            audit.status = 404
            err.print(f"[red]no agency '{agency_id}'[/red]")
            raise typer.Exit(1) from None
    _show_key(issued, as_json)


@app.command()
def revoke(agency_id: str) -> None:
    """The agency's key stops working now (its referrals stay)."""
    _check_id(agency_id)
    with _audited("revoke", {"agency_id": agency_id}) as audit:
        try:
            _run(lambda a: a.revoke(agency_id))
        except NoSuchAgency:
            audit.status = 404
            err.print(f"[red]no agency '{agency_id}'[/red]")
            raise typer.Exit(1) from None
    console.print(f"revoked {agency_id}")
