"""Database plumbing shared by the services: engines, sessions, Alembic, and the two
tables every service has — the transactional outbox and the processed-events inbox."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, DateTime, Index, Integer, MetaData, String, Text, TypeDecorator, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

from shared.events import utcnow

if TYPE_CHECKING:
    from shared.streams.consumer import Message

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def new_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING)


def make_engine(url: str, **kw: Any) -> AsyncEngine:
    # SQL parameters are what callers sent (case numbers, credentials' digests, sealed
    # personal data): keep them out of every error message and log line SQLAlchemy writes.
    kw.setdefault("hide_parameters", True)
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kw)

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
            # WAL lets the HTTP handlers read while a consumer writes; NORMAL is still durable
            # against process crashes (the committed WAL survives), which is what we protect.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    kw.setdefault("pool_size", 10)
    kw.setdefault("max_overflow", 10)
    if "pool_pre_ping" in kw:
        return create_async_engine(url, **kw)
    engine = create_async_engine(url, **kw)
    _check_on_checkout(engine)
    return engine


# A pooled connection unused for longer than this is pinged before it is handed out.
PING_AFTER_IDLE_S = 1.0


def _check_on_checkout(engine: AsyncEngine) -> None:
    """What pool_pre_ping is for (never hand out a connection the server has dropped),
    without its cost: with asyncpg, pre-ping is three round trips (BEGIN, a ping,
    ROLLBACK) on every checkout, a sixth of intake's CPU per request under load.

    - A connection whose socket the server closed (PostgreSQL restarted or crashed, the
      backend was terminated) is known closed to asyncpg without a round trip: replaced.
    - A connection idle for more than PING_AFTER_IDLE_S is pinged first, as pre-ping
      would (a silently dropped one, e.g. by a firewall, cannot be seen otherwise).
    Raising DisconnectionError makes the pool drop it and hand out a new one.
    """
    import time

    from sqlalchemy.exc import DisconnectionError

    pool = engine.sync_engine.pool

    @event.listens_for(pool, "checkin")
    def _checked_in(dbapi_conn: Any, record: Any) -> None:
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _checked_out(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        raw = getattr(dbapi_conn, "_connection", None)  # the asyncpg connection
        if raw is not None and raw.is_closed():
            raise DisconnectionError("connection closed by the server")
        if time.monotonic() - record.info.get("checked_in_at", 0.0) > PING_AFTER_IDLE_S:
            try:
                dbapi_conn.ping()
            except Exception as e:
                raise DisconnectionError(f"ping failed: {type(e).__name__}: {e}") from e


def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite keeps no offset: store UTC, read as UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: use shared.events.utcnow()")
        return value.astimezone(UTC) if dialect.name != "sqlite" else value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class OutboxMixin:
    """An event waiting to be published: written in the same transaction as the change
    that caused it, published by the relay right after commit (and by its poller after a
    crash), then marked with `published_at`."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(32), unique=True)
    event_type: Mapped[str] = mapped_column(String(80))
    envelope: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (Index("ix_outbox_unpublished", "published_at", "id"),)


class ProcessedEventMixin:
    """The inbox: an event id recorded in the same transaction as its effect, so that a
    redelivered or replayed event has the effect of once."""

    __tablename__ = "processed_event"

    event_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(80))
    processed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditEntryMixin:
    """One operator action (shared/audit.py): who (operator, role), what (method, the route
    or command, the ids it named, the outcome's status), when, and from where. Append-only:
    the code only inserts, and the migration's triggers refuse UPDATE and DELETE."""

    __tablename__ = "audit_entry"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    operator: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(20))
    method: Mapped[str] = mapped_column(String(10))  # GET, POST, ... or CLI
    action: Mapped[str] = mapped_column(String(200))  # the route template, or the command
    target: Mapped[dict[str, str]] = mapped_column(JSON)  # the ids it named
    status: Mapped[int] = mapped_column(Integer)
    client: Mapped[str] = mapped_column(String(200))

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (Index("ix_audit_entry_at", "at"), Index("ix_audit_entry_operator_id", "operator", "id"))


def append_only_ddl(dialect: str, table: str) -> list[str]:
    """Statements that make `table` refuse UPDATE and DELETE (for a migration)."""
    if dialect == "sqlite":
        return [f"CREATE TRIGGER {table}_append_only_{op.lower()} BEFORE {op} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END" for op in ("UPDATE", "DELETE")]
    if dialect == "postgresql":
        return [
            f"CREATE FUNCTION {table}_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{table} is append-only'; END $$",
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_append_only()",
        ]
    return []


class Base(DeclarativeBase):
    """Only for typing helpers; each service declares its own DeclarativeBase."""


async def upgrade(database_url: str, migrations_dir: Path) -> None:
    """Run the service's Alembic migrations to head (in a thread: Alembic is synchronous
    and its env.py starts its own event loop)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    await asyncio.to_thread(command.upgrade, cfg, "heads")


def run_alembic_env(target_metadata: MetaData) -> None:
    """The body of every service's migrations/env.py (async engines, online mode)."""
    from alembic import context

    config = context.config
    url = config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is not set"

    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True,
                          render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return

    def do_run(connection: Any) -> None:
        if connection.dialect.name == "postgresql":
            # Replicas starting together migrate one at a time (released at commit).
            from sqlalchemy import text

            connection.execute(text("SELECT pg_advisory_xact_lock(7262001)"))
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()

    async def main() -> None:
        engine = make_engine(url)
        async with engine.connect() as conn:
            await conn.run_sync(do_run)
            await conn.commit()
        await engine.dispose()

    asyncio.run(main())


async def insert_new(session: AsyncSession, model: type, **values: Any) -> None:
    """Insert the row unless one with its key exists (ON CONFLICT DO NOTHING, PostgreSQL and
    SQLite alike): two transactions learning the same thing at once both go on, where a
    look-then-add would fail the second with a unique violation."""
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    await session.execute(insert(model).values(**values).on_conflict_do_nothing())


async def first_time(session: AsyncSession, model: type, messages: Sequence[Message]) -> list[Message]:
    """The messages of a batch whose events this service has not processed yet, in order,
    each recorded in the inbox table within the caller's transaction (so the record and the
    effect commit together). Duplicates within the batch count once."""
    ids = [m.envelope.id for m in messages]
    seen = set((await session.scalars(select(model.event_id).where(model.event_id.in_(ids)))).all())  # type: ignore[attr-defined]
    fresh: list[Message] = []
    for m in messages:
        if m.envelope.id in seen:
            continue
        seen.add(m.envelope.id)
        session.add(model(event_id=m.envelope.id, event_type=m.envelope.type))
        fresh.append(m)
    return fresh
