"""What every service process does the same way: logging, the Redis client and the
FastStream broker, start-up (migrate, provision streams), background workers (consumer,
outbox relay, periodic rounds) and a graceful stop. shared/app.py builds the app around it."""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from collections.abc import Awaitable, Callable, Iterable
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("rujukan")


def configure_logging(service: str, level: str = "INFO", fmt: str | None = None) -> None:
    """Text lines by default (`make run`); JSON lines when `LOG_FORMAT=json` (compose)."""
    import os

    from shared.tracing import JsonFormatter, setup_tracing

    handler = logging.StreamHandler(sys.stderr)
    if (fmt or os.environ.get("LOG_FORMAT", "text")).lower() == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    setup_tracing(service)  # the trace ids in the logs; exported only when OTLP is configured
    # Access logs name paths and status codes only; they never include bodies.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


class Worker(Protocol):
    """The one shape of every background loop (stream consumer, outbox relay, delivery
    rounds, hold expiry, waitlist, janitor): run() until stop(), finishing what it holds."""

    async def run(self) -> None: ...

    def stop(self) -> None: ...


class Workers:
    """Background loops of a service (stream consumers, outbox relay, mailer)."""

    def __init__(self) -> None:
        self._items: list[tuple[Any, asyncio.Task[None]]] = []

    def start(self, worker: Worker) -> None:
        task = asyncio.create_task(worker.run(), name=type(worker).__name__)
        self._items.append((worker, task))

    async def stop(self, timeout: float = 20.0) -> None:
        """Stop the workers in the reverse order of their start, each finishing what it
        holds: consumers first (their last batch may write outbox rows), the outbox relays
        last (their final pass publishes those rows). What overstays the timeout is
        cancelled; a cancelled consumer hands back its entries on the way out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for worker, task in reversed(self._items):
            worker.stop()
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout=max(deadline - loop.time(), 0.1))
            except TimeoutError:
                log.warning("%s did not stop in time; cancelling it", task.get_name())
                task.cancel()
                with suppress(asyncio.CancelledError, Exception):
                    await task
            except Exception as e:
                log.warning("%s stopped with %s: %s", task.get_name(), type(e).__name__, e)
        self._items.clear()


def serve(app: Any, host: str, port: int, log_level: str = "info", *, workers: int = 1,
          factory: str | None = None, forwarded_allow_ips: str = "127.0.0.1") -> None:
    """Serve the app; with workers > 1, as that many processes on one port, each built by
    `factory` ("package.module:function") in its own process: replicas of the service, each
    with its own consumer name, database pool and outbox relay, as the design allows."""
    import uvicorn

    # uvicorn turns SIGTERM/SIGINT into a lifespan shutdown, where workers stop gracefully.
    options: dict[str, Any] = {"host": host, "port": port, "log_level": log_level.lower(), "access_log": False,
                               "timeout_graceful_shutdown": 20, "forwarded_allow_ips": forwarded_allow_ips}
    if workers > 1 and factory:
        uvicorn.run(factory, factory=True, workers=workers, **options)
    else:
        uvicorn.run(app, **options)


class Runtime:
    """A service process's shared parts: database, Redis, the broker, background workers."""

    def __init__(self, settings: Any, migrations_dir: Any, metrics: CollectorRegistry | None = None) -> None:
        from faststream.redis import RedisBroker
        from prometheus_client import CollectorRegistry

        from shared.db import make_engine, sessions
        from shared.metrics import stream_metrics
        from shared.streams.topology import connect

        self.settings = settings
        self.migrations_dir = migrations_dir
        self.engine = make_engine(settings.database_url)
        self.sessions = sessions(self.engine)
        self.redis = connect(settings.redis_url)
        # The app's Prometheus registry (/metrics): the broker's figures and the service's own go there.
        self.metrics = metrics if metrics is not None else CollectorRegistry()
        # One broker per process: every stream subscriber of this service runs on it.
        # Entries reach handlers unparsed (apply_types off): the consumer parses each one.
        self.broker = RedisBroker(settings.redis_url, apply_types=False, graceful_timeout=15.0,
                                  logger=logging.getLogger("rujukan.streams.faststream"),
                                  log_level=logging.DEBUG,  # no line per batch at INFO
                                  middlewares=[stream_metrics(self.metrics, settings.service_name)])
        self.workers = Workers()
        self.consumers: list[Any] = []
        self.janitor: Any = None

    async def start(self) -> None:
        """Migrate the database and provision every stream and group at id 0, before any
        consumer or publisher runs. Waits for Redis and the database to be reachable."""
        from shared.db import upgrade
        from shared.streams.janitor import StreamJanitor
        from shared.streams.topology import provision

        await _until_ready("database", lambda: upgrade(self.settings.database_url, self.migrations_dir))
        await _until_ready("redis", lambda: provision(self.redis))
        await _until_ready("broker", self.broker.start)
        # Every replica runs a janitor; a lock in Redis lets one of them trim per period.
        self.janitor = StreamJanitor(self.redis, interval_s=self.settings.stream_trim_interval_s,
                                     forget_after_s=self.settings.consumer_forget_after_s)
        self.workers.start(self.janitor)

    def consume(self, group: str, handler: Any, reads: Iterable[Any] = ()) -> Any:
        """Start the group's consumer on the broker; `reads` (the event types it handles)
        only types its channels in the AsyncAPI document."""
        from shared.streams.asyncapi import payloads
        from shared.streams.consumer import StreamConsumer
        from shared.streams.topology import TOPOLOGY

        s = self.settings
        # Unique per consumer, not only per process: two apps in one process (tests) or two
        # replicas given the same CONSUMER_NAME must never share a pending-entries list.
        name = f"{group}-{s.consumer_name}-{secrets.token_hex(3)}"
        consumer = StreamConsumer(
            self.redis, group=group, consumer=name, streams=TOPOLOGY[group],
            handler=handler, batch=s.stream_batch, block_ms=s.stream_block_ms,
            reclaim_idle_ms=s.reclaim_idle_ms, max_deliveries=s.max_deliveries,
            broker=self.broker, payloads=payloads(group, reads),
        )
        self.consumers.append(consumer)
        self.workers.start(consumer)
        return consumer

    async def close(self) -> None:
        from shared.streams.consumer import stop_subscribers

        await self.workers.stop()
        # A consumer cancelled for overstaying left its subscribers reading: end those reads
        # before the broker closes its connections under them.
        await stop_subscribers(s for s in self.broker.subscribers if s.running)
        with suppress(Exception):
            await self.broker.stop()
        await self.redis.aclose()
        await self.engine.dispose()

    async def health(self) -> dict[str, Any]:
        from sqlalchemy import text

        checks: dict[str, str] = {}
        try:
            await asyncio.wait_for(self.redis.ping(), 2)
            checks["redis"] = "ok"
        except Exception as e:
            checks["redis"] = f"error: {type(e).__name__}"
        try:
            async with self.engine.connect() as conn:
                await asyncio.wait_for(conn.execute(text("SELECT 1")), 2)
            checks["database"] = "ok"
        except Exception as e:
            checks["database"] = f"error: {type(e).__name__}"
        ok = all(v == "ok" for v in checks.values())
        return {
            "status": "ok" if ok else "degraded",
            "service": self.settings.service_name,
            "checks": checks,
            "consumers": [
                {"group": c.group, "consumer": c.consumer, "handled": c.stats.handled,
                 "dead_lettered": c.stats.dead_lettered, "reclaimed": c.stats.reclaimed,
                 "failed": c.stats.failed, "retried": c.stats.retried, "errors": c.stats.errors}
                for c in self.consumers
            ],
        }


    async def ready(self, *, smtp: bool = False) -> dict[str, Any]:
        """Ready to do its work (not only alive): Redis answers PING, the database SELECT 1,
        the SMTP relay a NOOP (`smtp`: notify's mail is its work), and every consumer of the
        service runs. Each check's status; what is wrong is named, never a secret."""
        checks = (await self.health())["checks"]
        if smtp:
            try:
                await asyncio.wait_for(smtp_noop(self.settings.smtp_url), READY_TIMEOUT_S)
                checks["smtp"] = "ok"
            except Exception as e:
                checks["smtp"] = f"error: {type(e).__name__}"
        running = {id(c) for c in self.consumers}
        tasks = [task for worker, task in self.workers._items if id(worker) in running]
        if not tasks:
            checks["consumer"] = "error: not started"
        elif any(t.done() for t in tasks):
            checks["consumer"] = "error: stopped"
        else:
            checks["consumer"] = "ok"
        failing = sorted(k for k, v in checks.items() if v != "ok")
        return {"status": "ready" if not failing else "not ready", "service": self.settings.service_name,
                "checks": checks, "failing": failing}


