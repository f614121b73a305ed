"""Migrations: an empty database upgraded to head matches the models, on both backends."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import create_async_engine

from signoff.db import Database
from signoff.migrate import alembic_config, current_revision, upgrade
from signoff.settings import Settings, normalise_database_url
from signoff.tables import metadata
from tests.conftest import POSTGRES_URL, REQUIRE_POSTGRES

HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


async def _autocommit(url: str, statement: str) -> None:
    engine = create_async_engine(normalise_database_url(url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/empty.db"
        return
    name = f"signoff_migrations_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    try:
        asyncio.run(_autocommit(POSTGRES_URL, f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # the server is not there
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required but unreachable at {POSTGRES_URL}: {exc}")
        pytest.skip(f"no PostgreSQL at {POSTGRES_URL}: {exc}")
    yield POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    asyncio.run(_autocommit(POSTGRES_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _differences(sync_conn: sa.Connection, target: sa.MetaData = metadata) -> list[Any]:
    context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
    with _expressions_unreflected():
        return list(compare_metadata(context, target))


@contextlib.contextmanager
def _expressions_unreflected() -> Iterator[None]:
    """SQLAlchemy does not reflect an index on an expression on SQLite (precedent's, on
    lower(action)), and says so; ``test_the_partial_indexes_exist`` checks those."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression")
        warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression")
        yield


def _drifted() -> sa.MetaData:
    """The models with one column wider and one more: what a forgotten migration looks like."""
    drifted = sa.MetaData(naming_convention=metadata.naming_convention)
    for table in metadata.sorted_tables:
        copy = table.to_metadata(drifted)
        if table.name == "approval_requests":
            copy.append_column(sa.Column("forgotten", sa.Text(), nullable=True))
            copy.c.risk.type = sa.String(64)
    return drifted


def _kind(difference: Any) -> str:
    first = difference[0] if isinstance(difference, list) else difference
    return str(first[0])


def _schema(sync_conn: sa.Connection) -> dict[str, Any]:
    with _expressions_unreflected():
        return _reflected(sync_conn)


def _reflected(sync_conn: sa.Connection) -> dict[str, Any]:
    inspector = sa.inspect(sync_conn)
    return {
        table: {
            "columns": [(c["name"], str(c["type"]), c["nullable"])
                        for c in inspector.get_columns(table)],
            "indexes": sorted((i["name"] or "", tuple(i["column_names"]))
                              for i in inspector.get_indexes(table)),
            "unique": sorted(u["name"] or "" for u in inspector.get_unique_constraints(table)),
        }
        for table in sorted(inspector.get_table_names())
    }


async def test_upgrade_an_empty_database_to_head_without_drift(empty_url: str) -> None:
    db = Database.from_settings(Settings(database_url=empty_url))
    try:
        assert await current_revision(db) is None
        await upgrade(db)
        assert await current_revision(db) == HEAD
        async with db.begin(readonly=True) as conn:
            assert await conn.run_sync(_differences) == []
            # The comparison can fail: a drifted model is noticed, type changes included.
            found = await conn.run_sync(_differences, _drifted())
            assert {_kind(d) for d in found} == {"add_column", "modify_type"}
            schema = await conn.run_sync(_schema)
        assert set(schema) == {t.name for t in metadata.sorted_tables} | {"alembic_version"}

        await upgrade(db)  # a second upgrade finds nothing to do
        assert await current_revision(db) == HEAD
        async with db.begin(readonly=True) as conn:
            assert await conn.run_sync(_schema) == schema
            versions = (await conn.execute(sa.text("SELECT version_num FROM alembic_version")))
            assert versions.scalars().all() == [HEAD]
    finally:
        await db.dispose()


async def test_the_partial_indexes_exist(empty_url: str) -> None:
    """compare_metadata does not look at index predicates; check the ones rules rely on."""
    db = Database.from_settings(Settings(database_url=empty_url))
    try:
        await upgrade(db)
        async with db.begin(readonly=True) as conn:
            if db.is_postgres:
                sql = "SELECT indexname AS name, indexdef AS body FROM pg_indexes"
            else:
                sql = "SELECT name, sql AS body FROM sqlite_master WHERE type = 'index'"
            rows = {
                # PostgreSQL spells predicates as (((status)::text = 'open'::text) AND ...)
                r.name: re.sub(r"::\w+|[()]", "", r.body)
                for r in await conn.execute(sa.text(sql)) if r.body
            }
        assert "status = 'open'" in rows["uq_incidents_open_fingerprint"]
        assert "fingerprint IS NOT NULL" in rows["uq_incidents_open_fingerprint"]
        assert "status = 'pending'" in rows["ix_approval_requests_pending_deadline"]
        assert "idempotency_key IS NOT NULL" in rows["uq_approval_requests_idempotency"]
        for key in ("fingerprint", "service"):  # precedent: by key, action and time
            body = rows[f"ix_approval_requests_human_{key}"].lower()
            assert f"{key}, loweraction, decided_at" in body, body
            assert "'human_approved'" in body and "'human_rejected'" in body, body
            if db.is_postgres:  # all the policy reads, so an index-only scan (0009)
                assert "include disposition, outcome_succeeded, action" in body, body
        if db.is_postgres:
            body = rows["ix_approval_requests_auto_service"]
            assert "service, decided_at INCLUDE decided_by" in body, body
        for name in ("uq_incidents_open_fingerprint", "uq_approval_requests_idempotency"):
            assert "UNIQUE" in rows[name].upper()
    finally:
        await db.dispose()


async def test_the_requests_table_is_vacuumed_by_dead_rows_on_postgres(empty_url: str) -> None:
    """Migration 0002: autovacuum after a fixed number of dead rows, whatever the history."""
    db = Database.from_settings(Settings(database_url=empty_url))
    try:
        await upgrade(db)
        if not db.is_postgres:
            return  # SQLite has no autovacuum; the migration does nothing there
        async with db.begin(readonly=True) as conn:
            options = (await conn.execute(sa.text(
                "SELECT reloptions FROM pg_class WHERE relname = 'approval_requests'"
            ))).scalar_one()
        assert set(options) == {"autovacuum_vacuum_scale_factor=0",
                                "autovacuum_vacuum_threshold=1000"}
    finally:
        await db.dispose()
