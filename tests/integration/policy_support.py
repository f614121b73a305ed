"""The API in process with a policy file, on a clocked database: time moves when a test
says, so hours, windows and limits are tested at their boundaries without sleeping."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from signoff import store
from signoff.app import create_app
from signoff.db import Database
from signoff.lifecycle import Role
from signoff.settings import Settings
from tests.integration.api_support import Api

PRINCIPALS = {"bot": "requester", "bot2": "requester", "alice": "approver",
              "bob": "approver", "viewer": "viewer", "root": "admin"}


async def make_tokens(db: Database) -> dict[str, str]:
    tokens = {}
    for name, role in PRINCIPALS.items():
        tokens[name] = await db.run(
            lambda c, n, name=name, role=role: store.create_token(c, n, name, Role(role)))
    return tokens


@asynccontextmanager
async def policy_api(
    db: Database, db_url: str, policy: Path | None, tokens: dict[str, str] | None = None,
    **settings: Any,
) -> AsyncIterator[Api]:
    """An app on ``db`` using the policy file ``policy``; tokens made unless given."""
    made = tokens if tokens is not None else await make_tokens(db)
    config = Settings(database_url=db_url, policy_file=None if policy is None else str(policy),
                      **settings)
    api = Api(create_app(config, db=db, run_resolver=False), made)
    try:
        yield api
    finally:
        await api.close()


def write_policy(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


async def incident(api: Api, fingerprint: str, *, severity: str = "high",
                   service: str | None = "web") -> dict[str, Any]:
    body = {"title": f"alert {fingerprint}", "severity": severity, "fingerprint": fingerprint}
    if service is not None:
        body["service"] = service
    answer = await api.as_("bot").post("/incidents", json=body)
    assert answer.status_code in (200, 201), answer.text
    found: dict[str, Any] = answer.json()
    return found


async def ask(api: Api, action: str, *, who: str = "bot", expect: int = 201,
              **body: Any) -> dict[str, Any]:
    answer: httpx.Response = await api.as_(who).post("/approvals", json={"action": action, **body})
    assert answer.status_code == expect, answer.text
    found: dict[str, Any] = answer.json()
    return found


def reasons(request: dict[str, Any], rule: str) -> list[str]:
    for e in request["policy"]["evaluations"]:
        if e["rule"] == rule:
            found: list[str] = e["reasons"]
            return found
    raise AssertionError(f"no evaluation of {rule}")