READY_TIMEOUT_S = 2.0


async def smtp_noop(url: str) -> None:
    """Connect to the relay of SMTP_URL (TLS as the scheme says), NOOP and QUIT; no login."""
    from urllib.parse import urlparse

    import aiosmtplib

    u = urlparse(url)
    smtp = aiosmtplib.SMTP(hostname=u.hostname or "127.0.0.1", port=u.port or (465 if u.scheme == "smtps" else 25),
                           use_tls=u.scheme == "smtps", start_tls=u.scheme == "smtp+starttls",
                           timeout=READY_TIMEOUT_S)
    await smtp.connect()
    try:
        await smtp.noop()
        with suppress(Exception):
            await smtp.quit()
    finally:
        smtp.close()


async def _until_ready(what: str, action: Callable[[], Awaitable[Any]], timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    delay = 0.2
    while True:
        try:
            await action()
            return
        except Exception as e:
            if loop.time() > deadline:
                raise
            log.warning("waiting for %s: %s: %s", what, type(e).__name__, e)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)


def health_router(*, smtp: bool = False) -> APIRouter:
    """/health (alive) and /ready; `smtp`: /ready also checks the mail relay."""
    router = APIRouter()

    # Both answer 503 when something is wrong: documented, so a client (and the fuzzer) expects it.
    not_ok: dict[int | str, dict[str, Any]] = {
        503: {"description": "Not healthy / not ready: the report names what is failing"}}

    @router.get("/health", tags=["health"], responses=not_ok)
    async def health(request: Request) -> JSONResponse:
        report = await request.app.state.runtime.health()
        return JSONResponse(report, status_code=200 if report["status"] == "ok" else 503)

    @router.get("/ready", tags=["health"], responses=not_ok)
    async def ready(request: Request) -> JSONResponse:
        """Ready (Redis, database, SMTP for notify, the consumer running): 200, or 503 naming
        what is wrong. A process still starting has no runtime yet: not ready."""
        runtime = getattr(request.app.state, "runtime", None)
        if runtime is None:
            return JSONResponse({"status": "not ready", "failing": ["starting"], "checks": {}}, status_code=503)
        report = await runtime.ready(smtp=smtp)
        return JSONResponse(report, status_code=200 if not report["failing"] else 503)

    return router
