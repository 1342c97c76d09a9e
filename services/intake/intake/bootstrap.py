"""Wires intake's parts together: settings -> adapters -> service layer -> entry points."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from intake.adapters.crypto import FieldCipher, KeyringError
from intake.adapters.orm import AuditEntry, Outbox
from intake.entrypoints import agencies, http, receivers, sealed, vocabularies
from intake.service_layer.agencies import Agencies
from intake.service_layer.referrals import Intake
from intake.settings import Settings
from shared.audit import install_audit
from shared.http import ERROR_RESPONSES, install_error_handlers
from shared.ops import ops_router
from shared.outbox import OutboxRelay
from shared.runtime import Runtime, configure_logging, health_router
from shared.settings import settings_to_start

MIGRATIONS = Path(__file__).parent / "migrations"
DEMO_AGENCY_ID = "demo"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.refuse_development_values()  # a known secret never runs in production
    cipher = FieldCipher(settings.encryption_keys)  # fail at once on a missing or bad key

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = Runtime(settings, MIGRATIONS)
        await rt.start()
        relay = OutboxRelay(rt.sessions, Outbox, rt.redis, poll_interval_s=settings.outbox_poll_interval_s)
        intake = Intake(rt.sessions, cipher, relay, Agencies(rt.sessions, settings.agency_key_pepper))
        if settings.development and settings.demo_api_key:
            await intake.agencies.ensure(DEMO_AGENCY_ID, "Demo agency (UPTD PPA)", settings.demo_api_key)
        else:
            # The demo agency lives only while development gives its key: removed, it is off.
            await intake.agencies.deactivate(DEMO_AGENCY_ID)
        app.state.runtime, app.state.intake, app.state.settings = rt, intake, settings
        rt.workers.start(relay)
        rt.consume("intake", intake.handle)
        try:
            yield
        finally:
            await rt.close()

    app = FastAPI(title="Rujukan intake", version="1", lifespan=lifespan,
                  description="Agency API: submit referrals and follow them until they close.")
    install_error_handlers(app)
    sealed.install(app)  # personal data sealed with a key no longer configured: 409, not 500
    install_audit(app, AuditEntry)
    app.include_router(health_router())
    app.include_router(ops_router(), responses=ERROR_RESPONSES)
    app.include_router(http.router, responses=ERROR_RESPONSES)
    app.include_router(receivers.router, responses=ERROR_RESPONSES)
    app.include_router(agencies.router, responses=ERROR_RESPONSES)
    app.include_router(vocabularies.router, responses=ERROR_RESPONSES)
    return app


def worker_app() -> FastAPI:
    """The app of one HTTP worker process (WEB_CONCURRENCY > 1): its own settings (so its
    own consumer name) and logging, as any replica."""
    settings = Settings()
    configure_logging(settings.service_name, settings.log_level)
    return create_app(settings)


def main() -> None:
    from shared.runtime import serve

    settings = settings_to_start(Settings)
    configure_logging(settings.service_name, settings.log_level)
    try:
        app = create_app(settings)
    except KeyringError as e:
        sys.exit(f"intake: refusing to start: ENCRYPTION_KEYS: {e}")
    serve(app, settings.host, settings.port, settings.log_level,
          workers=settings.web_concurrency, factory="intake.bootstrap:worker_app")
