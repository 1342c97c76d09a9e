"""The operators' audit log: every call of an operator route (allowed, or refused with 403)
and every action of the `rujukan` command line, in the database of the service it acted on.

One middleware records them all: the operator dependency (shared/operators.py) names the
operator on the request once it knows the key, and the middleware writes the entry with
the outcome's status before the response leaves. Entries are only ever inserted (and the
table's triggers refuse UPDATE and DELETE); an auditor reads them with
`GET /v1/ops/audit` or `rujukan audit`.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

import click
import typer
from fastapi import FastAPI
from rich.console import Console
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.db import AuditEntryMixin, make_engine, new_metadata, sessions

log = logging.getLogger("rujukan.audit")

STATE_KEY = "operator_call"  # where the operator dependency leaves the call on the request


@dataclass
class OperatorCall:
    """What an operator is doing: known once the key is, completed by the outcome."""

    operator: str
    role: str
    method: str
    action: str
    target: dict[str, str] = field(default_factory=dict)
    client: str = ""


@dataclass
class AuditLog:
    sessions: async_sessionmaker[AsyncSession]
    model: type[Any]  # the service's AuditEntry (shared.db.AuditEntryMixin)

    async def record(self, call: OperatorCall, status: int) -> None:
        async with self.sessions() as s, s.begin():
            s.add(self.model(operator=call.operator, role=call.role, method=call.method, action=call.action,
                             target=call.target, status=status, client=call.client[:200]))

    async def entries(self, since: datetime | None = None, operator: str | None = None,
                      limit: int = 100) -> list[Any]:
        """Entries in the order they were written, from `since` on (from the first without)."""
        q = select(self.model).order_by(self.model.id).limit(limit)
        if since is not None:
            q = q.where(self.model.at >= since)
        if operator is not None:
            q = q.where(self.model.operator == operator)
        async with self.sessions() as s:
            return list((await s.scalars(q)).all())


def audit_log(app: Any) -> AuditLog:
    return AuditLog(app.state.runtime.sessions, app.state.audit_model)


class OperatorAudit:
    """ASGI middleware: an entry for every request on which an operator was named."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # A dict of this request's own for request.state downstream: a server may hand every
        # request the same lifespan state, and one request's operator must not be another's.
        state = {k: v for k, v in (scope.get("state") or {}).items() if k != STATE_KEY}
        scope["state"] = state
        recorded = False

        async def record(status: int) -> None:
            nonlocal recorded
            call = state.get(STATE_KEY)
            if recorded or call is None:
                return
            recorded = True
            try:
                await audit_log(scope["app"]).record(call, status)
            except Exception as e:
                # The action happened; losing its record must be loud, not a second failure.
                log.error("audit entry not recorded (%s %s by %s): %s", call.method, call.action, call.operator,
                          type(e).__name__)

        async def send_after_recording(message: Message) -> None:
            if message["type"] == "http.response.start":
                await record(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_after_recording)
        except Exception:
            await record(500)
            raise


def install_audit(app: FastAPI, model: type[Any]) -> None:
    """Record operator calls of `app` in `model`'s table (app.state.runtime gives the sessions)."""
    app.state.audit_model = model
    app.add_middleware(OperatorAudit)


# --- the command line -------------------------------------------------------------------------


class _AnyService(DeclarativeBase):
    metadata = new_metadata()


class AuditEntry(AuditEntryMixin, _AnyService):
    """The audit table as every service has it: what the command line writes to."""


_err = Console(stderr=True)
CLI_ROLE = "cli"  # whoever runs the command line has a shell where the services run


def cli_call(command: str, target: dict[str, str] | None = None) -> OperatorCall:
    """A command line action: by RUJUKAN_OPERATOR (else the user running it), from this host."""
    who = os.environ.get("RUJUKAN_OPERATOR") or getpass.getuser()
    return OperatorCall(operator=who[:64], role=CLI_ROLE, method="CLI", action=command,
                        target=target or {}, client=f"cli@{socket.gethostname()}")


class CliAuditLog:
    """The audit log of the service whose database DATABASE_URL names, for the command line."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    async def _run(self, action: Any) -> Any:
        engine = make_engine(self.database_url)
        try:
            return await action(AuditLog(sessions(engine), AuditEntry))
        finally:
            await engine.dispose()

    async def check(self) -> None:
        """Raise unless the database has an audit log (a migrated Rujukan service's)."""
        await self._run(lambda log: log.entries(limit=1))

    async def record(self, call: OperatorCall, status: int) -> None:
        await self._run(lambda log: log.record(call, status))

    async def entries(self, since: datetime | None, operator: str | None, limit: int) -> list[Any]:
        result: list[Any] = await self._run(lambda log: log.entries(since, operator, limit))
        return result


class Audited:
    """A command of the `rujukan` command line recorded, with its outcome, in the audit log
    of DATABASE_URL's service. `required`: the command changes something, so it does not
    run unrecorded. Set `status` to the outcome (HTTP's codes) when it is not a success."""

    def __init__(self, command: str, target: dict[str, str] | None = None, *, required: bool,
                 database_url: str | None = None) -> None:
        url = database_url or os.environ.get("DATABASE_URL")
        self.log = CliAuditLog(url) if url else None
        self.call = cli_call(command, target)
        self.status = 200
        if self.log is None and required:
            _err.print("[red]set DATABASE_URL to the database of the service you act on: "
                       "its audit log records this action[/red]")
            raise typer.Exit(2)
        if self.log is not None:
            try:
                asyncio.run(self.log.check())
            except Exception as e:
                _err.print(f"[red]DATABASE_URL has no audit log (not a migrated Rujukan service's database?): "
                           f"{type(e).__name__}[/red]")
                raise typer.Exit(2) from None

    def __enter__(self) -> Audited:
        return self

    def __exit__(self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self.log is None:
            return
        status = self.status
        if isinstance(e, typer.Exit | click.exceptions.Exit):
            status = status if e.exit_code == 0 or status >= 400 else 400
        elif isinstance(e, click.ClickException):
            status = 400
        elif e is not None:
            status = 500
        asyncio.run(self.log.record(self.call, status))
