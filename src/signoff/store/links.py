"""Single-use links: a request decided by one approver through a URL that works once.

The secret is stored hashed, like a token's. A link is made for a pending request and dies
at its deadline; using it (a decision through it) is a guarded update in the decision's
own transaction, so two clicks on one link make one decision.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff.store.rows import Row
from signoff.store.tokens import hash_token
from signoff.tables import links, tokens


async def create_link(
    conn: AsyncConnection, now: datetime, request: Row, principal: str, *, actor: str
) -> tuple[str, datetime]:
    """A new link to ``request`` for ``principal``: its secret (the only copy) and when it
    dies (the request's deadline)."""
    secret = "sol_" + secrets.token_urlsafe(32)
    await conn.execute(links.insert().values(
        id=uuid.uuid4(), request_id=request["id"], principal=principal,
        secret_hash=hash_token(secret), created_at=now, created_by=actor,
        expires_at=request["expires_at"],
    ))
    return secret, request["expires_at"]


async def find_link(conn: AsyncConnection, secret: str) -> Row | None:
    return (await conn.execute(
        sa.select(links).where(links.c.secret_hash == hash_token(secret))
    )).mappings().first()


async def use_link(conn: AsyncConnection, now: datetime, link_id: uuid.UUID) -> bool:
    """Use the link up, if it is unused and alive; whether it was."""
    used = await conn.execute(
        links.update()
        .where(links.c.id == link_id, links.c.used_at.is_(None), links.c.expires_at > now)
        .values(used_at=now).returning(links.c.id))
    return used.first() is not None


async def live_roles(conn: AsyncConnection, principal: str) -> set[str]:
    """The roles of ``principal``'s live tokens."""
    found = await conn.execute(sa.select(tokens.c.role).distinct().where(
        tokens.c.name == principal, tokens.c.revoked_at.is_(None)))
    return set(found.scalars())
