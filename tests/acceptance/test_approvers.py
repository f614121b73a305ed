"""Approver groups (``signoff group``) and a request's ``approvers``: only the people it
names, or the members of the groups it names, decide it; quorum counts distinct people."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import sqlalchemy as sa

from signoff.db import Database
from signoff.settings import Settings
from signoff.tables import events
from tests.acceptance.conftest import Server, run_signoff


def group(server: Server, *args: str) -> str:
    done = run_signoff(server.env, "group", *args)
    assert done.returncode == 0, done.stderr
    return done.stderr + done.stdout


def ask(server: Server, **body: Any) -> dict[str, Any]:
    answer = server.client("bot").post("/approvals", json={"action": "restart db", **body})
    assert answer.status_code == 201, answer.text
    made: dict[str, Any] = answer.json()
    return made


def test_only_the_named_people_and_groups_decide(server: Server) -> None:
    assert "added alice, bob" in group(server, "add", "dba", "alice", "bob")
    made = ask(server, approvers=["group:dba", "carol"], required_approvals=2)
    assert made["approvers"] == ["group:dba", "carol"]
    rid = made["id"]

    for outsider in ("root", "viewer"):  # an admin not named is refused like anyone else
        refused = server.client(outsider).post(f"/approvals/{rid}/approve")
        assert refused.status_code == 403, refused.text
    refused = server.client("root").post(f"/approvals/{rid}/reject", json={"comment": "no"})
    assert refused.json()["error"]["code"] == "not_an_approver"
    assert "group:dba, carol" in refused.json()["error"]["message"]
    untouched = server.client("viewer").get(f"/approvals/{rid}").json()
    assert untouched["status"] == "pending" and untouched["approvals"] == []

    assert server.client("alice").post(f"/approvals/{rid}/approve").json()["status"] == "pending"
    again = server.client("alice").post(f"/approvals/{rid}/approve")  # still one person
    assert again.json()["error"]["code"] == "already_approved"
    done = server.client("carol").post(f"/approvals/{rid}/approve").json()
    assert done["status"] == "approved" and [a["by"] for a in done["approvals"]] == [
        "alice", "carol"]


def test_a_removed_member_no_longer_decides_and_an_unknown_group_is_refused(
    server: Server,
) -> None:
    group(server, "add", "dba", "alice", "bob")
    made = ask(server, approvers=["group:dba"])
    assert "removed alice; not in it: carol" in group(server, "remove", "dba", "alice", "carol")
    refused = server.client("alice").post(f"/approvals/{made['id']}/approve")
    assert refused.json()["error"]["code"] == "not_an_approver"
    assert server.client("bob").post(f"/approvals/{made['id']}/reject").status_code == 200

    unknown = server.client("bot").post(
        "/approvals", json={"action": "x", "approvers": ["group:nobody"]})
    assert unknown.status_code == 422 and "group:nobody" in unknown.text
    bad = server.client("bot").post("/approvals", json={"action": "x", "approvers": ["group:"]})
    assert bad.status_code == 422
    group(server, "remove", "dba", "bob")  # its last member: the group is no more
    gone = server.client("bot").post("/approvals", json={"action": "x", "approvers": ["group:dba"]})
    assert gone.status_code == 422

    listed = json.loads(run_signoff(server.env, "group", "list", "--json").stdout)
    assert listed == {"groups": {}}


def test_groups_are_listed_and_every_change_audited(server: Server) -> None:
    group(server, "add", "oncall", "alice")
    group(server, "add", "oncall", "alice", "bob")  # alice is already in it
    group(server, "remove", "oncall", "alice")
    listed = json.loads(run_signoff(server.env, "group", "list", "--json").stdout)
    (bob,) = listed["groups"]["oncall"]
    assert bob["member"] == "bob" and bob["by"].startswith("cli:")
    table = run_signoff(server.env, "group", "list")
    assert "oncall" in table.stdout and "bob" in table.stdout

    async def audit() -> list[tuple[str, Any]]:
        db = Database.from_settings(Settings(database_url=server.env["SIGNOFF_DATABASE_URL"]))
        try:
            async with db.begin() as conn:
                rows = await conn.execute(sa.select(events.c.kind, events.c.detail).where(
                    events.c.kind.like("group_%")).order_by(events.c.id))
                return [(r.kind, r.detail) for r in rows]
        finally:
            await db.dispose()

    assert asyncio.run(audit()) == [
        ("group_members_added", {"group": "oncall", "members": ["alice"]}),
        ("group_members_added", {"group": "oncall", "members": ["bob"]}),
        ("group_members_removed", {"group": "oncall", "members": ["alice"]}),
    ]
    bad = run_signoff(server.env, "group", "add", "On Call", "alice")
    assert bad.returncode == 2 and "group name" in bad.stderr
