"""The refusals the OpenAPI document gives that a running server does not give on demand,
checked against the document like the rest (``tests/acceptance/test_openapi_answers.py``):
503 from every route that reads the database while the database is down, and the 409 of a
fingerprint whose open incident is resolved while another is being opened."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from signoff import errors, store
from signoff.app import create_app
from signoff.db import Database
from signoff.settings import Settings
from tests.acceptance.conftest import free_port
from tests.acceptance.openapi_support import Conformance, documented_statuses
from tests.integration.api_support import api_for

SECRET = "webhook-secret"
SOME_ID = str(uuid.uuid4())


def _path(template: str) -> tuple[str, dict[str, str]]:
    ids = {name: SOME_ID for name in ("incident_id", "request_id") if f"{{{name}}}" in template}
    return template.format(**ids), ids


async def test_every_route_that_reads_the_database_answers_503_while_it_is_down() -> None:
    nobody_listens = f"postgresql://postgres@127.0.0.1:{free_port()}/signoff"
    settings = Settings(database_url=nobody_listens, telegram_webhook_secret=SECRET,
                        telegram_approvers="42=alice")
    app = create_app(settings, run_resolver=False)
    document = app.openapi()
    conformance = Conformance(document)
    down = sorted(r for r in documented_statuses(document) if r[2] == 503)
    assert len(down) >= 15
    press = {"callback_query": {"id": "q", "from": {"id": 42}, "data": f"approve:{SOME_ID}"}}
    headers = {"Authorization": "Bearer so_any", "X-Telegram-Bot-Api-Secret-Token": SECRET}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://signoff", headers=headers) as client:
            for method, template, _ in down:
                path, ids = _path(template)
                body = press if template.endswith("/telegram/webhook") else {}
                response = await client.request(
                    method, path, json=body if method == "POST" else None)
                conformance.check(method, template, response, 503, **ids)
    finally:
        await app.state.service.db.dispose()
    assert conformance.seen == set(down)


async def test_a_fingerprint_race_answers_the_documented_409(
    db: Database, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def resolved_meanwhile(*_: Any, **__: Any) -> Any:
        # What store.create_incident raises when the open incident it collided with is
        # resolved before it can read it back.
        raise errors.Conflict("the open incident with this fingerprint just changed; retry",
                              status="resolved")

    async with api_for(db, Settings(database_url=db_url)) as api:
        conformance = Conformance(api.app.openapi())
        monkeypatch.setattr(store, "create_incident", resolved_meanwhile)
        response = await api.as_("bot").post(
            "/incidents", json={"title": "t", "severity": "low", "fingerprint": "f"})
        conformance.check("POST", "/api/v1/incidents", response, 409)
        assert response.json()["error"]["status"] == "resolved"
