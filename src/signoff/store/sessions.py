"""The web console's sessions: stored hashed, read together with their token.

A session belongs to the token that signed in. It is read with a join on that token, so a
revoked token ends its sessions at the revocation's commit; servers that remember sessions
for a few seconds (``signoff.browsing``) forget them at that commit too.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff.db import notify_at_commit
from signoff.lifecycle import Principal, Role
from signoff.store.requests import CHANGED_CHANNEL
from signoff.store.tokens import TOKENS_CHANGED, hash_token
from signoff.tables import sessions, tokens


async def create_session(
    conn: AsyncConnection, now: datetime, token_id: uuid.UUID, ttl: timedelta
) -> tuple[str, str]:
    """A new session for the token; its secret (only the caller keeps it) and its CSRF
    token. Sessions are never deleted: one past its end, or signed out, is kept, ended."""
    secret = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    await conn.execute(sessions.insert().values(
        id=hash_token(secret), token_id=token_id, csrf=csrf, created_at=now,
        expires_at=now + ttl,
    ))
    return secret, csrf


async def find_session(
    conn: AsyncConnection, now: datetime, secret: str
) -> tuple[Principal, str, datetime] | None:
    """The principal, CSRF token and end of a live session whose token is live; else None."""
    row = (await conn.execute(
        sa.select(tokens.c.name, tokens.c.role, sessions.c.csrf, sessions.c.expires_at)
        .select_from(sessions.join(tokens, tokens.c.id == sessions.c.token_id))
        .where(sessions.c.id == hash_token(secret), sessions.c.expires_at > now,
               sessions.c.ended_at.is_(None), tokens.c.revoked_at.is_(None))
    )).first()
    if row is None:
        return None
    return Principal(name=row.name, role=Role(row.role)), row.csrf, row.expires_at


async def end_session(conn: AsyncConnection, now: datetime, secret: str) -> None:
    """End a session (signed out; kept, with when); on PostgreSQL every server forgets the
    sessions it remembered, at the commit (``TOKENS_CHANGED``, as a revocation)."""
    await conn.execute(sessions.update().where(
        sessions.c.id == hash_token(secret), sessions.c.ended_at.is_(None)).values(ended_at=now))
    if conn.dialect.name == "postgresql":
        await notify_at_commit(conn, CHANGED_CHANNEL, TOKENS_CHANGED)


async def token_id_of(
    conn: AsyncConnection, now: datetime, secret: str
) -> tuple[Principal, uuid.UUID] | None:
    """The live token of this secret, with its id (to bind a session to it)."""
    digest = hash_token(secret)
    row = (await conn.execute(
        sa.select(tokens.c.id, tokens.c.name, tokens.c.role)
        .where(tokens.c.token_hash == digest, tokens.c.revoked_at.is_(None))
    )).first()
    if row is None:
        return None
    return Principal(name=row.name, role=Role(row.role)), row.id
