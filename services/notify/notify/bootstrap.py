"""Wires notify's parts together: settings -> adapters -> service layer -> entry points."""

from __future__ import annotations

from datetime import timedelta
from functools import partial
from pathlib import Path

from fastapi import FastAPI

from notify.adapters.channels import GatewayChannel, WebhookChannel, receiver_secret
from notify.adapters.mailer import Mailer
from notify.adapters.orm import AuditEntry, Outbox
from notify.entrypoints import http, inbox, pages, streams
from notify.service_layer.channels import ChannelRounds
from notify.service_layer.credentials import Credentials
from notify.service_layer.deliveries import Notify
from notify.service_layer.inbox import Inbox
from notify.settings import Settings
from shared.app import Service, Wiring, service_app
from shared.metrics import NotificationTimes
from shared.outbox import OutboxRelay
from shared.runtime import Runtime, configure_logging, serve
from shared.settings import settings_to_start
from shared.status import tally_failed_deliveries
from shared.web.operator import operator_pages

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    mailer = Mailer(settings.smtp_url, settings.mail_from)  # fail at once on a bad SMTP_URL
    channels = other_channels(settings)

    async def wire(rt: Runtime) -> Wiring:
        tally = partial(tally_failed_deliveries, rt.redis)
        relay = OutboxRelay(rt.sessions, Outbox, rt.redis, poll_interval_s=settings.outbox_poll_interval_s)
        rounds = ChannelRounds(rt.sessions, channels, public_url=settings.public_url,
                               signin_code_ttl=timedelta(hours=settings.signin_code_hours),
                               max_attempts=settings.mail_max_attempts, poll_interval_s=settings.mail_poll_interval_s,
                               tally_failed=tally)
        notify = Notify(rt.sessions, relay, mailer, settings.mail_max_attempts, settings.mail_poll_interval_s,
                        public_url=settings.public_url, signin_code_ttl=timedelta(hours=settings.signin_code_hours),
                        record_every=settings.mail_record_every, operator_emails=settings.operator_emails,
                        webhook_key=settings.webhook_key,
                        reminder_before=timedelta(hours=settings.reminder_before_hours), channel_rounds=rounds,
                        observe_notification=NotificationTimes(rt.metrics), tally_failed=tally)
        return Wiring(
            state={"notify": notify, "inbox": Inbox(rt.sessions, relay),
                   "credentials": Credentials(rt.sessions, relay, timedelta(hours=settings.session_hours))},
            handler=streams.batch_handler(notify), workers=[relay, notify, rounds],
            # after the delivery rounds stopped: no mail or message in flight
            on_close=[mailer.close, *(c.close for c in channels.values())],
        )

    return service_app(Service(
        name="notify", description="Deliveries to receiving social workers and facilitators.",
        migrations=MIGRATIONS, group=streams.GROUP, reads=streams.READS, wire=wire,
        routers=[http.router, inbox.router, inbox.signin, inbox.operator, pages.router, operator_pages("notify")],
        audit_model=AuditEntry, templates=Path(__file__).parent / "templates" / "pages",
    ), settings)


def other_channels(settings: Settings) -> dict[str, WebhookChannel | GatewayChannel]:
    """The receivers' channels besides email, and the operators' webhook when it is set.
    Loopback and private addresses are called only in development."""
    dev = settings.development
    key = settings.webhook_key
    channels: dict[str, WebhookChannel | GatewayChannel] = {
        "webhook": WebhookChannel(lambda p: receiver_secret(key, str(p["data"]["receiver_id"])), allow_private=dev)}
    if settings.sms_gateway_url:
        channels["sms"] = GatewayChannel("sms", settings.sms_gateway_url, settings.sms_gateway_key, allow_private=dev)
    if settings.whatsapp_gateway_url:
        channels["whatsapp"] = GatewayChannel("whatsapp", settings.whatsapp_gateway_url,
                                              settings.whatsapp_gateway_key, allow_private=dev)
    if settings.operator_alert_webhook_url:
        secret = settings.operator_alert_webhook_secret
        channels["operator_webhook"] = WebhookChannel(lambda _: secret, allow_private=dev,
                                                      url=settings.operator_alert_webhook_url)
    return channels


def main() -> None:
    settings = settings_to_start(Settings)
    configure_logging(settings.service_name, settings.log_level)
    serve(create_app(settings), settings.host, settings.port, settings.log_level,
          forwarded_allow_ips=settings.forwarded_allow_ips)
