"""The API in process: the app over ASGI on a test database, with a token per principal."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from signoff import store
from signoff.app import create_app
from signoff.db import Database
from signoff.lifecycle import Role
from signoff.settings import Settings

PRINCIPALS = {"bot": "requester", "alice": "approver", "bob": "approver", "viewer": "viewer"}


class Api:
    """Clients per principal over one in-process app (no workers run unless started)."""

    def __init__(self, app: Any, tokens: dict[str, str]) -> None:
        self.app = app
        self.tokens = tokens
        self._transport = httpx.ASGITransport(app=app)
        self._clients: dict[str | None, httpx.AsyncClient] = {}

    def as_(self, who: str | None) -> httpx.AsyncClient:
        if who not in self._clients:
            headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
            self._clients[who] = httpx.AsyncClient(
                transport=self._transport, base_url="http://signoff/api/v1", headers=headers
            )
        return self._clients[who]

    async def close(self) -> None:
        for client in self._clients.values():
            await client.aclose()


@asynccontextmanager
async def api_for(db: Database, settings: Settings) -> AsyncIterator[Api]:
    tokens = {}
    for name, role in PRINCIPALS.items():
        tokens[name] = await db.run(
            lambda c, n, name=name, role=role: store.create_token(c, n, name, Role(role))
        )
    app = create_app(settings, db=db, run_resolver=False)
    api = Api(app, tokens)
    try:
        yield api
    finally:
        await api.close()
