"""What the ``signoff`` commands that work on the database share: settings from flags and
variables, the database run and its failures told in one line with an exit code."""

from __future__ import annotations

import asyncio
import sys
import traceback
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy.exc import DBAPIError

from signoff.db import (
    Database,
    is_login_refused,
    is_missing_database,
    is_not_a_database,
    is_unavailable,
    require_existing,
)
from signoff.errors import DatabaseNotReady
from signoff.logs import configure_logging
from signoff.migrate import check_schema
from signoff.service import Service
from signoff.settings import Settings

T = TypeVar("T")
err = Console(stderr=True)


@dataclass(frozen=True)
class Options:
    """The global options: settings given as flags, and how much to say on a failure."""

    settings: dict[str, Any]
    verbose: bool = False


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


async def start_demo(db: Database, settings: Settings) -> bool:
    """Fill an empty database for ``serve --demo`` and print its tokens and address;
    False (and a line on stderr) if the database holds anything: nothing is changed."""
    from signoff.demo import seed
    from signoff.metrics import Metrics

    service = Service(db, settings, Metrics())
    if not await service.is_empty():
        print(f"signoff: the demo needs an empty database and {settings.shown_database_url} "
              "is not: nothing was changed. Point SIGNOFF_DATABASE_URL at a new file, e.g. "
              "sqlite:///./demo.db", file=sys.stderr, flush=True)
        return False
    tokens = await seed(service)
    where = (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/")
    lines = ["signoff demo: a simulated automation asks for sign-off every 40 s.",
             f"Open {where}/ui/ and sign in with a token:"]
    lines += [f"  {name:<11} {secret}" for name, secret in tokens.items()]
    lines.append("(alice and bob approve; remediator is the automation; admin sees all)")
    print("\n".join(lines), flush=True)
    return True
