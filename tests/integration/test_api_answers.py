"""What a write answers is what a read of the request returns next."""

from __future__ import annotations

from signoff.db import Database
from signoff.settings import Settings
from tests.integration.api_support import api_for


async def test_each_approval_answers_every_vote_so_far(db: Database, db_url: str) -> None:
    async with api_for(db, Settings(database_url=db_url)) as api:
        for required in (1, 2):
            made = await api.as_("bot").post(
                "/approvals", json={"action": "restart api", "required_approvals": required})
            assert made.status_code == 201, made.text
            rid = made.json()["id"]
            for approver in ("alice", "bob")[:required]:
                answer = await api.as_(approver).post(f"/approvals/{rid}/approve", json={})
                assert answer.status_code == 200, answer.text
                read = (await api.as_("viewer").get(f"/approvals/{rid}")).json()
                assert answer.json() == read
            assert [a["by"] for a in read["approvals"]] == ["alice", "bob"][:required]
            assert read["status"] == "approved"
