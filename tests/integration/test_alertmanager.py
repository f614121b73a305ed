"""Alertmanager intake: payload version 4, all alerts in one transaction, repeats change
nothing more, and a payload of the wrong version or shape changes nothing at all."""

from __future__ import annotations

from typing import Any

import pytest

from signoff.db import Database
from tests.integration.api_support import Api
from tests.integration.policy_support import ask, policy_api


def alert(fp: str, status: str = "firing", **labels: str) -> dict[str, Any]:
    return {"status": status, "labels": {"alertname": f"Alert{fp}", **labels},
            "annotations": {}, "startsAt": "2026-01-01T12:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus/graph",
            "fingerprint": fp}


def payload(*alerts: dict[str, Any], version: Any = "4") -> dict[str, Any]:
    return {"version": version, "groupKey": "{}:{}", "truncatedAlerts": 0,
            "status": "firing", "receiver": "signoff", "groupLabels": {},
            "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
            "alerts": list(alerts)}


async def push(api: Api, body: Any, who: str = "bot", expect: int = 200) -> dict[str, Any]:
    answer = await api.as_(who).post("/alertmanager", json=body)
    assert answer.status_code == expect, answer.text
    found: dict[str, Any] = answer.json()
    return found


async def incidents(api: Api) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await api.as_("viewer").get("/incidents")).json()["items"]
    return found


async def test_firing_alerts_open_or_join_and_resolved_ones_resolve(
    clocked_db: Database, db_url: str
) -> None:
    async with policy_api(clocked_db, db_url, None, alert_severity_map="page=critical",
                          alert_service_label="app") as api:
        first = alert("aaa", severity="PAGE", app="web")
        first["annotations"] = {"summary": "Web is down", "description": "5xx above 5%"}
        second = alert("bbb", severity="warning")
        assert await push(api, payload(first, second)) == {
            "opened": 2, "joined": 0, "resolved": 0, "ignored": 0}
        opened = {i["fingerprint"]: i for i in await incidents(api)}
        web = opened["aaa"]
        assert (web["title"], web["severity"], web["service"], web["source"],
                web["description"]) == ("Web is down", "critical", "web", "alertmanager",
                                        "5xx above 5%")
        assert web["labels"] == first["labels"]
        other = opened["bbb"]  # not in the map: medium; no summary: the alert's name
        assert (other["title"], other["severity"], other["service"]) == ("Alertbbb", "medium",
                                                                         None)
        assert await push(api, payload(first, second)) == {
            "opened": 0, "joined": 2, "resolved": 0, "ignored": 0}
        pending = await ask(api, "restart web", fingerprint="aaa")
        done = payload(alert("aaa", "resolved"), alert("zzz", "resolved"))
        assert await push(api, done) == {"opened": 0, "joined": 0, "resolved": 1, "ignored": 1}
        web = (await api.as_("viewer").get(f"/incidents/{web['id']}")).json()
        assert (web["status"], web["resolution_type"]) == ("resolved", "alert_resolved")
        cancelled = (await api.as_("viewer").get(f"/approvals/{pending['id']}")).json()
        assert (cancelled["status"], cancelled["decided_by"]) == ("cancelled",
                                                                  "incident_resolved")
        assert await push(api, done) == {"opened": 0, "joined": 0, "resolved": 0, "ignored": 2}
        assert await push(api, payload(first)) == {  # it fires again: a new incident
            "opened": 1, "joined": 0, "resolved": 0, "ignored": 0}


@pytest.mark.parametrize("body", [
    payload(alert("a"), version="3"),
    payload(alert("a"), version=4),
    {"version": "4"},
    payload(alert("a"), {"status": "firing", "labels": {}}),  # no fingerprint
    payload(alert("a"), alert("b", status="pending")),
    payload(alert("a"), {**alert("b"), "labels": {"x": 1}}),
    payload(alert("a"), {**alert("b"), "fingerprint": ""}),
    [alert("a")],
    "not json",
])
async def test_a_payload_of_the_wrong_version_or_shape_changes_nothing(
    clocked_db: Database, db_url: str, body: Any
) -> None:
    async with policy_api(clocked_db, db_url, None) as api:
        if body == "not json":
            answer = await api.as_("bot").post("/alertmanager", content=b"{")
            assert answer.status_code == 422
        else:
            refused = await push(api, body, expect=422)
            assert refused["error"]["code"] == "invalid"
        assert await incidents(api) == []


async def test_only_requesters_and_admins_may_push_alerts(
    clocked_db: Database, db_url: str
) -> None:
    async with policy_api(clocked_db, db_url, None) as api:
        for who in ("viewer", "alice"):
            await push(api, payload(alert("a")), who=who, expect=403)
        assert (await api.as_(None).post("/alertmanager", json=payload())).status_code == 401
        assert (await push(api, payload(alert("a")), who="root"))["opened"] == 1
        assert len(await incidents(api)) == 1
