"""The lifecycle as a state machine: random sequences of every transition against a real
database, checked step by step against a pure model of the rules in PRODUCT.md.

Each step is one transaction through ``Database.run`` on an injected clock, run on an event
loop the machine owns (Hypothesis drives it synchronously).
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff import errors, store
from signoff.db import Database
from signoff.lifecycle import TERMINAL, ResolutionType
from signoff.migrate import upgrade
from signoff.settings import Settings
from signoff.tables import approvals, events, incidents, knowledge, metadata, requests

START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
TERMINAL_VALUES = {s.value for s in TERMINAL}
REQUESTERS = ["bot", "bot2"]
APPROVERS = ["alice", "bob", "carol"]


# -- the model -------------------------------------------------------------------------------


@dataclass
class ModelIncident:
    id: uuid.UUID
    fingerprint: str | None
    status: str = "open"
    resolution_type: str | None = None
    disposition: str | None = None
    resolved_at: datetime | None = None
    resolved_by: str | None = None


@dataclass
class ModelRequest:
    id: uuid.UUID
    incident_id: uuid.UUID | None
    requester: str
    required: int
    expires_at: datetime
    status: str = "pending"
    approvers: list[str] = field(default_factory=list)
    decided_by: str | None = None
    decided_at: datetime | None = None
    disposition: str | None = None
    outcome: bool | None = None


@dataclass
class Model:
    incidents: dict[uuid.UUID, ModelIncident] = field(default_factory=dict)
    requests: dict[uuid.UUID, ModelRequest] = field(default_factory=dict)

    def of(self, incident_id: uuid.UUID) -> list[ModelRequest]:
        return [r for r in self.requests.values() if r.incident_id == incident_id]

    def end(self, r: ModelRequest, status: str, by: str, disposition: str, now: datetime) -> None:
        assert r.status == "pending"
        r.status, r.decided_by, r.decided_at, r.disposition = status, by, now, disposition

    def close(
        self, inc: ModelIncident, how: str, disposition: str | None, by: str, now: datetime
    ) -> None:
        """Rules 5 and 6: pending requests end first (overdue ones expire), then the incident."""
        for r in self.of(inc.id):
            if r.status == "pending":
                if r.expires_at <= now:
                    self.end(r, "expired", "timeout", "timeout_ignored", now)
                else:
                    self.end(r, "cancelled", "incident_resolved", "cancelled", now)
        inc.status, inc.resolution_type, inc.disposition = "resolved", how, disposition
        inc.resolved_at, inc.resolved_by = now, by

    def idle(self, incident_id: uuid.UUID) -> bool:
        return not any(
            r.status == "pending" or (r.status == "approved" and r.outcome is None)
            for r in self.of(incident_id)
        )

    def expire(self, now: datetime) -> None:
        """Rule 4, for a pass that drains every due request."""
        due = [r for r in self.requests.values()
               if r.status == "pending" and r.expires_at <= now]
        for r in due:
            self.end(r, "expired", "timeout", "timeout_ignored", now)
        for incident_id in {r.incident_id for r in due if r.incident_id is not None}:
            inc = self.incidents[incident_id]
            if inc.status == "open" and self.idle(incident_id):
                inc.status, inc.resolution_type, inc.disposition = (
                    "resolved", "timeout", "timeout_ignored"
                )
                inc.resolved_at, inc.resolved_by = now, "timeout"


def refusal_of_decision(r: ModelRequest, actor: str, now: datetime) -> Exception | None:
    """What approve or reject must answer, in the contract's order: who, then state."""
    if actor == r.requester:
        return errors.Forbidden()
    if r.status != "pending":
        return errors.RequestNotPending(status=r.status)
    if r.expires_at <= now:
        return errors.RequestNotPending(status="expired")
    return None


# -- the machine -----------------------------------------------------------------------------


