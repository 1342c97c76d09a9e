"""The platform's commands of `rujukan`, the operator's command line (REDIS_URL and
DATABASE_URL from the environment); intake.operator_cli adds intake's and is the script.

    rujukan dead-letters list [--group notify]
    rujukan dead-letters show ID [--group notify]
    rujukan dead-letters replay ID [--group notify]    # its own event, once it parses
    rujukan dead-letters discard ID --group notify
    rujukan streams          # lengths, pending, lag, dead letters, counters
    rujukan trim             # trim now what every group acknowledged
    rujukan audit [--since 2026-01-01] [--operator NAME]   # the operators' audit log
    rujukan operators key NAME ROLE                        # a new operator key and its entry

Every action is recorded in the audit log of the service whose database DATABASE_URL
names (run it where that service runs, e.g. `docker compose exec matching rujukan ...`),
as RUJUKAN_OPERATOR (else the user running it); an action that changes something is
refused without DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from shared.audit import Audited
from shared.events import BadEvent
from shared.operators import Role, entry_for, new_key
from shared.ops import is_dead_letter_id, letter_view, replay_as_it_was
from shared.settings import ServiceSettings
from shared.streams.dead_letters import dead_letters, discard_dead_letter, find_dead_letter
from shared.streams.janitor import trim_streams
from shared.streams.report import stream_report
from shared.streams.topology import TOPOLOGY, connect

app = typer.Typer(help="Rujukan operator tools.", no_args_is_help=True)
letters_app = typer.Typer(help="Entries a consumer could not process.", no_args_is_help=True)
operators_app = typer.Typer(help="Operators' keys.", no_args_is_help=True)
app.add_typer(letters_app, name="dead-letters")
app.add_typer(operators_app, name="operators")
console = Console()
T = TypeVar("T")

GroupOption = Annotated[str | None, typer.Option("--group", "-g", help=f"one of: {', '.join(TOPOLOGY)}")]


def _run(action: Callable[[Any], Awaitable[T]]) -> T:
    async def main() -> T:
        redis = connect(ServiceSettings().redis_url)
        try:
            return await action(redis)
        finally:
            await redis.aclose()

    return asyncio.run(main())


def _check_group(group: str | None) -> None:
    if group is not None and group not in TOPOLOGY:
        raise typer.BadParameter(f"unknown group; one of {', '.join(TOPOLOGY)}", param_hint="--group")


def _check_id(dead_id: str) -> None:
    if not is_dead_letter_id(dead_id):
        raise typer.BadParameter("a dead letter's id looks like 1700000000000-0", param_hint="ID")


def _find(dead_id: str, group: str | None, audit: Audited) -> dict[str, Any]:
    try:
        return _run(lambda r: find_dead_letter(r, dead_id, group))
    except KeyError:
        audit.status = 404
        console.print(f"[red]no dead letter {dead_id}[/red]")
        raise typer.Exit(1) from None
    except LookupError as e:
        audit.status = 409
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None


@letters_app.command("list")
def list_letters(group: GroupOption = None, limit: int = 100,
                 as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List dead letters, oldest first."""
    _check_group(group)
    with Audited("dead-letters list", {"group": group or ""}, required=False):
        _list_letters(group, limit, as_json)


def _list_letters(group: str | None, limit: int, as_json: bool) -> None:

    async def fetch(redis: Any) -> list[dict[str, Any]]:
        out = []
        for g in [group] if group else list(TOPOLOGY):
            out += [letter_view({**d, "dead_letter_group": g}) for d in await dead_letters(redis, g, limit)]
        return out

    items = _run(fetch)
    if as_json:
        typer.echo(json.dumps(items, indent=2, default=str))
        return
    table = Table("id", "group", "type", "deliveries", "error", "at")
    for d in items:
        table.add_row(d["id"], d["group"], d["type"] or "?", str(d["deliveries"]), (d["error"] or "")[:80],
                      datetime.fromtimestamp(d["at"], UTC).strftime("%Y-%m-%d %H:%M:%S"))
    console.print(table)
    console.print(f"{len(items)} dead letter(s)")


@letters_app.command("show")
def show(dead_id: str, group: GroupOption = None) -> None:
    """Show one dead letter: why it failed, where it came from, the event as it was."""
    _check_group(group)
    _check_id(dead_id)
    with Audited("dead-letters show", {"dead_id": dead_id}, required=False) as audit:
        typer.echo(json.dumps(letter_view(_find(dead_id, group, audit)), indent=2, default=str))


