"""`rujukan agencies ...`: onboarding of referring agencies on intake's database
(DATABASE_URL and AGENCY_KEY_PEPPER as intake has them; e.g. `docker compose exec intake
rujukan agencies list`). Each action is recorded in intake's audit log.

    rujukan agencies create "UPTD PPA Kota Medan" [--id ppa-medan]   # prints the key, once
    rujukan agencies list
    rujukan agencies rotate ppa-medan                                  # a new key, once
    rujukan agencies revoke ppa-medan
    rujukan agencies staff add ppa-medan ani@ppa-medan.go.id         # she signs in at /agency/signin
    rujukan agencies staff list ppa-medan
    rujukan agencies staff remove ppa-medan <staff id>                # her links and sessions end
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from intake.adapters.mail import Mail
from intake.service_layer.agencies import AGENCY_ID, Agencies, AgencyExists, IssuedKey, NoSuchAgency
from intake.service_layer.staff import NoSuchStaff, Staff, StaffExists
from intake.settings import Settings
from shared.audit import Audited
from shared.db import make_engine, sessions, upgrade

app = typer.Typer(help="Referring agencies and their API keys (intake).", no_args_is_help=True)
staff_app = typer.Typer(help="Agency staff who sign in to the agency pages with a mailed link.", no_args_is_help=True)
app.add_typer(staff_app, name="staff")
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


def _run_staff(action: Callable[[Staff], Awaitable[T]]) -> T:
    settings = _settings()

    async def main() -> T:
        engine = make_engine(settings.database_url)
        try:
            return await action(Staff(sessions(engine), Mail(settings.smtp_url, settings.mail_from),
                                      settings.public_url))
        finally:
            await engine.dispose()

    return asyncio.run(main())


@staff_app.command("add")
def staff_add(agency_id: str, email: str, as_json: JsonOption = False) -> None:
    """Register a member's work address: they ask for a sign-in link on /agency/signin."""
    _check_id(agency_id)
    with _audited("staff add", {"agency_id": agency_id}) as audit:
        try:
            member = _run_staff(lambda s: s.add(agency_id, email))
        except NoSuchAgency:
            audit.status = 404
            err.print(f"[red]no agency '{agency_id}'[/red]")
            raise typer.Exit(1) from None
        except StaffExists:
            audit.status = 409
            err.print("[red]this address is registered already[/red]")
            raise typer.Exit(1) from None
        audit.status = 201
    if as_json:
        typer.echo(member.model_dump_json())
        return
    console.print(f"{member.email} may sign in for {agency_id} (staff id {member.id})")


@staff_app.command("list")
def staff_list(agency_id: str, as_json: JsonOption = False) -> None:
    """The agency's registered staff."""
    _check_id(agency_id)
    with _audited("staff list", {"agency_id": agency_id}) as audit:
        try:
            members = _run_staff(lambda s: s.all(agency_id))
        except NoSuchAgency:
            audit.status = 404
            err.print(f"[red]no agency '{agency_id}'[/red]")
            raise typer.Exit(1) from None
    if as_json:
        typer.echo(members.model_dump_json(indent=2))
        return
    table = Table("id", "email", "registered")
    for m in members.items:
        table.add_row(m.id, m.email, m.created_at.isoformat()[:19])
    console.print(table)


@staff_app.command("remove")
def staff_remove(agency_id: str, staff_id: str) -> None:
    """Remove a member: their sign-in links and sessions stop working now."""
    _check_id(agency_id)
    with _audited("staff remove", {"agency_id": agency_id, "staff_id": staff_id}) as audit:
        try:
            _run_staff(lambda s: s.remove(agency_id, staff_id))
        except NoSuchStaff:
            audit.status = 404
            err.print(f"[red]no such member of '{agency_id}'[/red]")
            raise typer.Exit(1) from None
    console.print(f"removed {staff_id}")