class LifecycleMachine(RuleBasedStateMachine):
    url: str = ""
    fresh_sqlite_from: Path | None = None

    incident_ids = Bundle("incident_ids")
    request_ids = Bundle("request_ids")

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.now = START
        self.model = Model()
        self.counts: dict[str, int] = {}
        url = self.url
        if self.fresh_sqlite_from is not None:
            target = self.fresh_sqlite_from.with_name(f"machine-{uuid.uuid4().hex}.db")
            shutil.copyfile(self.fresh_sqlite_from, target)
            url = f"sqlite:///{target}"
        self.db = Database.from_settings(Settings(database_url=url), clock=lambda: self.now)
        if self.db.is_postgres:
            self.runner.run(self._truncate())

    async def _truncate(self) -> None:
        names = ", ".join(t.name for t in metadata.sorted_tables)
        async with self.db.begin() as conn:
            await conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))

    def teardown(self) -> None:
        try:
            self.runner.run(self.db.dispose())
        finally:
            self.runner.close()

    def call(self, label: str, work: Any) -> tuple[Any, errors.SignoffError | None]:
        """One transaction; a domain error is an answer, not a failure."""
        try:
            result = self.runner.run(self.db.run(work))
        except errors.SignoffError as exc:
            event(f"{label}: {type(exc).__name__}")  # --hypothesis-show-statistics
            return None, exc
        event(f"{label}: ok")
        return result, None

    @staticmethod
    def same_answer(got: errors.SignoffError | None, expected: Exception | None) -> None:
        if expected is None:
            assert got is None, f"refused: {got!r} (status {getattr(got, 'status', None)})"
            return
        assert type(got) is type(expected), (got, expected)
        assert isinstance(expected, errors.SignoffError)
        if expected.status is not None:
            assert got.status == expected.status, (got.status, expected.status)

    # -- rules ---------------------------------------------------------------------------

    @initialize(target=incident_ids)
    def first_incident(self) -> uuid.UUID:
        return self.create_incident(None)

    @precondition(lambda self: sum(i.status == "open" for i in self.model.incidents.values()) < 4)
    @rule(target=incident_ids, fingerprint=st.sampled_from([None, "fp-1", "fp-2"]))
    def create_incident(self, fingerprint: str | None) -> uuid.UUID:
        data = {"title": "t", "severity": "high", "fingerprint": fingerprint}
        result, error = self.call(
            "create_incident", lambda c, n: store.create_incident(c, n, actor="bot", data=data)
        )
        assert error is None
        row, created = result
        twin = next((i for i in self.model.incidents.values()
                     if fingerprint is not None and i.fingerprint == fingerprint
                     and i.status == "open"), None)
        if twin is not None:
            assert (row["id"], created) == (twin.id, False)
        else:
            assert created
            self.model.incidents[row["id"]] = ModelIncident(row["id"], fingerprint)
        return row["id"]  # type: ignore[no-any-return]

    @rule(
        target=request_ids,
        incident_id=st.none() | incident_ids,
        requester=st.sampled_from(REQUESTERS),
        required=st.sampled_from([1, 1, 1, 2, 3]),
        seconds=st.integers(1, 30),
        micros=st.sampled_from([0, 1, 999_999]),
    )
    def create_request(
        self, incident_id: uuid.UUID | None, requester: str, required: int, seconds: int,
        micros: int,
    ) -> uuid.UUID:
        expires_at = self.now + timedelta(seconds=seconds, microseconds=micros)
        data = {"action": "act", "incident_id": incident_id, "required_approvals": required}
        result, error = self.call("create_request", lambda c, n: store.create_request(
            c, n, actor=requester, data=data, expires_at=expires_at))
        if incident_id is not None and self.model.incidents[incident_id].status == "resolved":
            self.same_answer(error, errors.IncidentResolved(status="resolved"))
            return uuid.uuid4()  # an id nobody knows: later rules see RequestNotFound
        assert error is None
        row, created = result
        assert created and row["expires_at"] == expires_at
        self.model.requests[row["id"]] = ModelRequest(
            row["id"], incident_id, requester, required, expires_at)
        return row["id"]  # type: ignore[no-any-return]

    def known(self, request_id: uuid.UUID) -> ModelRequest | None:
        return self.model.requests.get(request_id)

    @rule(request_id=request_ids, actor=st.sampled_from(APPROVERS + REQUESTERS[:1]))
    def approve(self, request_id: uuid.UUID, actor: str) -> None:
        _, error = self.call(
            "approve", lambda c, n: store.approve_request(c, n, request_id, actor=actor)
        )
        r = self.known(request_id)
        if r is None:
            return self.same_answer(error, errors.RequestNotFound())
        expected = refusal_of_decision(r, actor, self.now)
        if expected is None and actor in r.approvers:
            expected = errors.AlreadyApproved(status="pending")
        self.same_answer(error, expected)
        if expected is None:
            r.approvers.append(actor)
            if len(r.approvers) >= r.required:
                self.model.end(r, "approved", actor, "human_approved", self.now)
        return None

    @rule(request_id=request_ids, actor=st.sampled_from(APPROVERS + REQUESTERS[:1]))
    def reject(self, request_id: uuid.UUID, actor: str) -> None:
        _, error = self.call(
            "reject", lambda c, n: store.reject_request(c, n, request_id, actor=actor)
        )
        r = self.known(request_id)
        if r is None:
            return self.same_answer(error, errors.RequestNotFound())
        expected = refusal_of_decision(r, actor, self.now)
        self.same_answer(error, expected)
        if expected is None:
            self.model.end(r, "rejected", actor, "human_rejected", self.now)
        return None

    @rule(request_id=request_ids, actor=st.sampled_from(REQUESTERS))
    def cancel(self, request_id: uuid.UUID, actor: str) -> None:
        _, error = self.call(
            "cancel", lambda c, n: store.cancel_request(c, n, request_id, actor=actor)
        )
        r = self.known(request_id)
        if r is None:
            return self.same_answer(error, errors.RequestNotFound())
        expected: Exception | None = None
        if actor != r.requester:
            expected = errors.Forbidden()
        elif r.status != "pending":
            expected = errors.RequestNotPending(status=r.status)
        elif r.expires_at <= self.now:
            expected = errors.RequestNotPending(status="expired")
        self.same_answer(error, expected)
        if expected is None:
            self.model.end(r, "cancelled", actor, "cancelled", self.now)
        return None

    @rule(request_id=request_ids, succeeded=st.booleans(), by_requester=st.booleans())
    def report_outcome(self, request_id: uuid.UUID, succeeded: bool, by_requester: bool) -> None:
        r = self.known(request_id)
        actor = (r.requester if r else "bot") if by_requester else "mallory"
        _, error = self.call("outcome", lambda c, n: store.report_outcome(
            c, n, request_id, actor=actor, succeeded=succeeded))
        if r is None:
            return self.same_answer(error, errors.RequestNotFound())
        expected: Exception | None = None
        if actor != r.requester:
            expected = errors.Forbidden()
        elif r.status != "approved":
            overdue = r.status == "pending" and r.expires_at <= self.now
            expected = errors.RequestNotPending(status="expired" if overdue else r.status)
        elif r.outcome is not None:
            expected = errors.OutcomeAlreadyReported(status="approved")
        self.same_answer(error, expected)
        if expected is None:
            r.outcome = succeeded
            if succeeded and r.incident_id is not None:
                inc = self.model.incidents[r.incident_id]
                if inc.status == "open":
                    assert r.disposition is not None
                    self.model.close(inc, "action", r.disposition, actor, self.now)
        return None

    @rule(incident_id=incident_ids,
          how=st.sampled_from([ResolutionType.MANUAL, ResolutionType.ALERT_RESOLVED]))
    def resolve_incident(self, incident_id: uuid.UUID, how: ResolutionType) -> None:
        _, error = self.call("resolve", lambda c, n: store.resolve_incident(
            c, n, incident_id, actor="alice", resolution_type=how))
        inc = self.model.incidents[incident_id]
        if inc.status == "resolved":
            return self.same_answer(error, errors.IncidentResolved(status="resolved"))
        self.same_answer(error, None)
        self.model.close(inc, how.value, None, "alice", self.now)
        return None

    # The rules above draw any request ever made, so they mostly meet refusals. These two
    # pick one that can still move, so that quorums and outcomes happen often enough.

    def live(self) -> list[ModelRequest]:
        return [r for r in self.model.requests.values()
                if r.status == "pending" and r.expires_at > self.now]

    def awaiting_outcome(self) -> list[ModelRequest]:
        return [r for r in self.model.requests.values()
                if r.status == "approved" and r.outcome is None]

    @precondition(lambda self: bool(self.live()))
    @rule(data=st.data(), actor=st.sampled_from(APPROVERS))
    def approve_a_live_request(self, data: st.DataObject, actor: str) -> None:
        self.approve(data.draw(st.sampled_from(self.live())).id, actor)

    @precondition(lambda self: bool(self.awaiting_outcome()))
    @rule(data=st.data(), succeeded=st.booleans())
    def report_an_awaited_outcome(self, data: st.DataObject, succeeded: bool) -> None:
        self.report_outcome(data.draw(st.sampled_from(self.awaiting_outcome())).id,
                            succeeded, True)

    @rule(seconds=st.sampled_from([0.000001, 0.5, 1, 3, 10, 40]))
    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    @rule(request_id=request_ids)
    def advance_to_its_deadline(self, request_id: uuid.UUID) -> None:
        r = self.known(request_id)
        if r is not None and r.expires_at > self.now:
            self.now = r.expires_at  # exactly: the instant it becomes due

    @rule(limit=st.integers(1, 4))
    def run_expiry(self, limit: int) -> None:
        while True:
            batch, error = self.call(
                "expire", lambda c, n: store.expire_due_requests(c, n, limit=limit)
            )
            assert error is None
            assert batch.count <= limit
            if batch.count < limit:
                break
        self.model.expire(self.now)
        state = self.runner.run(self.db.run(load, readonly=True))
        overdue = [r for r in state["requests"].values()
                   if r["status"] == "pending" and r["expires_at"] <= self.now]
        assert overdue == [], "a due request is still pending after an expiry pass"

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def database_agrees_with_the_model(self) -> None:
        state = self.runner.run(self.db.run(load, readonly=True))
        check_state(state, self.model, self.now)
        for table, n in self.counts.items():
            assert state["counts"][table] >= n, f"rows disappeared from {table}"
        self.counts = state["counts"]


