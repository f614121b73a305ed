"""Schema migrations with Alembic, one history for SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.pool import NullPool

from signoff.db import Database
from signoff.errors import DatabaseNotMigrated, DatabaseTooNew

MIGRATIONS = Path(__file__).parent / "migrations"
# Replicas starting together on PostgreSQL take turns: the second finds nothing to do.
_ADVISORY_LOCK = 0x5160FF


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


async def upgrade(db: Database, revision: str = "head") -> None:
    """Bring the schema to ``revision`` in one transaction."""
    cfg = alembic_config()

    def run(sync_conn: sa.Connection) -> None:
        if sync_conn.dialect.name == "postgresql":
            sync_conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_LOCK})
        _refuse_unknown(MigrationContext.configure(sync_conn).get_current_revision())
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, revision)

    async with db.begin() as conn:
        await conn.run_sync(run)


async def current_revision(db: Database) -> str | None:
    def read(sync_conn: sa.Connection) -> str | None:
        return MigrationContext.configure(sync_conn).get_current_revision()

    async with db.begin(readonly=True) as conn:
        return await conn.run_sync(read)


def _sqlite_revision(path: Path) -> str | None:
    """The revision of an SQLite file, read on a read-only connection of its own: the
    engine's connections would switch the file to WAL mode, a change to a database that
    may well not be signoff's."""
    uri = f"{path.absolute().as_uri()}?mode=ro"
    engine = sa.create_engine(
        "sqlite://", creator=lambda: sqlite3.connect(uri, uri=True), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


async def check_schema(db: Database, sqlite_file: Path | None) -> None:
    """Refuse a database whose schema is not the newest this signoff knows: never migrated,
    behind, or migrated by a newer signoff. Every command but ``serve`` and ``db upgrade``
    checks instead of migrating, so that a wrong URL is never quietly given a schema.
    ``sqlite_file``, the database's file on SQLite, is only read."""
    if sqlite_file is None:
        current = await current_revision(db)
    else:
        current = await asyncio.to_thread(_sqlite_revision, sqlite_file)
    _refuse_unknown(current)
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if current is None:
        raise DatabaseNotMigrated("it is not migrated (it has no signoff schema)")
    if current != head:
        raise DatabaseNotMigrated(
            f"it is not migrated to the newest schema (it is at revision {current}, "
            f"the newest is {head})"
        )


def _refuse_unknown(current: str | None) -> None:
    """Refuse a schema at a revision this signoff does not know: a newer one migrated it."""
    script = ScriptDirectory.from_config(alembic_config())
    if current is not None and current not in {r.revision for r in script.walk_revisions()}:
        raise DatabaseTooNew(
            f"its schema is at revision {current}, which this signoff does not know")
