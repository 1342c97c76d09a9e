"""Developer helper: `python -m devtools.migrate SERVICE "message"` autogenerates the next
Alembic revision of a service from its models, against a scratch SQLite database at head."""

from __future__ import annotations

import asyncio
import importlib
import sys
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config

from shared.db import upgrade


def main() -> None:
    service, message = sys.argv[1], sys.argv[2]
    migrations = Path(importlib.import_module(service).__file__ or "").parent / "migrations"
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/scratch.db"
        asyncio.run(upgrade(url, migrations))
        cfg = Config()
        cfg.set_main_option("script_location", str(migrations))
        cfg.set_main_option("sqlalchemy.url", url)
        command.revision(cfg, message=message, autogenerate=True)


if __name__ == "__main__":
    main()
