"""`rujukan`, the operator's one command line: the platform's commands (shared.cli) and
intake's, which owns the agencies and the encryption keys of personal data.

    rujukan dead-letters|streams|trim|audit|operators ...  # see shared.cli
    rujukan agencies create|list|rotate|revoke             # intake's DATABASE_URL
    rujukan keys new|status|rotate                         # intake's encryption keys
    rujukan status                                         # the system at a glance (REDIS_URL)
"""

from __future__ import annotations

import typer

from intake.agencies_cli import app as agencies_app
from intake.cli import app as keys_app
from shared.cli import app as platform_app
from shared.status import status

app = typer.Typer(help="Rujukan operator tools.", no_args_is_help=True)
app.add_typer(platform_app)  # no name: its commands sit at the top level
app.add_typer(agencies_app, name="agencies")
app.add_typer(keys_app, name="keys")
app.command("status")(status)  # the whole system in one table, from Redis only
