"""Wires matching's parts together: settings -> adapters -> service layer -> entry points."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from matching.adapters.hsds_json import parse_document
from matching.adapters.orm import AuditEntry, Outbox
from matching.entrypoints import http, pages, streams
from matching.service_layer.directory import import_parsed
from matching.service_layer.handlers import Matching
from matching.service_layer.workers import CrisisEscalation, HoldExpiry, Rematch, Waitlist
from matching.settings import Settings
from shared.app import Service, Wiring, service_app
from shared.metrics import DecisionTimes
from shared.outbox import OutboxRelay
from shared.runtime import Runtime, configure_logging, serve
from shared.settings import settings_to_start
from shared.web.operator import operator_pages

MIGRATIONS = Path(__file__).parent / "migrations"
DEMO_DIRECTORY = Path(__file__).parent / "seed" / "demo_directory.json"


async def seed_demo(sessions: async_sessionmaker[AsyncSession]) -> int:
    """Put the demo directory (HSDS) in through the importer; re-seeding changes nothing."""
    report = await import_parsed(sessions, parse_document(json.loads(DEMO_DIRECTORY.read_text())))
    return report.created + report.updated


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    async def wire(rt: Runtime) -> Wiring:
        if settings.seed_demo:
            await seed_demo(rt.sessions)
        relay = OutboxRelay(rt.sessions, Outbox, rt.redis, poll_interval_s=settings.outbox_poll_interval_s)
        matching = Matching(rt.sessions, relay, timedelta(hours=settings.hold_hours_routine),
                            timedelta(hours=settings.hold_hours_urgent), timedelta(seconds=settings.hold_grace_s),
                            crisis_ack=timedelta(minutes=settings.crisis_ack_minutes),
                            observe_decision=DecisionTimes(rt.metrics))
        expiry = HoldExpiry(matching, settings.hold_expiry_interval_s)
        escalation = CrisisEscalation(matching, settings.escalation_interval_s)
        waitlist = Waitlist(matching, settings.waitlist_interval_s)
        rematch = Rematch(matching, settings.rematch_interval_s)
        return Wiring(state={"matching": matching}, handler=streams.batch_handler(matching),
                      workers=[relay, expiry, escalation, waitlist, rematch])

    return service_app(Service(
        name="matching", description="Directory admin and decisions: who gets sent where, and why.",
        migrations=MIGRATIONS, group=streams.GROUP, reads=streams.READS, wire=wire,
        routers=[http.router, pages.router, operator_pages("matching")], audit_model=AuditEntry,
        templates=Path(__file__).parent / "templates" / "pages",
    ), settings)


def main() -> None:
    settings = settings_to_start(Settings)
    configure_logging(settings.service_name, settings.log_level)
    serve(create_app(settings), settings.host, settings.port, settings.log_level,
          forwarded_allow_ips=settings.forwarded_allow_ips)
