"""Wires matching's parts together: settings -> adapters -> service layer -> entry points."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from matching.adapters.hsds_json import parse_document
from matching.adapters.orm import AuditEntry, Outbox
from matching.entrypoints import http
from matching.service_layer.directory import import_parsed
from matching.service_layer.handlers import Matching
from matching.service_layer.workers import HoldExpiry, Waitlist
from matching.settings import Settings
from shared.audit import install_audit
from shared.http import ERROR_RESPONSES, install_error_handlers
from shared.ops import ops_router
from shared.outbox import OutboxRelay
from shared.runtime import Runtime, configure_logging, health_router
from shared.settings import settings_to_start

MIGRATIONS = Path(__file__).parent / "migrations"
DEMO_DIRECTORY = Path(__file__).parent / "seed" / "demo_directory.json"


async def seed_demo(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Put the demo directory (HSDS) in through the importer; re-seeding changes nothing."""
    report = await import_parsed(sessions, parse_document(json.loads(DEMO_DIRECTORY.read_text())))
    return report.created + report.updated


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.refuse_development_values()  # a known secret never runs in production

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = Runtime(settings, MIGRATIONS)
        await rt.start()
        if settings.seed_demo:
            await seed_demo(rt.sessions)
        relay = OutboxRelay(rt.sessions, Outbox, rt.redis, poll_interval_s=settings.outbox_poll_interval_s)
        matching = Matching(rt.sessions, relay, timedelta(hours=settings.hold_hours_routine),
                            timedelta(hours=settings.hold_hours_urgent), timedelta(seconds=settings.hold_grace_s))
        app.state.runtime, app.state.matching, app.state.settings = rt, matching, settings
        rt.workers.start(relay)
        rt.workers.start(HoldExpiry(matching, settings.hold_expiry_interval_s))
        rt.workers.start(Waitlist(matching, settings.waitlist_interval_s))
        rt.consume("matching", matching.handle)
        try:
            yield
        finally:
            await rt.close()

    app = FastAPI(title="Rujukan matching", version="1", lifespan=lifespan,
                  description="Directory admin and decisions: who gets sent where, and why.")
    install_error_handlers(app)
    install_audit(app, AuditEntry)
    app.include_router(health_router())
    app.include_router(ops_router(), responses=ERROR_RESPONSES)
    app.include_router(http.router, responses=ERROR_RESPONSES)
    return app


def main() -> None:
    from shared.runtime import serve

    settings = settings_to_start(Settings)
    configure_logging(settings.service_name, settings.log_level)
    serve(create_app(settings), settings.host, settings.port, settings.log_level)
