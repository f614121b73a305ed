"""The policy's operations, part of the service (``Service`` inherits them).

The policy is evaluated in the create operation's transaction (``judge_request``), so an
auto-approval and its request commit together; the kill switch lives in the database, so
every replica reads the same one in that transaction. Precedents travel with every
request answer (``attach_precedents``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from signoff import errors, store
from signoff.lifecycle import Principal, Risk, Role, Severity, role_allows
from signoff.logs import get_logger
from signoff.metrics import Metrics
from signoff.policy import Facts, PolicyHolder, Verdict, evaluate, shadow_figures
from signoff.schemas import PauseIn, RequestIn
from signoff.settings import Settings
from signoff.views import iso, knowledge_view

T = TypeVar("T")
Work = Callable[[AsyncConnection, datetime], Awaitable[T]]
log = get_logger("signoff.service")


def allow(who: Principal, role: Role) -> None:
    """Refuse (403) unless ``who``'s role may do what needs ``role``."""
    if not role_allows(who.role, role):
        raise errors.Forbidden(f"this needs the {role.value} role; the token is {who.role}")


def pause_view(row: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"by": row["paused_by"], "at": iso(row["paused_at"]), "reason": row["reason"]}


def holder_metrics(metrics: Metrics) -> Callable[[PolicyHolder], None]:
    """What the policy's gauges show after each (re)load of its file."""
    def update(holder: PolicyHolder) -> None:
        metrics.policy_error.set(1 if holder.error else 0)
        if holder.loaded_at is not None:
            metrics.policy_loaded.set(holder.loaded_at.timestamp())
        rules = [] if holder.policy is None else holder.policy.rules
        for mode in ("enforce", "shadow"):
            metrics.policy_rules.labels(mode=mode).set(sum(r.mode == mode for r in rules))
    return update


async def attach_precedents(
    conn: AsyncConnection, rows: Sequence[Mapping[str, Any]], outs: Sequence[dict[str, Any]],
) -> None:
    """Each answer gets ``precedents``: up to 5 knowledge entries for its fingerprint,
    else its service, newest first."""
    keyed = [r for r in rows if r["fingerprint"] is not None or r["service"] is not None]
    found = await store.precedents_of(conn, keyed) if keyed else {}
    for row, out in zip(rows, outs, strict=True):
        out["precedents"] = [knowledge_view(k) for k in found.get(row["id"], [])]


class PolicyOperations:
    """Mixed into ``Service``: the attributes and the unit of work are the service's."""

    settings: Settings
    metrics: Metrics
    policy: PolicyHolder

    async def _write(self, work: Work[T]) -> T:
        raise NotImplementedError

    async def _read(self, work: Work[T]) -> T:
        raise NotImplementedError

    # -- at create ----------------------------------------------------------------------

    async def judge_request(
        self, conn: AsyncConnection, now: datetime, who: Principal, body: RequestIn,
        incident: Mapping[str, Any] | None,
    ) -> Verdict | None:
        """The policy's verdict on a request about to be created (None: no policy)."""
        policy = self.policy.policy
        if policy is None:
            return None
        facts = Facts(
            action=body.action, requested_by=who.name, risk=Risk(body.risk),
            severity=None if incident is None else Severity(incident["severity"]),
            service=None if incident is None else incident["service"],
            fingerprint=None if incident is None else incident["fingerprint"],
            now=now.astimezone(self.settings.zone),
            required_approvals=body.required_approvals,
            approvers=tuple(body.approvers or ()),
            placeholder=self.settings.is_placeholder(body.action),
        )
        return await evaluate(policy, facts, store.PolicyLookups(conn),
                              zone_name=self.settings.display_tz)

    async def incident_for(
        self, conn: AsyncConnection, body: RequestIn
    ) -> Mapping[str, Any] | None:
        """The open incident a new request is for (locked), by id or by fingerprint."""
        if body.incident_id is not None and body.fingerprint is not None:
            raise errors.InvalidInput("give incident_id or fingerprint, not both")
        iid = body.incident_id
        if body.fingerprint is not None:
            iid = await store.open_incident_id(conn, body.fingerprint)
        if iid is None:
            return None
        return {"id": iid, **(await store.lock_incident(conn, iid))}

    def count_verdict(self, verdict: Verdict | None, request_id: str) -> None:
        """Metrics and a log line of a committed verdict."""
        if verdict is None:
            return
        m = self.metrics
        m.policy_decisions.labels(decision=verdict.decision, rule=verdict.rule or "").inc()
        evaluations = verdict.evaluations
        m.policy_evaluations.update(
            (e.rule, e.mode, "true" if e.holds else "false") for e in evaluations)
        m.policy_reasons.update((e.rule, code) for e in evaluations for code in e.codes)
        log.info("policy_evaluated", request_id=request_id, decision=verdict.decision,
                 rule=verdict.rule, held=sum(e.holds for e in verdict.evaluations))

    # -- operations ---------------------------------------------------------------------

    async def policy_state(self, who: Principal) -> dict[str, Any]:
        """``GET /policy``: the rules in use, their file's error if any, and the pause."""
        allow(who, Role.VIEWER)
        pause = await self._read(lambda conn, now: store.current_pause(conn))
        return {**self.policy.shown(), "paused": pause_view(pause)}

    async def pause_policy(
        self, who: Principal, body: PauseIn | errors.InvalidInput
    ) -> dict[str, Any]:
        """Stop all auto-approval, on every replica at once; audited with who and why."""
        allow(who, Role.ADMIN)
        if isinstance(body, errors.InvalidInput):
            raise body
        await self._write(lambda conn, now: store.pause_policy(
            conn, now, actor=who.name, reason=body.reason))
        log.warning("policy_paused", by=who.name, reason=body.reason)
        return await self.policy_state(who)

    async def resume_policy(self, who: Principal) -> dict[str, Any]:
        """Let the policy approve again; audited."""
        allow(who, Role.ADMIN)
        await self._write(lambda conn, now: store.resume_policy(conn, now, actor=who.name))
        log.warning("policy_resumed", by=who.name)
        return await self.policy_state(who)

    async def policy_shadow(
        self, who: Principal, *, since: datetime | None = None, until: datetime | None = None
    ) -> dict[str, Any]:
        """Each rule's verdicts against people's decisions over requests that ended in
        ``[since, until)``."""
        allow(who, Role.VIEWER)
        if since is not None and until is not None and since > until:
            raise errors.InvalidInput("since must not be after until")
        rows = await self._read(lambda conn, now: store.ended_with_policy(
            conn, since=since, until=until))
        return shadow_figures(self.policy.policy, rows)
