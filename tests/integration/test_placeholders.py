"""Placeholder actions: accepted and flagged ``needs_analysis``, never approvable."""

from __future__ import annotations

import pytest

from signoff.db import Database
from signoff.settings import Settings
from tests.integration.api_support import api_for


@pytest.mark.parametrize("action", ["", "   ", "NO_ACTION", " tbd ", "Pending Analysis", "待分析"])
async def test_a_placeholder_is_accepted_and_cannot_be_approved(
    db: Database, db_url: str, action: str
) -> None:
    async with api_for(db, Settings(database_url=db_url)) as api:
        created = await api.as_("bot").post("/approvals", json={"action": action})
        assert created.status_code == 201, created.text
        request = created.json()
        assert request["needs_analysis"] is True

        refused = await api.as_("alice").post(f"/approvals/{request['id']}/approve")
        assert refused.status_code == 422
        assert refused.json()["error"]["code"] == "needs_analysis"
        assert "placeholder" in refused.json()["error"]["message"]
        after = (await api.as_("viewer").get(f"/approvals/{request['id']}")).json()
        assert after["status"] == "pending" and after["approvals"] == []

        # Refusal order: who (403) before content (422).
        own = await api.as_("bot").post(f"/approvals/{request['id']}/approve")
        assert own.status_code == 403
        unknown = await api.as_("alice").post(
            "/approvals/00000000-0000-0000-0000-000000000000/approve")
        assert unknown.status_code == 404

        rejected = await api.as_("alice").post(f"/approvals/{request['id']}/reject")
        assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
        # State (409) before content (422).
        late = await api.as_("bob").post(f"/approvals/{request['id']}/approve")
        assert late.status_code == 409


async def test_a_real_action_is_not_flagged_and_the_list_is_configurable(
    db: Database, db_url: str
) -> None:
    settings = Settings(database_url=db_url, placeholder_actions="FIXME, later ")
    async with api_for(db, settings) as api:
        real = (await api.as_("bot").post("/approvals", json={"action": "TBD"})).json()
        assert real["needs_analysis"] is False  # no longer in the list
        flagged = (await api.as_("bot").post("/approvals", json={"action": " LATER"})).json()
        assert flagged["needs_analysis"] is True
        empty = (await api.as_("bot").post("/approvals", json={"action": ""})).json()
        assert empty["needs_analysis"] is True
        approved = await api.as_("alice").post(f"/approvals/{real['id']}/approve")
        assert approved.status_code == 200 and approved.json()["status"] == "approved"


async def test_a_body_without_action_is_still_refused(db: Database, db_url: str) -> None:
    async with api_for(db, Settings(database_url=db_url)) as api:
        missing = await api.as_("bot").post("/approvals", json={"risk": "low"})
        assert missing.status_code == 422
        listed = (await api.as_("viewer").get("/approvals")).json()
        assert listed["items"] == []
