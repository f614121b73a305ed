"""The ``signoff`` command: serve, migrate, make tokens, run the resolver or the delivery
worker alone."""

from __future__ import annotations

import asyncio
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy.exc import DBAPIError

from signoff.cli_client import add_client_commands
from signoff.cli_policy import add_policy_commands
from signoff.db import (
    Database,
    is_login_refused,
    is_missing_database,
    is_not_a_database,
    is_unavailable,
    require_existing,
)
from signoff.errors import DatabaseNotReady
from signoff.lifecycle import Role
from signoff.logs import configure_logging
from signoff.migrate import check_schema, upgrade
from signoff.service import Service
from signoff.settings import Settings

T = TypeVar("T")
app = typer.Typer(
    help="signoff: a human sign-off gate in front of automated incident remediation.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
add_client_commands(app)
add_policy_commands(app)
err = Console(stderr=True)


@dataclass(frozen=True)
class Options:
    """The global options: settings given as flags, and how much to say on a failure."""

    settings: dict[str, Any]
    verbose: bool = False


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


def load_settings(ctx: typer.Context, **overrides: Any) -> Settings:
    """Validate settings once, at start; a bad value is a clear message and exit code 2."""
    flags = ctx.obj.settings if isinstance(ctx.obj, Options) else {}
    given = {k: v for k, v in {**flags, **overrides}.items() if v is not None}
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        err.print("[bold red]signoff: invalid configuration[/]")
        for e in exc.errors():
            field = ".".join(str(p) for p in e["loc"])
            where = f"SIGNOFF_{field.upper()}: " if field else ""
            err.print(f"  {where}{e['msg']}", markup=False)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level, settings.log_format)
    return settings


def run_async(factory: Callable[[], Coroutine[Any, Any, T]], *, uvloop: bool = False) -> T:
    """Run ``factory()``; with ``uvloop``, on uvloop's event loop when it is installed."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if uvloop:
        try:
            import uvloop as fast
        except ImportError:  # not on every platform: asyncio's own loop does the same work
            pass
        else:
            loop_factory = fast.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(factory())


def explain(exc: BaseException, settings: Settings) -> tuple[int, str] | None:
    """The exit code and the one line that tell a person what went wrong and what to do,
    for a failure that is no bug; None for anything else."""
    url = settings.shown_database_url
    if isinstance(exc, DatabaseNotReady):
        return 2, f"cannot use the database {url}: {exc.message}; {exc.advice}"
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    why = next(iter(str(cause).strip().splitlines()), "") or type(cause).__name__
    if is_missing_database(exc):
        return 2, f"cannot use the database {url}: {why}; create it, or set SIGNOFF_DATABASE_URL"
    if is_not_a_database(exc) or is_login_refused(exc):
        return 2, f"cannot use the database {url}: {why}; set SIGNOFF_DATABASE_URL"
    if is_unavailable(exc):
        return 1, f"cannot use the database {url}: {why}"
    return None


@contextmanager
def expected_failures(ctx: typer.Context, settings: Settings) -> Iterator[None]:
    """Turn a failure a person can act on (see ``explain``) into one line on stderr and
    its exit code; the traceback only with ``--verbose``. Anything else goes on up."""
    try:
        yield
    except Exception as exc:
        explained = explain(exc, settings)
        if explained is None:
            raise
        code, line = explained
        verbose = isinstance(ctx.obj, Options) and ctx.obj.verbose
        if verbose:
            traceback.print_exception(exc)
        elif code == 1:
            line += " (signoff -v shows the traceback)"
        print(f"signoff: {line}", file=sys.stderr, flush=True)
        raise typer.Exit(code) from None


def run_on_database(
    ctx: typer.Context,
    settings: Settings,
    work: Callable[[Database], Awaitable[T]],
    *,
    creates: bool = False,
    uvloop: bool = False,
) -> T:
    """``work`` on the configured database. Only a command that ``creates`` (``serve``,
    ``db upgrade``: they migrate it themselves) may be given a database that does not
    exist or is not migrated; any other refuses it before anything is written."""

    async def go() -> T:
        db = Database.from_settings(settings)
        try:
            if not creates:
                await check_schema(db, settings.sqlite_file)
            return await work(db)
        finally:
            await db.dispose()

    with expected_failures(ctx, settings):
        if not creates:
            require_existing(settings)
        return run_async(go, uvloop=uvloop)


def run_on_service(
    ctx: typer.Context, settings: Settings, work: Callable[[Service], Awaitable[T]]
) -> T:
    """``work`` on the operations of the configured database (no background tasks)."""
    from signoff.metrics import Metrics

    return run_on_database(ctx, settings, lambda db: work(Service(db, settings, Metrics())))


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Overrides SIGNOFF_HOST.")] = None,
    port: Annotated[int | None, typer.Option(help="Overrides SIGNOFF_PORT.")] = None,
) -> None:
    """Migrate the database, then serve the HTTP API with the resolver running."""
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

    async def work(db: Database) -> bool:
        await upgrade(db)
        config = uvicorn.Config(
            create_app(settings, db=db, policy=rules), host=settings.host, port=settings.port,
            log_config=None, access_log=False, lifespan="on",
        )
        server = GracefulServer(config)
        await server.serve()
        return server.force_exit

    # uvloop's sockets and httptools' parser (chosen by uvicorn when installed) take a
    # good part of the CPU that every call costs the server.
    if run_on_database(ctx, settings, work, creates=True, uvloop=True):
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


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The principal: shown as requested_by/decided_by.")],
    role: Annotated[Role, typer.Option(help="requester, approver, viewer or admin.")],
) -> None:
    """Create an API token and print it (shown only this once) as the last line."""
    from signoff.metrics import Metrics

    if not name.strip() or len(name) > 200:
        err.print("[red]NAME must be 1 to 200 characters[/]")
        raise typer.Exit(2)
    settings = load_settings(ctx)

    secret = run_on_database(
        ctx, settings, lambda db: Service(db, settings, Metrics()).create_token(name, role))
    err.print(f"token for [bold]{name}[/] ({role.value}); it is stored hashed, keep it now:")
    print(secret, flush=True)


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
