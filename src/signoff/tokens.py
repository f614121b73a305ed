"""The service's token operations: who a bearer token is, and the tokens an admin keeps.

A part of ``Service`` (which inherits it), kept apart to keep each file short. Tokens seen
recently are remembered for a few seconds on PostgreSQL, so that a busy client does not
cost a query per call; revoking a token makes every server forget them at the commit
(``NOTIFY`` on the channel the long-poll waiters listen on), so a revoked token stops
working at once on every replica. On SQLite, one server on one file, every call looks its
token up: such a lookup is a read of a local file, and a ``signoff token revoke`` run
beside the server could not tell it to forget.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from signoff import errors, store
from signoff.db import Database
from signoff.lifecycle import Principal, Role, role_allows
from signoff.logs import get_logger
from signoff.views import iso

T = TypeVar("T")
Work = Callable[[AsyncConnection, datetime], Awaitable[T]]
CACHE_SECONDS = 10.0
CACHE_SIZE = 10_000
log = get_logger("signoff.tokens")


class TokenOperations:
    """Authenticate, create, list and revoke tokens."""

    db: Database
    _principals: dict[str, tuple[float, Principal]]

    async def _read(self, work: Work[T]) -> T:
        raise NotImplementedError

    async def _write(self, work: Work[T]) -> T:
        raise NotImplementedError

    async def authenticate(self, secret: str) -> Principal | None:
        """The principal of a live bearer token, or None."""
        digest = store.hash_token(secret)
        remember = self.db.is_postgres
        hit = self._principals.get(digest) if remember else None
        if hit is not None and time.monotonic() - hit[0] < CACHE_SECONDS:
            return hit[1]
        found = await self._read(lambda conn, now: store.authenticate(conn, now, secret))
        if found is None:
            return None
        principal, token_id, stale = found
        if stale:
            await self.db.run(lambda conn, now: store.touch_token(conn, now, token_id))
        if remember:
            if len(self._principals) >= CACHE_SIZE:
                self._principals.clear()
            self._principals[digest] = (time.monotonic(), principal)
        return principal

    def forget_tokens(self) -> None:
        """Tokens changed (one was revoked): look each one up again."""
        self._principals.clear()

    async def create_token(self, name: str, role: Role) -> str:
        """Store a new token hashed; the only copy of its secret."""
        return await self._write(lambda conn, now: store.create_token(conn, now, name, role))

    async def list_tokens(self, who: Principal | None = None) -> list[dict[str, Any]]:
        """Every token, revoked ones too, never its secret or hash (admin; ``who`` None:
        the database's own user, from the command line)."""
        if who is not None and not role_allows(who.role, Role.ADMIN):
            raise errors.Forbidden(f"this needs the admin role; the token is {who.role}")
        rows = await self._read(lambda conn, now: store.list_tokens(conn))
        return [{"name": r["name"], "role": r["role"], "created_at": iso(r["created_at"]),
                 "last_used_at": iso(r["last_used_at"]), "revoked_at": iso(r["revoked_at"]),
                 "revoked": r["revoked_at"] is not None} for r in rows]

    async def revoke_tokens(self, name: str, who: Principal | None = None) -> int:
        """Revoke every live token of ``name``; ``TokenNotFound`` if it has none."""
        if who is not None and not role_allows(who.role, Role.ADMIN):
            raise errors.Forbidden(f"this needs the admin role; the token is {who.role}")
        actor = who.name if who is not None else f"cli:{getpass.getuser()}"
        count = await self._write(
            lambda conn, now: store.revoke_tokens(conn, now, name, actor=actor))
        if not count:
            raise errors.TokenNotFound(f"no live token is named {name!r}")
        self.forget_tokens()
        log.info("token_revoked", name=name, tokens=count, by=actor)
        return count
