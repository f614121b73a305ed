"""A create with more than one thing wrong is refused for the first of them, in the order
``docs/api.md`` gives, and changes nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from signoff.db import Database
from signoff.settings import Settings
from tests.integration.api_support import Api, api_for

PAST = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
REFUSED_CALLBACK = "http://169.254.169.254/hook"


async def _refused(api: Api, body: dict[str, object], key: str | None = None) -> tuple[int, str]:
    """The status and the error's code, with the first word of its message for a plain
    ``invalid`` (which field it is about)."""
    headers = {"Idempotency-Key": key} if key else {}
    answer = await api.as_("bot").post("/approvals", json=body, headers=headers)
    assert answer.status_code >= 400, answer.text
    error = answer.json()["error"]
    if error["code"] == "invalid":
        return answer.status_code, "invalid " + error["message"].split()[0].rstrip(":")
    return answer.status_code, error["code"]


async def _requests(api: Api) -> int:
    return len((await api.as_("viewer").get("/approvals")).json()["items"])


async def test_each_refusal_comes_in_its_place(db: Database, db_url: str) -> None:
    async with api_for(db, Settings(database_url=db_url)) as api:
        bot = api.as_("bot")
        open_ = (await bot.post("/incidents", json={
            "title": "disk", "severity": "high", "service": "db", "fingerprint": "fp-open"},
        )).json()
        gone = (await bot.post("/incidents", json={
            "title": "cpu", "severity": "low", "service": "web", "fingerprint": "fp-gone"},
        )).json()
        resolved = await api.as_("alice").post(f"/incidents/{gone['id']}/resolve", json={})
        assert resolved.status_code == 200, resolved.text
        made = await bot.post("/approvals", json={"action": "restart db"},
                              headers={"Idempotency-Key": "k1"})
        assert made.status_code == 201, made.text
        before = await _requests(api)

        # The key's other body, before the unknown incident and the past deadline.
        assert await _refused(api, {"action": "other", "incident_id": str(uuid.uuid4()),
                                    "expires_at": PAST}, key="k1") == (
            422, "idempotency_key_reused")
        # Both ways of naming the incident, before looking either up.
        assert await _refused(api, {"action": "a", "incident_id": str(uuid.uuid4()),
                                    "fingerprint": "nowhere"}) == (422, "invalid give")
        # The incident, before the deadline, the callback and the groups.
        for incident in ({"incident_id": str(uuid.uuid4())}, {"fingerprint": "nowhere"}):
            assert await _refused(api, {"action": "a", **incident, "expires_at": PAST,
                                        "callback_url": REFUSED_CALLBACK,
                                        "approvers": ["group:no-such-group"]}) == (
                404, "not_found")
        assert await _refused(api, {"action": "a", "incident_id": gone["id"],
                                    "ttl_seconds": 10**9}) == (409, "incident_resolved")
        # The deadline, before the callback and the groups.
        assert await _refused(api, {"action": "a", "incident_id": open_["id"],
                                    "expires_at": PAST, "callback_url": REFUSED_CALLBACK,
                                    "approvers": ["group:no-such-group"]}) == (
            422, "invalid expires_at")
        # The callback, before the groups.
        assert await _refused(api, {"action": "a", "incident_id": open_["id"],
                                    "callback_url": REFUSED_CALLBACK,
                                    "approvers": ["group:no-such-group"]}) == (
            422, "callback_refused")
        assert await _refused(api, {"action": "a", "approvers": ["group:no-such-group"]}) == (
            422, "invalid approvers")
        assert await _requests(api) == before
