"""API tokens: stored hashed, looked up by hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff.lifecycle import Principal, Role
from signoff.tables import tokens


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


async def authenticate(conn: AsyncConnection, secret: str) -> Principal | None:
    digest = hash_token(secret)
    row = (
        await conn.execute(
            sa.select(tokens.c.name, tokens.c.role, tokens.c.token_hash).where(
                tokens.c.token_hash == digest, tokens.c.revoked_at.is_(None)
            )
        )
    ).first()
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        return None
    return Principal(name=row.name, role=Role(row.role))
