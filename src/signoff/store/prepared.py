"""Statements of the hot paths: built once with SQLAlchemy, and on PostgreSQL, inside
``Database.run``, compiled once and run by asyncpg itself.

Each call through SQLAlchemy's asyncio layer costs a greenlet, an execution context and
a result object: most of a create's or a decision's CPU, more than the statement's own
time in PostgreSQL. The statement is still defined once, as SQLAlchemy Core; its SQL, the
order of its parameters and their type processing come from SQLAlchemy's compiler and
types, so both paths send the same SQL with the same values. Elsewhere (SQLite, or a
transaction that ``Database.begin`` opened) the same statement runs through SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff.db import DRIVER_ERRORS, DRIVER_KEY, driver_error

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # the bind parameters, in their positional order
    defaults: dict[str, Any]  # values bound in the statement itself (literals)
    binds: tuple[Processor, ...]
    columns: tuple[tuple[str, Processor], ...]


class Prepared:
    """A Core statement with named bind parameters, run with each call's values."""

    def __init__(self, statement: Any) -> None:
        self.statement = statement
        self._compiled: _Compiled | None = None

    async def rows(
        self, conn: AsyncConnection, params: Mapping[str, Any]
    ) -> list[Mapping[str, Any]]:
        """Every row, as mappings of column name to value."""
        driver = conn.info.get(DRIVER_KEY)
        if driver is None:
            result = await conn.execute(self.statement, dict(params))
            if not result.returns_rows:
                return []
            return list(result.mappings().all())  # type: ignore[arg-type]
        compiled = self._compiled or self._compile(conn.dialect)
        args = [compiled.defaults.get(name) for name in compiled.names]
        for i, (name, process) in enumerate(zip(compiled.names, compiled.binds, strict=True)):
            value = params[name] if name in params else args[i]
            args[i] = value if process is None else process(value)
        columns = compiled.columns
        try:
            if not columns:  # nothing returned: no rows to decode
                await driver.execute(compiled.sql, *args)
                return []
            records = await driver.fetch(compiled.sql, *args)
        except DRIVER_ERRORS as exc:
            raise driver_error(exc, compiled.sql, args) from exc
        return [
            {name: value if process is None else process(value)
             for (name, process), value in zip(columns, record.values(), strict=True)}
            for record in records
        ]

    async def first(
        self, conn: AsyncConnection, params: Mapping[str, Any]
    ) -> Mapping[str, Any] | None:
        found = await self.rows(conn, params)
        return found[0] if found else None

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled = self.statement.compile(dialect=dialect)
        names = tuple(compiled.positiontup or ())
        binds = tuple(_bind_processor(compiled.binds[name].type, dialect) for name in names)
        exported = getattr(self.statement, "exported_columns", ())
        columns = tuple((column.key, _result_processor(column.type, dialect))
                        for column in exported)
        defaults = {name: bind.effective_value for name, bind in compiled.binds.items()
                    if not bind.required}
        self._compiled = _Compiled(compiled.string, names, defaults, binds, columns)
        return self._compiled


def _bind_processor(type_: sa.types.TypeEngine[Any], dialect: Dialect) -> Processor:
    return type_.dialect_impl(dialect).bind_processor(dialect)


def _result_processor(type_: sa.types.TypeEngine[Any], dialect: Dialect) -> Processor:
    return type_.dialect_impl(dialect).result_processor(dialect, None)
