"""The application factory: settings in, a FastAPI app with the resolver beside it out.

Every background task (resolver, delivery worker, the scheduled watchdogs and heartbeat)
is started and stopped here, in the lifespan, and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from signoff import __version__, store
from signoff.api import router
from signoff.db import Database
from signoff.http import BodyLimit, CountHTTP, install_error_handlers
from signoff.listener import ChannelListener, listen_dsn
from signoff.logs import get_logger
from signoff.mcp.served import McpEndpoint
from signoff.metrics import Metrics
from signoff.notify.channels import build_senders, http_client
from signoff.notify.presses import router as presses_router
from signoff.notify.worker import Notifier
from signoff.resolver import Resolver
from signoff.scheduler import background_checks
from signoff.service import Service
from signoff.settings import Settings

log = get_logger("signoff.app")


def create_app(
    settings: Settings,
    *,
    db: Database | None = None,
    metrics: Metrics | None = None,
    run_resolver: bool = True,
    run_notifier: bool | None = None,
    run_watchdog: bool | None = None,
) -> FastAPI:
    """Build the app. The resolver, the delivery worker and the watchdogs run inside it
    unless ``run_resolver`` (and ``run_notifier``, ``run_watchdog``, by default the same)
    is false."""
    notifying = run_resolver if run_notifier is None else run_notifier
    watching = run_resolver if run_watchdog is None else run_watchdog
    database = db or Database.from_settings(settings)
    meters = metrics or Metrics()
    service = Service(database, settings, meters)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks: list[asyncio.Task[Any]] = []
        client = http_client()
        app.state.http = client
        if notifying:
            senders = build_senders(database, settings, client)
            notifier = Notifier(database, settings, meters, senders)
            service.notifier = notifier
            tasks.append(asyncio.create_task(notifier.run(stop), name="signoff-notify"))
        if run_resolver:
            resolver = Resolver(database, settings, meters)
            service.resolver = resolver
            tasks.append(asyncio.create_task(resolver.run(stop), name="signoff-resolver"))
        if watching:
            scheduler = background_checks(database, settings, meters)
            tasks.append(asyncio.create_task(scheduler.run(stop), name="signoff-scheduler"))
        if database.is_postgres:  # long-poll waiters hear of other replicas' decisions
            listener = ChannelListener(
                listen_dsn(settings.database_url), store.ENDED_CHANNEL,
                service.waiters.heard, service.waiters.wake_all, name="waiters")
            tasks.append(asyncio.create_task(listener.run(), name="signoff-waiters-listen"))
        log.info("serve_started", host=settings.host, port=settings.port,
                 database=database.engine.dialect.name, resolver=run_resolver,
                 notifier=notifying)
        try:
            yield
        finally:
            service.waiters.close()
            stop.set()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            service.notifier = service.resolver = None
            await client.aclose()
            if db is None:
                await database.dispose()

    mcp = McpEndpoint()
    app = FastAPI(
        title="signoff",
        version=__version__,
        description="A human sign-off gate in front of automated incident remediation.",
        lifespan=mcp.around(lifespan),
    )
    app.state.settings = settings
    app.state.service = service
    app.state.http = None
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(presses_router)
    app.router.routes.append(mcp.route)  # the MCP tools, for AI agents
    app.add_middleware(BodyLimit)
    app.add_middleware(CountHTTP, counter=meters.http_requests)

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/metrics", tags=["operations"])
    async def metrics_text() -> Response:
        """Prometheus text exposition."""
        return Response(generate_latest(meters.registry), media_type=CONTENT_TYPE_LATEST)

    return app


class Server(uvicorn.Server):
    """uvicorn's server, telling the app's long-poll waiters the moment shutdown begins:
    they answer with the state they read then, instead of holding the shutdown up (uvicorn
    waits for every open answer before it runs the lifespan's shutdown)."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        service = getattr(getattr(self.config.app, "state", None), "service", None)
        if isinstance(service, Service):
            service.waiters.close()
        await super().shutdown(sockets)
