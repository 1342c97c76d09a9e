"""Wires notify's parts together: settings -> adapters -> service layer -> entry points."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI

from notify.adapters.mailer import Mailer
from notify.adapters.orm import AuditEntry, Outbox
from notify.entrypoints import http, inbox
from notify.service_layer.credentials import Credentials
from notify.service_layer.deliveries import Notify
from notify.service_layer.inbox import Inbox
from notify.settings import Settings
from shared.audit import install_audit
from shared.http import ERROR_RESPONSES, install_error_handlers
from shared.ops import ops_router
from shared.outbox import OutboxRelay
from shared.runtime import Runtime, configure_logging, health_router
from shared.settings import settings_to_start

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.refuse_development_values()  # a known secret never runs in production
    mailer = Mailer(settings.smtp_url, settings.mail_from)  # fail at once on a bad SMTP_URL

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = Runtime(settings, MIGRATIONS)
        await rt.start()
        relay = OutboxRelay(rt.sessions, Outbox, rt.redis, poll_interval_s=settings.outbox_poll_interval_s)
        notify = Notify(rt.sessions, relay, mailer, settings.mail_max_attempts, settings.mail_poll_interval_s,
                        public_url=settings.public_url, signin_code_ttl=timedelta(hours=settings.signin_code_hours),
                        record_every=settings.mail_record_every)
        app.state.runtime, app.state.notify, app.state.settings = rt, notify, settings
        app.state.inbox = Inbox(rt.sessions, relay)
        app.state.credentials = Credentials(rt.sessions, relay, timedelta(hours=settings.session_hours))
        rt.workers.start(relay)
        rt.workers.start(notify)
        rt.consume("notify", notify.handle)
        try:
            yield
        finally:
            await rt.close()
            await mailer.close()  # after the delivery worker stopped: no mail in flight

    app = FastAPI(title="Rujukan notify", version="1", lifespan=lifespan,
                  description="Deliveries to receiving social workers and facilitators.")
    install_error_handlers(app)
    install_audit(app, AuditEntry)
    app.include_router(health_router())
    app.include_router(ops_router(), responses=ERROR_RESPONSES)
    app.include_router(http.router, responses=ERROR_RESPONSES)
    app.include_router(inbox.router, responses=ERROR_RESPONSES)
    app.include_router(inbox.signin, responses=ERROR_RESPONSES)
    app.include_router(inbox.operator, responses=ERROR_RESPONSES)
    return app


def main() -> None:
    from shared.runtime import serve

    settings = settings_to_start(Settings)
    configure_logging(settings.service_name, settings.log_level)
    serve(create_app(settings), settings.host, settings.port, settings.log_level)
