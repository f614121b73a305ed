"""The application factory: settings in, a FastAPI app with the resolver beside it out.

Every background task (resolver, delivery worker, the scheduled watchdogs and heartbeat)
is started and stopped here, in the lifespan, and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from signoff import __version__, store
from signoff.answers import Health
from signoff.api import router
from signoff.db import Database
from signoff.http import BodyLimit, CountHTTP, install_error_handlers
from signoff.listener import ChannelListener, listen_dsn
from signoff.logs import get_logger
from signoff.mcp.served import McpEndpoint
from signoff.metrics import Metrics
from signoff.notify.channels import build_senders, http_client
from signoff.notify.presses import router as presses_router
from signoff.notify.slack_presses import router as slack_router
from signoff.notify.worker import Notifier
from signoff.openapi import documented, install_docs_pages, install_openapi
from signoff.policy import PolicyHolder
from signoff.resolver import Resolver
from signoff.scheduler import background_checks
from signoff.service import Service
from signoff.service_policy import holder_metrics
from signoff.settings import Settings
from signoff.web import install_console

log = get_logger("signoff.app")
# How long the background tasks have, once told to stop, to finish what they are doing.
STOP_GRACE_SECONDS = 5.0


async def stop_tasks(stop: asyncio.Event, tasks: list[asyncio.Task[Any]]) -> None:
    """Tell the background tasks to stop and wait for them; cancel one only if it is still
    busy after ``STOP_GRACE_SECONDS``.

    Each loop ends on ``stop`` and hands its pooled connections back on its way out.
    Cancelling at once would land in the middle of that hand-back: the pool's reset
    (a rollback) is interrupted and logged as an error, the connection left broken."""
    stop.set()
    if not tasks:
        return
    _, busy = await asyncio.wait(tasks, timeout=STOP_GRACE_SECONDS)
    for task in busy:
        log.warning("task_stop_overdue", task=task.get_name(), grace_seconds=STOP_GRACE_SECONDS)
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def create_app(
    settings: Settings,
    *,
    db: Database | None = None,
    metrics: Metrics | None = None,
    run_resolver: bool = True,
    run_notifier: bool | None = None,
    run_watchdog: bool | None = None,
    policy: PolicyHolder | None = None,
    demo: bool = False,
) -> FastAPI:
    """Build the app. The resolver, the delivery worker and the watchdogs run inside it
    unless ``run_resolver`` (and ``run_notifier``, ``run_watchdog``, by default the same)
    is false. The policy file (``policy``, else ``SIGNOFF_POLICY_FILE``) is read here: a
    broken one raises ``PolicyError``; the lifespan re-reads it when it changes. With
    ``demo``, a simulated automation keeps asking (``signoff.demo``)."""
    notifying = run_resolver if run_notifier is None else run_notifier
    watching = run_resolver if run_watchdog is None else run_watchdog
    database = db or Database.from_settings(settings)
    meters = metrics or Metrics()
    rules = policy or PolicyHolder(settings.policy_file)
    rules.on_change = holder_metrics(meters)
    if rules.enabled and rules.policy is None:
        rules.load()
    holder_metrics(meters)(rules)
    service = Service(database, settings, meters, rules)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        listening: asyncio.Task[None] | None = None
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
        if rules.enabled:
            tasks.append(asyncio.create_task(rules.watch(stop), name="signoff-policy-reload"))
        # The console's live pages hear of what other replicas created (one read per server).
        tasks.append(asyncio.create_task(service.watch_changes(stop), name="signoff-changes"))
        if demo:
            from signoff.demo import keep_asking

            tasks.append(asyncio.create_task(keep_asking(service, stop), name="signoff-demo"))
        if database.is_postgres:  # waiters and the token cache hear of other replicas' writes
            listener = ChannelListener(
                listen_dsn(settings.database_url), store.CHANGED_CHANNEL,
                service.heard, service.listening_again, name="waiters")
            # Outside ``tasks``: it holds no pooled connection, so it is simply cancelled.
            listening = asyncio.create_task(listener.run(), name="signoff-waiters-listen")
        log.info("serve_started", host=settings.host, port=settings.port,
                 database=database.engine.dialect.name, resolver=run_resolver,
                 notifier=notifying,
                 # signoff.launch: glibc's for a long-running server, unless set otherwise
                 allocator=os.environ.get("PYTHONMALLOC", "pymalloc"))
        try:
            yield
        finally:
            service.waiters.close()
            service.changes.close()
            if listening is not None:
                listening.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listening
            await stop_tasks(stop, tasks)
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
        docs_url=None,  # served by install_docs_pages, without a CDN
        redoc_url=None,
    )
    install_openapi(app)
    app.state.settings = settings
    app.state.service = service
    app.state.http = None
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(presses_router)
    app.include_router(slack_router)
    app.router.routes.append(mcp.route)  # the MCP tools, for AI agents
    install_console(app)  # the web console, under /ui/
    app.add_middleware(BodyLimit)
    app.add_middleware(CountHTTP, counter=meters.http_requests)

    @app.get("/healthz", tags=["operations"], **documented(Health, bearer=False))
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/metrics", tags=["operations"], response_class=Response, responses={
        200: {"description": "Prometheus text exposition.",
              "content": {"text/plain": {"schema": {"type": "string"}}}}})
    async def metrics_text() -> Response:
        """Prometheus text exposition."""
        return Response(generate_latest(meters.registry), media_type=CONTENT_TYPE_LATEST)

    install_docs_pages(app)

    return app

