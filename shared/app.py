"""The one app factory of the three services: the lifespan (migrate, provision streams,
start the broker, wire the service, start its workers and its consumer; stop them in
reverse), operator authentication and the audit of every operator call, error handlers,
health, the operations routes, the AsyncAPI document and what pages share (assets,
language switch, security headers). A service's bootstrap gives only
what is its own (`Service`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse

from shared.audit import install_audit
from shared.events import EventData
from shared.http import ERROR_RESPONSES, install_error_handlers
from shared.metrics import install_metrics
from shared.ops import ops_router
from shared.runtime import Runtime, Worker, health_router
from shared.streams.asyncapi import document
from shared.streams.consumer import BatchHandler
from shared.web.pages import Pages, install_pages


@dataclass
class Wiring:
    """What a service's `wire` hands back once its parts are built on the runtime."""

    state: dict[str, Any]  # what routes read from app.state
    handler: BatchHandler  # the consumer group's batch handler
    workers: Sequence[Worker] = ()  # started in this order (the outbox relay first), stopped in reverse
    on_close: Sequence[Callable[[], Awaitable[None]]] = ()  # after every worker stopped


@dataclass
class Service:
    """One service, as the factory needs it."""

    name: str
    description: str
    migrations: Path
    group: str  # the consumer group it reads as
    reads: Iterable[type[EventData]]  # the event types it handles (for the AsyncAPI document)
    wire: Callable[[Runtime], Awaitable[Wiring]]
    routers: Sequence[APIRouter] = ()
    audit_model: type[Any] | None = None
    install: Callable[[FastAPI], None] | None = None  # service-only middleware or handlers
    templates: Path | None = None  # the service's page templates (the shared layout is found after them)
    reads_list: list[type[EventData]] = field(init=False)

    def __post_init__(self) -> None:
        self.reads_list = list(self.reads)


def service_app(service: Service, settings: Any) -> FastAPI:
    settings.refuse_development_values()  # a known secret never runs in production

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt = Runtime(settings, service.migrations, metrics=app.state.metrics_registry)
        await rt.start()
        wiring = await service.wire(rt)
        app.state.runtime, app.state.settings = rt, settings
        for name, value in wiring.state.items():
            setattr(app.state, name, value)
        for worker in wiring.workers:
            rt.workers.start(worker)
        rt.consume(service.group, wiring.handler, service.reads_list)  # last started, first stopped
        try:
            yield
        finally:
            await rt.close()
            for close in wiring.on_close:
                await close()

    app = FastAPI(title=f"Rujukan {service.name}", version="1", lifespan=lifespan, description=service.description)
    install_error_handlers(app)
    install_pages(app, Pages(service.templates))
    if service.install is not None:
        service.install(app)
    if service.audit_model is not None:
        install_audit(app, service.audit_model)
    install_metrics(app, service.name, service.group)
    app.include_router(health_router(smtp=service.name == "notify"))  # notify's work is mail
    app.include_router(asyncapi_router(service))
    app.include_router(ops_router(), responses=ERROR_RESPONSES)
    for router in service.routers:
        app.include_router(router, responses=ERROR_RESPONSES)
    return app


def asyncapi_router(service: Service) -> APIRouter:
    router = APIRouter()
    spec: dict[str, Any] = {}

    # Like /openapi.json, a description of the service, not one of its operations.
    @router.get("/asyncapi.json", include_in_schema=False)
    async def asyncapi() -> JSONResponse:
        if not spec:
            spec.update(document(service.name, service.group, service.reads_list))
        return JSONResponse(spec)

    return router
