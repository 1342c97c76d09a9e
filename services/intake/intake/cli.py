"""`rujukan keys`: the encryption keys of personal data at intake (DATABASE_URL and
ENCRYPTION_KEYS as intake reads them).

    rujukan keys new [--id k2]      # a fresh key entry for ENCRYPTION_KEYS
    rujukan keys status             # how many values each key seals; referrals to rotate
    rujukan keys rotate [--batch N] # re-encrypt everything under the first key (resumable)

To rotate: put a new key first in ENCRYPTION_KEYS (keep the old ones after it), restart
intake, run `rujukan keys rotate`, then remove the old key once `status` shows it seals
nothing.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from intake.adapters.crypto import FieldCipher, KeyringError
from intake.service_layer import keys
from intake.settings import Settings
from shared.db import make_engine, sessions

app = typer.Typer(help="Encryption keys of personal data (intake's ENCRYPTION_KEYS): make one, see what "
                       "each holds, rotate.", no_args_is_help=True)
console = Console(stderr=True, soft_wrap=True)  # messages on one line each: greppable in logs


def _cipher(settings: Settings) -> FieldCipher:
    try:
        return FieldCipher(settings.encryption_keys)
    except KeyringError as e:
        console.print(f"[red]ENCRYPTION_KEYS: {e}[/red]")
        raise typer.Exit(2) from None


@app.command("new")
def new(kid: Annotated[str | None, typer.Option("--id", help="the key's id (default: k<today>)")] = None) -> None:
    """Print a fresh key entry (`id:base64`) to put first in ENCRYPTION_KEYS."""
    kid = kid or f"k{datetime.now(UTC):%Y%m%d}"
    if not kid or ":" in kid or "," in kid or kid != kid.strip():
        raise typer.BadParameter("an id without ':', ',' or surrounding spaces", param_hint="--id")
    typer.echo(FieldCipher.generate(kid))
    console.print("Put it first in ENCRYPTION_KEYS, keep the old keys after it, restart intake, then run "
                  "`rujukan keys rotate`.")


@app.command("status")
def status() -> None:
    """How many sealed values each configured key holds, and how many referrals to rotate."""
    settings = Settings()
    cipher = _cipher(settings)

    async def main() -> tuple[dict[str, int], int]:
        engine = make_engine(settings.database_url)
        try:
            factory = sessions(engine)
            return await keys.sealed_by_key(factory, cipher), await keys.pending(factory, cipher)
        finally:
            await engine.dispose()

    counts, pending = asyncio.run(main())
    table = Table("key", "sealed values")
    for kid, n in counts.items():
        table.add_row(kid + (" (current)" if kid == cipher.current else ""), str(n))
    Console().print(table)
    console.print(f"{pending} referral(s) to rotate to '{cipher.current}'")


@app.command("rotate")
def rotate(batch: Annotated[int, typer.Option(min=1, max=10_000, help="referrals per transaction")] = 200) -> None:
    """Re-encrypt every sealed value (and re-key the idempotency digests) with the first key
    of ENCRYPTION_KEYS. Each batch commits as it goes: after a crash or Ctrl-C, run it again
    to finish."""
    settings = Settings()
    cipher = _cipher(settings)

    async def main() -> keys.Rotation:
        engine = make_engine(settings.database_url)
        try:
            factory = sessions(engine)
            total = await keys.pending(factory, cipher)
            with Progress(TextColumn("rotating to '{task.fields[kid]}'"), BarColumn(), MofNCompleteColumn(),
                          TimeRemainingColumn(), console=console) as progress:
                task = progress.add_task("rotate", total=total, kid=cipher.current)
                return await keys.rotate(factory, cipher, batch=batch,
                                         on_batch=lambda n: progress.advance(task, n))
        finally:
            await engine.dispose()

    try:
        report = asyncio.run(main())
    except KeyboardInterrupt:
        console.print("[yellow]interrupted: what was done is kept; run `rujukan keys rotate` again to finish[/yellow]")
        raise typer.Exit(130) from None
    console.print(f"{report.rotated} referral(s) re-encrypted with '{report.key_id}'")
    if report.digests_kept:
        console.print(f"[yellow]{report.digests_kept} idempotency digest(s) could not be rebuilt and keep their "
                      "old key: once it is removed, a repeat of those submissions answers 409[/yellow]")
    for referral_id, why in report.unreadable:
        console.print(f"[red]referral {referral_id}: {why}[/red]")
    if report.unreadable:
        console.print(f"[red]{len(report.unreadable)} referral(s) could not be opened: restore their key to "
                      "ENCRYPTION_KEYS (after the first) and run again[/red]")
        raise typer.Exit(1)
    console.print(f"every value is sealed with '{report.key_id}': the other keys can be removed from "
                  "ENCRYPTION_KEYS")