@letters_app.command("replay")
def replay(dead_id: str, group: GroupOption = None) -> None:
    """Put a dead letter's own event back to its group, once it parses (the fault was
    elsewhere and is fixed). One that does not parse would only fail again: discard it."""
    _check_group(group)
    _check_id(dead_id)
    with Audited("dead-letters replay", {"dead_id": dead_id}, required=True) as audit:
        try:
            replayed_to, new_id = _run(lambda r: replay_as_it_was(r, dead_id, group))
        except LookupError as e:
            audit.status = 404 if isinstance(e, KeyError) else 409
            console.print(f"[red]no dead letter {dead_id}[/red]" if isinstance(e, KeyError) else f"[red]{e}[/red]")
            raise typer.Exit(1) from None
        except BadEvent as e:
            audit.status = 422
            console.print(f"[red]its event does not parse: {e}[/red]\nreplayed, it would only fail again: "
                          "discard it (rujukan dead-letters discard)")
            raise typer.Exit(2) from None
        console.print(f"replayed {dead_id} to {replayed_to} as {new_id}")


@letters_app.command("discard")
def discard(dead_id: str, group: Annotated[str, typer.Option("--group", "-g")]) -> None:
    """Delete a dead letter for good (after looking at it)."""
    _check_group(group)
    _check_id(dead_id)
    with Audited("dead-letters discard", {"dead_id": dead_id, "group": group}, required=True) as audit:
        try:
            _run(lambda r: discard_dead_letter(r, group, dead_id))
        except KeyError:
            audit.status = 404
            console.print(f"[red]no dead letter {dead_id} in {group}[/red]")
            raise typer.Exit(1) from None
        console.print(f"discarded {dead_id}")


@app.command()
def streams(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Streams, consumer groups, pending entries, lag, dead letters and counters."""
    with Audited("streams", required=False):
        report = _run(stream_report)
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    table = Table("stream", "length", "group", "pending", "lag", "consumers")
    for s in report["streams"]:
        for g in s["groups"] or [{"name": "-", "pending": "", "lag": "", "consumers": ""}]:
            table.add_row(s["stream"], str(s["length"]), g["name"], str(g["pending"]), str(g["lag"]),
                          str(g["consumers"]))
        for missing in s["missing_groups"]:
            table.add_row(s["stream"], str(s["length"]), f"[red]{missing} (missing)[/red]", "", "", "")
    console.print(table)
    groups = Table("group", "dead letters", "counters")
    for g in report["groups"]:
        groups.add_row(g["group"], str(g["dead_letters"]), " ".join(f"{k}={v}" for k, v in g["counters"].items()))
    console.print(groups)


@app.command()
def trim() -> None:
    """Trim now, below the first entry some group still needs."""
    with Audited("trim", required=True):
        trimmed = _run(trim_streams)
    for stream, n in trimmed.items():
        console.print(f"{stream}: {n} trimmed")


@app.command("audit")
def audit_log(
    since: Annotated[datetime | None, typer.Option(help="entries at or after this time (UTC unless given)")] = None,
    operator: Annotated[str | None, typer.Option(help="one operator's name")] = None,
    limit: int = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The operators' audit log of the service whose database DATABASE_URL names."""
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    with Audited("audit", {"operator": operator or ""}, required=True) as audited:
        assert audited.log is not None
        rows = asyncio.run(audited.log.entries(since, operator, limit))
    items = [{"id": r.id, "at": r.at.isoformat(), "operator": r.operator, "role": r.role, "method": r.method,
              "action": r.action, "target": r.target, "status": r.status, "client": r.client} for r in rows]
    if as_json:
        typer.echo(json.dumps(items, indent=2))
        return
    table = Table("at", "operator", "role", "action", "target", "status", "from")
    for i in items:
        table.add_row(i["at"][:19], i["operator"], i["role"], f"{i['method']} {i['action']}",
                      " ".join(f"{k}={v}" for k, v in i["target"].items()), str(i["status"]), i["client"])
    console.print(table)


@operators_app.command("key")
def operator_key(name: str, role: Role) -> None:
    """Make a key for an operator: give the key to the operator, and add the entry to
    OPERATOR_KEYS of every service (which keeps only its SHA-256)."""
    key = new_key()
    typer.echo(f"key (give it to {name}; shown once): {key}")
    typer.echo(f"OPERATOR_KEYS entry: {entry_for(name, role, key)}")

