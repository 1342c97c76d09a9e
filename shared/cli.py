"""`rujukan`: the operator's command line (REDIS_URL from the environment).

    rujukan dead-letters list [--group notify]
    rujukan dead-letters show ID [--group notify]
    rujukan dead-letters replay ID [--group notify] [--event-file repaired.json]
    rujukan dead-letters discard ID --group notify
    rujukan streams          # lengths, pending, lag, dead letters, counters
    rujukan trim             # trim now what every group acknowledged
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from shared.events import BadEvent, parse_entry
from shared.ops import letter_view
from shared.settings import ServiceSettings
from shared.streams import (
    TOPOLOGY,
    connect,
    dead_letters,
    discard_dead_letter,
    find_dead_letter,
    replay_dead_letter,
    stream_report,
    trim_streams,
)

app = typer.Typer(help="Rujukan operator tools.", no_args_is_help=True)
letters_app = typer.Typer(help="Entries a consumer could not process.", no_args_is_help=True)
app.add_typer(letters_app, name="dead-letters")
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


def _find(dead_id: str, group: str | None) -> dict[str, Any]:
    try:
        return _run(lambda r: find_dead_letter(r, dead_id, group))
    except KeyError:
        console.print(f"[red]no dead letter {dead_id}[/red]")
        raise typer.Exit(1) from None
    except LookupError as e:
        console.print(f"[red]{e}[/red]")
        raise typer.Exit(1) from None


@letters_app.command("list")
def list_letters(group: GroupOption = None, limit: int = 100,
                 as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List dead letters, oldest first."""
    _check_group(group)

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
    typer.echo(json.dumps(letter_view(_find(dead_id, group)), indent=2, default=str))


@letters_app.command("replay")
def replay(
    dead_id: str,
    group: GroupOption = None,
    event_file: Annotated[Path | None, typer.Option(help="a repaired event (the whole envelope, JSON)")] = None,
) -> None:
    """Put a dead letter back to its group (repaired with --event-file, or as it was)."""
    _check_group(group)
    letter = _find(dead_id, group)
    event = event_file.read_text() if event_file is not None else None
    try:
        parse_entry({"event": event} if event is not None else json.loads(letter["entry"]))
    except BadEvent as e:
        console.print(f"[red]the event does not parse: {e}[/red]"
                      + ("" if event else "\nrepair it and give it with --event-file"))
        raise typer.Exit(2) from None
    try:
        new_id = _run(lambda r: replay_dead_letter(r, letter["dead_letter_group"], dead_id, event))
    except KeyError:
        console.print(f"[red]dead letter {dead_id} was replayed or discarded meanwhile[/red]")
        raise typer.Exit(1) from None
    console.print(f"replayed {dead_id} to {letter['dead_letter_group']} as {new_id}")


@letters_app.command("discard")
def discard(dead_id: str, group: Annotated[str, typer.Option("--group", "-g")]) -> None:
    """Delete a dead letter for good (after looking at it)."""
    _check_group(group)
    try:
        _run(lambda r: discard_dead_letter(r, group, dead_id))
    except KeyError:
        console.print(f"[red]no dead letter {dead_id} in {group}[/red]")
        raise typer.Exit(1) from None
    console.print(f"discarded {dead_id}")


@app.command()
def streams(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Streams, consumer groups, pending entries, lag, dead letters and counters."""
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
    trimmed = _run(trim_streams)
    for stream, n in trimmed.items():
        console.print(f"{stream}: {n} trimmed")
