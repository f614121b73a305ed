"""The ``signoff`` command: serve, migrate, make tokens, run the resolver or the delivery
worker alone."""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from signoff.cli_client import add_client_commands
from signoff.cli_people import group_app, link_app, token_app
from signoff.cli_policy import add_policy_commands
from signoff.cli_support import (
    Options,
    err,
    load_settings,
    run_on_database,
    run_on_service,
    start_demo,
)
from signoff.db import Database
from signoff.migrate import upgrade

app = typer.Typer(
    help="signoff: a human sign-off gate in front of automated incident remediation.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.add_typer(group_app, name="group")
app.add_typer(link_app, name="link")
add_client_commands(app)
add_policy_commands(app)


@app.callback()
def main_options(
    ctx: typer.Context,
    database_url: Annotated[
        str | None, typer.Option(help="SQLite or PostgreSQL URL [SIGNOFF_DATABASE_URL].")
    ] = None,
    default_ttl: Annotated[
        str | None, typer.Option(help="Deadline when a request gives none, e.g. 15m "
                                      "[SIGNOFF_DEFAULT_TTL].")
    ] = None,
    max_ttl: Annotated[
        str | None, typer.Option(help="Longest deadline a request may ask for, e.g. 7d "
                                      "[SIGNOFF_MAX_TTL].")
    ] = None,
    display_tz: Annotated[
        str | None, typer.Option(help="IANA time zone for reports and pages "
                                      "[SIGNOFF_DISPLAY_TZ].")
    ] = None,
    db_pool_size: Annotated[
        int | None, typer.Option(help="Database connections per process [SIGNOFF_DB_POOL_SIZE].")
    ] = None,
    resolver_backstop: Annotated[
        str | None, typer.Option(help="Longest the resolver sleeps, e.g. 2s "
                                      "[SIGNOFF_RESOLVER_BACKSTOP].")
    ] = None,
    resolver_batch_size: Annotated[
        int | None, typer.Option(help="Requests expired per transaction "
                                      "[SIGNOFF_RESOLVER_BATCH_SIZE].")
    ] = None,
    log_level: Annotated[
        str | None, typer.Option(help="debug, info, warning or error [SIGNOFF_LOG_LEVEL].")
    ] = None,
    log_format: Annotated[
        str | None, typer.Option(help="auto, json or console [SIGNOFF_LOG_FORMAT].")
    ] = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show the traceback of a failure too.")
    ] = False,
) -> None:
    """Settings come from SIGNOFF_* variables; a flag overrides its variable."""
    ctx.obj = Options({
        "database_url": database_url, "default_ttl": default_ttl, "max_ttl": max_ttl,
        "display_tz": display_tz, "db_pool_size": db_pool_size,
        "resolver_backstop": resolver_backstop, "resolver_batch_size": resolver_batch_size,
        "log_level": log_level, "log_format": log_format,
    }, verbose)


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Overrides SIGNOFF_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides SIGNOFF_PORT.")] = None,
    demo: Annotated[bool, typer.Option(
        "--demo", help="On an empty database: make demo tokens, incidents and requests, "
                       "and keep asking for sign-off like an automation.")] = False,
) -> None:
    """Migrate the database, then serve the HTTP API and the web console (/ui/) with the
    resolver running."""
    import uvicorn

    from signoff.app import create_app
    from signoff.policy import PolicyError, PolicyHolder
    from signoff.server import GracefulServer

    settings = load_settings(ctx, host=host, port=port)
    rules = PolicyHolder(settings.policy_file)
    try:
        rules.load()
    except PolicyError as exc:
        err.print(f"[bold red]signoff: the policy file {settings.policy_file} is broken[/]")
        for line in exc.errors:
            err.print(f"  {line}", markup=False)
        raise typer.Exit(2) from None

    async def work(db: Database) -> bool | None:
        await upgrade(db)
        if demo and not await start_demo(db, settings):
            return None
        config = uvicorn.Config(
            create_app(settings, db=db, policy=rules, demo=demo), host=settings.host,
            port=settings.port,
            log_config=None, access_log=False, lifespan="on",
        )
        server = GracefulServer(config)
        await server.serve()
        return server.force_exit

    # uvloop's sockets and httptools' parser (chosen by uvicorn when installed) take a
    # good part of the CPU that every call costs the server.
    stopped = run_on_database(ctx, settings, work, creates=True, uvloop=True)
    if stopped is None:
        raise typer.Exit(2)
    if stopped:
        raise typer.Exit(128 + signal.SIGINT)


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context,
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Apply migrations up to REVISION (default: head)."""
    from alembic.util import CommandError

    settings = load_settings(ctx)
    try:
        run_on_database(ctx, settings, lambda db: upgrade(db, revision), creates=True)
    except CommandError as exc:  # an unknown revision, or one behind the database's
        print(f"signoff: cannot upgrade the database {settings.shown_database_url} to "
              f"{revision}: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    err.print(f"database at {revision}")


@app.command()
def resolve(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Drain what is due, then exit.")] = False,
) -> None:
    """Run the resolver alone: expire due requests and close their incidents."""
    from signoff.metrics import Metrics
    from signoff.resolver import Resolver

    settings = load_settings(ctx)

    async def work(db: Database) -> None:
        resolver = Resolver(db, settings, Metrics())
        if once:
            result = await _drain_with_progress(resolver)
            err.print(
                f"expired {result.expired}, incidents resolved {result.incidents_resolved}, "
                f"errors {result.errors}"
            )
            if result.errors:
                raise typer.Exit(1)
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await resolver.run(stop)

    run_on_database(ctx, settings, work)


@app.command()
def notify(
    ctx: typer.Context,
    once: Annotated[bool, typer.Option("--once", help="Deliver what is due, then exit.")] = False,
) -> None:
    """Run the delivery worker alone: send the outbox's notifications, with retries."""
    from signoff.metrics import Metrics
    from signoff.notify.channels import build_senders, http_client
    from signoff.notify.worker import Notifier

    settings = load_settings(ctx)

    async def work(db: Database) -> None:
        async with http_client() as client:
            notifier = Notifier(db, settings, Metrics(), build_senders(db, settings, client))
            if once:
                attempted = await notifier.run_once()
                err.print(f"attempted {attempted} notification(s)")
                return
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await notifier.run(stop)

    run_on_database(ctx, settings, work)


