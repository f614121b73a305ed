"""API tokens: stored hashed, looked up by hash, revoked (never deleted)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff.db import notify_at_commit
from signoff.lifecycle import EventKind, Principal, Role
from signoff.store.requests import CHANGED_CHANNEL
from signoff.store.rows import Row, record_events
from signoff.tables import tokens

# ``last_used_at`` is written at most this often per token: a busy client does not turn
# every call into a write.
TOUCH_EVERY = timedelta(minutes=1)
# Sent on ``CHANGED_CHANNEL`` when tokens are revoked: every server forgets the tokens it
# remembered, at the commit.
TOKENS_CHANGED = "tokens"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(conn: AsyncConnection, now: datetime, name: str, role: Role) -> str:
    """Store a new token hashed; return the only copy of its secret."""
    secret = "so_" + secrets.token_urlsafe(32)
    await conn.execute(
        tokens.insert().values(
            id=uuid.uuid4(), name=name, role=role.value, token_hash=hash_token(secret),
            created_at=now,
        )
    )
    return secret


async def authenticate(
    conn: AsyncConnection, now: datetime, secret: str
) -> tuple[Principal, uuid.UUID, bool] | None:
    """The principal of a live token, with its id and whether its use should be noted
    (``touch_token``); None for a token unknown or revoked."""
    digest = hash_token(secret)
    row = (
        await conn.execute(
            sa.select(tokens.c.id, tokens.c.name, tokens.c.role, tokens.c.token_hash,
                      tokens.c.last_used_at)
            .where(tokens.c.token_hash == digest, tokens.c.revoked_at.is_(None))
        )
    ).first()
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    stale = row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY
    return Principal(name=row.name, role=Role(row.role)), row.id, stale


async def touch_token(conn: AsyncConnection, now: datetime, token_id: uuid.UUID) -> None:
    """Note that the token was used ``now``, unless a note within ``TOUCH_EVERY`` exists."""
    await conn.execute(
        tokens.update()
        .where(tokens.c.id == token_id,
               sa.or_(tokens.c.last_used_at.is_(None), tokens.c.last_used_at < now - TOUCH_EVERY))
        .values(last_used_at=now)
    )


async def list_tokens(conn: AsyncConnection) -> Sequence[Row]:
    """Every token ever made, revoked ones too, oldest first; never the hash."""
    query = sa.select(tokens.c.name, tokens.c.role, tokens.c.created_at, tokens.c.last_used_at,
                      tokens.c.revoked_at).order_by(tokens.c.created_at, tokens.c.name)
    return (await conn.execute(query)).mappings().all()


async def revoke_tokens(conn: AsyncConnection, now: datetime, name: str, *, actor: str) -> int:
    """Revoke every live token of ``name`` (audited); how many there were. On PostgreSQL
    every server hears of it at the commit (``TOKENS_CHANGED``)."""
    revoked = (await conn.execute(
        tokens.update().where(tokens.c.name == name, tokens.c.revoked_at.is_(None))
        .values(revoked_at=now).returning(tokens.c.id, tokens.c.role)
    )).all()
    if not revoked:
        return 0
    await record_events(conn, [{
        "at": now, "kind": EventKind.TOKEN_REVOKED, "actor": actor,
        "detail": {"name": name, "tokens": len(revoked),
                   "roles": sorted({r.role for r in revoked})},
    }])
    if conn.dialect.name == "postgresql":
        await notify_at_commit(conn, CHANGED_CHANNEL, TOKENS_CHANGED)
    return len(revoked)
