"""Wires intake's parts together: settings -> adapters -> service layer -> entry points."""

from __future__ import annotations

import sys
from pathlib import Path

from fastapi import FastAPI

from intake.adapters.crypto import FieldCipher, KeyringError
from intake.adapters.mail import Mail
from intake.adapters.orm import AuditEntry, Outbox
from intake.entrypoints import (
    agencies,
    agency_pages,
    agency_staff,
    http,
    person_page,
    receivers,
    rematch,
    sealed,
    streams,
    vocabularies,
)
from intake.entrypoints import webhooks as webhook_routes
from intake.service_layer.agencies import Agencies
from intake.service_layer.referrals import Intake
from intake.service_layer.staff import Staff
from intake.service_layer.webhooks import (
    SenderSettings,
    Webhooks,
    WebhookSender,
    then_kick,
    use_webhook_sessions,
)
from intake.settings import Settings
from shared.app import Service, Wiring, service_app
from shared.outbox import OutboxRelay
from shared.runtime import Runtime, configure_logging, serve
from shared.settings import settings_to_start
from shared.web.operator import operator_pages

MIGRATIONS = Path(__file__).parent / "migrations"
DEMO_AGENCY_ID = "demo"
# The demo agency's staff member in development: asks for a sign-in link on /agency/signin
# and reads it in the development mail catcher. Not a secret: the link is the credential.
DEMO_STAFF_EMAIL = "staf@demo-agency.example"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    settings.refuse_development_values()  # before the keys are read: a known secret never runs in production
    cipher = FieldCipher(settings.encryption_keys)  # fail at once on a missing or bad key
    mail = Mail(settings.smtp_url, settings.mail_from)  # fail at once on a malformed SMTP_URL

    async def wire(rt: Runtime) -> Wiring:
        use_webhook_sessions(rt.sessions)  # every timeline step enqueues its webhooks with it
        relay = OutboxRelay(rt.sessions, Outbox, rt.redis, poll_interval_s=settings.outbox_poll_interval_s)
        intake = Intake(rt.sessions, cipher, relay, Agencies(rt.sessions, settings.agency_key_pepper))
        staff = Staff(rt.sessions, mail, settings.public_url, code_minutes=settings.agency_signin_minutes,
                      session_hours=settings.agency_session_hours)
        if settings.development and settings.demo_api_key:
            await intake.agencies.ensure(DEMO_AGENCY_ID, "Demo agency (UPTD PPA)", settings.demo_api_key)
            await staff.ensure(DEMO_AGENCY_ID, DEMO_STAFF_EMAIL)
        else:
            # The demo agency lives only while development gives its key: removed, it is off.
            await intake.agencies.deactivate(DEMO_AGENCY_ID)
        sender = WebhookSender(rt.sessions, cipher, mail, SenderSettings(
            timeout_s=settings.webhook_timeout_s, concurrency=settings.webhook_concurrency,
            batch=settings.webhook_batch, lease_s=settings.webhook_lease_s,
            backoff_base_s=settings.webhook_backoff_base_s, backoff_max_s=settings.webhook_backoff_max_s,
            give_up_hours=settings.webhook_give_up_hours, allow_private=settings.development,
            operator_emails=[e.strip() for e in settings.operator_alert_emails.split(",") if e.strip()],
        ), interval_s=settings.webhook_poll_interval_s)
        webhooks = Webhooks(rt.sessions, cipher, allow_private=settings.development,
                            overlap_hours=settings.webhook_secret_overlap_hours,
                            max_per_agency=settings.webhook_max_per_agency, kick=sender.kick)
        return Wiring(state={"intake": intake, "staff": staff, "webhooks": webhooks,
                             "webhook_sender": sender, "poll_settle_s": settings.poll_settle_s},
                      handler=then_kick(streams.batch_handler(intake), sender.kick),
                      workers=[relay, sender])

    return service_app(Service(
        name="intake", description="Agency API: submit referrals and follow them until they close.",
        migrations=MIGRATIONS, group=streams.GROUP, reads=streams.READS, wire=wire,
        routers=[http.router, rematch.router, receivers.router, agencies.router, agency_staff.router,
                 vocabularies.router, agency_pages.router, person_page.router, operator_pages("intake"),
                 webhook_routes.router],
        audit_model=AuditEntry, templates=Path(__file__).parent / "templates" / "pages",
        install=sealed.install,  # personal data sealed with a key no longer configured: 409, not 500
    ), settings)


def worker_app() -> FastAPI:
    """The app of one HTTP worker process (WEB_CONCURRENCY > 1): its own settings (so its
    own consumer name) and logging, as any replica."""
    settings = Settings()
    configure_logging(settings.service_name, settings.log_level)
    return create_app(settings)


def main() -> None:
    settings = settings_to_start(Settings)
    configure_logging(settings.service_name, settings.log_level)
    try:
        app = create_app(settings)
    except KeyringError as e:
        sys.exit(f"intake: refusing to start: ENCRYPTION_KEYS: {e}")
    serve(app, settings.host, settings.port, settings.log_level,
          workers=settings.web_concurrency, factory="intake.bootstrap:worker_app",
          forwarded_allow_ips=settings.forwarded_allow_ips)