async def load(conn: AsyncConnection, _now: datetime) -> dict[str, Any]:
    """Everything the invariants look at, in one read."""
    reqs = {r["id"]: r for r in (await conn.execute(sa.select(requests))).mappings()}
    incs = {r["id"]: r for r in (await conn.execute(sa.select(incidents))).mappings()}
    evs = (await conn.execute(sa.select(events).order_by(events.c.id))).mappings().all()
    votes = (await conn.execute(sa.select(approvals))).mappings().all()
    entries = (await conn.execute(sa.select(knowledge.c.incident_id))).scalars().all()
    counts = {
        t.name: (await conn.execute(sa.select(sa.func.count()).select_from(t))).scalar_one()
        for t in metadata.sorted_tables
    }
    return {"requests": reqs, "incidents": incs, "events": evs, "approvals": votes,
            "knowledge": entries, "counts": counts}


def check_state(state: dict[str, Any], model: Model, now: datetime) -> None:
    reqs, incs = state["requests"], state["incidents"]
    assert set(reqs) == set(model.requests)
    assert set(incs) == set(model.incidents)
    for rid, m in model.requests.items():
        row = reqs[rid]
        assert (row["status"], row["decided_by"], row["decided_at"], row["disposition"]) == (
            m.status, m.decided_by, m.decided_at, m.disposition
        ), (row, m)
        assert row["approval_count"] == len(m.approvers)
        assert row["outcome_succeeded"] == m.outcome
        if row["status"] == "approved":
            assert row["approval_count"] >= row["required_approvals"]
            assert row["decided_at"] < row["expires_at"]
    for iid, mi in model.incidents.items():
        row = incs[iid]
        assert (row["status"], row["resolution_type"], row["disposition"],
                row["resolved_at"], row["resolved_by"]) == (
            mi.status, mi.resolution_type, mi.disposition, mi.resolved_at, mi.resolved_by
        ), (row, mi)

    # Approvals: one row per distinct approver, as many as the count.
    voters: dict[uuid.UUID, list[str]] = {}
    for v in state["approvals"]:
        voters.setdefault(v["request_id"], []).append(v["approver"])
    for rid, m in model.requests.items():
        assert sorted(voters.get(rid, [])) == sorted(m.approvers)

    # Audit: one creation event, and one terminal event for each terminal request.
    created: dict[uuid.UUID, int] = {}
    ended: dict[uuid.UUID, list[Any]] = {}
    for e in state["events"]:
        if e["request_id"] is None:
            continue
        if e["kind"] == "request_created":
            assert (e["from_status"], e["to_status"]) == (None, "pending")
            created[e["request_id"]] = created.get(e["request_id"], 0) + 1
        if e["from_status"] == "pending" and e["to_status"] in TERMINAL_VALUES:
            ended.setdefault(e["request_id"], []).append(e)
    for rid, row in reqs.items():
        assert created.get(rid) == 1
        if row["status"] in TERMINAL_VALUES:
            [event] = ended.get(rid, [None])
            assert event is not None, f"no terminal event for {row['status']} request"
            assert (event["to_status"], event["actor"], event["at"]) == (
                row["status"], row["decided_by"], row["decided_at"]
            )
        else:
            assert rid not in ended

    # One knowledge entry per resolved incident, none for open ones.
    resolved = sorted(str(i) for i, row in incs.items() if row["status"] == "resolved")
    assert sorted(str(i) for i in state["knowledge"]) == resolved
    opened = [e for e in state["events"] if e["kind"] == "incident_resolved"]
    assert sorted(str(e["incident_id"]) for e in opened) == resolved

    # Nothing pending on a resolved incident.
    for row in reqs.values():
        if row["status"] == "pending" and row["incident_id"] is not None:
            assert incs[row["incident_id"]]["status"] == "open"
    assert all(r["created_at"] <= now for r in reqs.values())


def migrated_sqlite(path: Path) -> Path:
    async def migrate() -> None:
        db = Database.from_settings(Settings(database_url=f"sqlite:///{path}"))
        try:
            await upgrade(db)
        finally:
            await db.dispose()

    asyncio.run(migrate())
    return path


def test_lifecycle_machine_on_sqlite(tmp_path: Path) -> None:
    class OnSQLite(LifecycleMachine):
        fresh_sqlite_from = migrated_sqlite(tmp_path / "template.db")

    run_state_machine_as_test(OnSQLite, settings=settings(
        max_examples=80, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    ))


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_lifecycle_machine_on_postgres(db_url: str) -> None:
    class OnPostgres(LifecycleMachine):
        url = db_url

    run_state_machine_as_test(OnPostgres, settings=settings(
        max_examples=12, stateful_step_count=25, deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    ))