async def _drain_with_progress(resolver: Any) -> Any:
    """One pass; with a progress bar when a person is watching a large backlog."""
    if not sys.stderr.isatty():
        return await resolver.run_pass()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    total = await resolver.count_due()
    if total < 1000:
        return await resolver.run_pass()
    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        TimeRemainingColumn(), console=err,
    ) as progress:
        task = progress.add_task("expiring", total=total)
        return await resolver.run_pass(on_batch=lambda n: progress.advance(task, n))


@app.command()
def doctor(
    ctx: typer.Context,
    grace: Annotated[
        float | None,
        typer.Option(help="Seconds a due request may stay pending (default: the backstop)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
) -> None:
    """Check the lifecycle's invariants on a live database; exit 1 on any violation."""
    import json
    from datetime import timedelta

    settings = load_settings(ctx)
    allowed = settings.resolver_backstop if grace is None else timedelta(seconds=grace)

    findings = run_on_service(ctx, settings, lambda s: s.doctor(allowed))
    if as_json:
        print(json.dumps([
            {"check": f.check, "description": f.description, "violations": f.count,
             "samples": f.samples} for f in findings
        ], indent=2))
    else:
        from rich.table import Table

        out = Console()
        table = Table("check", "violations", "invariant")
        for f in findings:
            table.add_row(f.check, "[green]0[/]" if f.ok else f"[bold red]{f.count}[/]",
                          f.description)
        out.print(table)
        for f in findings:
            for sample in f.samples:
                out.print(f"  [red]{f.check}[/]: {sample}", markup=True, highlight=False)
    if any(not f.ok for f in findings):
        raise typer.Exit(1)


@app.command()
def watchdog(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the checks as JSON.")] = False,
) -> None:
    """Run the watchdogs once on the database; exit 1 when any finds something."""
    import json

    settings = load_settings(ctx)
    checks = run_on_service(ctx, settings, lambda s: s.watchdog())
    if as_json:
        print(json.dumps({"checks": [c.as_json() for c in checks]}, indent=2))
    else:
        from rich.table import Table

        out = Console()
        table = Table("check", "found", "name", "threshold")
        for c in checks:
            found = ("[dim]off[/]" if not c.applies
                     else f"[bold red]{c.count}[/]" if c.count else "[green]0[/]")
            table.add_row(c.id, found, c.name, c.threshold)
        out.print(table)
        for c in checks:
            for finding in c.findings:
                subject = next((f"{k} {v}" for k, v in finding.items() if k != "detail"), "")
                out.print(f"  [red]{c.id}[/] {subject}: {finding['detail']}", markup=True,
                          highlight=False)
            if c.count > len(c.findings):
                out.print(f"  [red]{c.id}[/] … and {c.count - len(c.findings)} more")
    if any(c.count for c in checks):
        raise typer.Exit(1)


@app.command()
def report(
    ctx: typer.Context,
    day: Annotated[
        str | None,
        typer.Option(help="The local day, YYYY-MM-DD, in the display time zone "
                          "(default: today, so far)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Print the daily report of a local day: dispositions, rates, expiry lateness, and the
    watchdogs' findings now."""
    import json

    from signoff.errors import FutureDay
    from signoff.report import parse_day

    settings = load_settings(ctx)
    try:
        wanted = None if day is None else parse_day(day)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--day'") from None

    try:
        made = run_on_service(ctx, settings, lambda s: s.report(wanted))
    except FutureDay as exc:
        raise typer.BadParameter(exc.message, param_hint="'--day'") from None
    if as_json:
        print(json.dumps(made.as_json(), indent=2, ensure_ascii=False))
    else:
        print(made.as_text())


@app.command()
def mcp(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(
        envvar="SIGNOFF_URL", show_envvar=False,
        help="The server's URL [SIGNOFF_URL] (default http://127.0.0.1:8700).")] = None,
    token: Annotated[str | None, typer.Option(
        envvar="SIGNOFF_TOKEN", show_envvar=False,
        help="The API token the tools act with [SIGNOFF_TOKEN].")] = None,
) -> None:
    """Serve the MCP tools over stdio, for a local AI agent, acting through the HTTP API."""
    from signoff.mcp.stdio import run

    flags = ctx.obj.settings if isinstance(ctx.obj, Options) else {}
    raise typer.Exit(run(url, token, log_level=flags.get("log_level")))


def main() -> None:
    app()
