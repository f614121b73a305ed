"""Evaluating the policy for one new request: every rule, each failed condition a reason.

The conditions on the request itself are checked first; a rule's ``limit`` and
``precedent`` read the database (through ``Lookups``) only when all of them hold, so a
policy of many rules costs queries only for the rules that could approve.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from signoff.lifecycle import Risk, Severity
from signoff.policy.rules import RISK_ORDER, SEVERITY_ORDER, WEEKDAYS, Policy, Rule

APPROVED, NONE, PAUSED = "approved", "none", "paused"


@dataclass(frozen=True)
class Facts:
    """What the rules look at. ``now`` is in the display time zone."""

    action: str
    requested_by: str
    risk: Risk
    severity: Severity | None
    service: str | None
    fingerprint: str | None
    now: datetime
    required_approvals: int = 1
    approvers: tuple[str, ...] = ()
    placeholder: bool = False


@dataclass(frozen=True)
class HistoryQuery:
    """What the rules that may still hold need from the database: the auto-approvals of
    ``limited`` rules for ``service`` since ``limited_since``, and people's decisions on
    ``action`` (folded) for each ``(by, key, since)`` of ``decided``."""

    action: str
    service: str | None
    limited: tuple[str, ...]
    limited_since: datetime | None
    decided: tuple[tuple[str, str, datetime], ...]


class Lookups(Protocol):
    async def history(
        self, query: HistoryQuery
    ) -> tuple[bool, list[tuple[str, str, datetime, bool]]]:
        """Whether the policy is paused, and rows ``(kind, name, at, ok)``: kind
        ``limit`` with the rule's name for each of its auto-approvals, or kind
        ``fingerprint``/``service`` for each decision by people (``ok``: approved and
        reported succeeded; false: rejected)."""


@dataclass
class Evaluation:
    rule: str
    mode: str
    holds: bool
    reasons: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)

    def fail(self, code: str, reason: str) -> None:
        self.holds = False
        self.codes.append(code)
        self.reasons.append(reason)

    def as_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "mode": self.mode, "holds": self.holds,
                "reasons": list(self.reasons)}


@dataclass
class Verdict:
    decision: str
    rule: str | None
    evaluations: list[Evaluation]

    def as_json(self) -> dict[str, Any]:
        return {"decision": self.decision, "rule": self.rule,
                "evaluations": [e.as_json() for e in self.evaluations]}


def _listed(values: list[str]) -> str:
    return ", ".join(values)


def _days(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def check_request(rule: Rule, facts: Facts, zone_name: str, folded: str | None = None
                  ) -> Evaluation:
    """The conditions that need no database, each failed one a reason (``folded``: the
    action trimmed and case-folded, when the caller has it)."""
    out = Evaluation(rule.name, rule.mode, True)
    if facts.placeholder:
        out.fail("placeholder", "the action is a placeholder (it needs analysis): "
                 "never approved automatically")
    if facts.required_approvals > 1 or facts.approvers:
        asked = (f"required_approvals {facts.required_approvals}"
                 if facts.required_approvals > 1 else "named approvers")
        out.fail("asks_for_people", f"the request asks for people ({asked}): never "
                 "approved automatically")
    if not rule.matches_folded(folded or facts.action.strip().casefold()):
        out.fail("actions", f"action {facts.action!r} matches none of actions "
                 f"{_listed(rule.actions)}")
    if rule.requesters is not None and facts.requested_by not in rule.requesters:
        out.fail("requesters", f"requested by {facts.requested_by}, who is not one of "
                 f"requesters {_listed(rule.requesters)}")
    if rule.max_risk is not None and RISK_ORDER[facts.risk] > RISK_ORDER[rule.max_risk]:
        out.fail("max_risk", f"risk {facts.risk} is above max_risk {rule.max_risk}")
    if rule.max_severity is not None:
        if facts.severity is None:
            out.fail("max_severity", f"the request has no incident, so no severity to "
                     f"compare with max_severity {rule.max_severity}")
        elif SEVERITY_ORDER[facts.severity] > SEVERITY_ORDER[rule.max_severity]:
            out.fail("max_severity", f"severity {facts.severity} is above max_severity "
                     f"{rule.max_severity}")
    if rule.services is not None:
        if facts.service is None:
            out.fail("services", "the request has no incident with a service, so it is "
                     f"not one of services {_listed(rule.services)}")
        elif facts.service not in rule.services:
            out.fail("services", f"service {facts.service} is not one of services "
                     f"{_listed(rule.services)}")
    if rule.exclude_services is not None and facts.service in rule.exclude_services:
        out.fail("exclude_services", f"service {facts.service} is in exclude_services")
    window = rule.window
    if window is not None and not window.holds(facts.now.time()):
        out.fail("hours", f"{facts.now:%H:%M} {zone_name} is outside hours {window.text}")
    if rule.weekdays is not None:
        day = WEEKDAYS[facts.now.weekday()]
        if day not in rule.weekdays:
            out.fail("weekdays", f"{day} ({facts.now:%Y-%m-%d} {zone_name}) is not one of "
                     f"weekdays {_listed(list(rule.weekdays))}")
    return out


@dataclass
class History:
    """What the rules that may still hold need from the database, read in a few
    statements for all of them: their auto-approvals, and people's decisions (each list
    sorted by time, so that a rule's window is two bisections)."""

    approvals: dict[str, list[datetime]] = field(default_factory=dict)
    decisions: dict[str, tuple[list[datetime], list[int], list[int]]] = field(
        default_factory=dict)

    @classmethod
    async def read(
        cls, rules: list[Rule], facts: Facts, lookups: Lookups
    ) -> tuple[bool, History]:
        """Whether the policy is paused, and the history: two statements at most."""
        limited = [r for r in rules if r.limit is not None]
        decided = []
        for by in ("fingerprint", "service"):
            windows = [r.precedent.within for r in rules
                       if r.precedent is not None and r.precedent.by == by]
            key = facts.fingerprint if by == "fingerprint" else facts.service
            if windows and key is not None:
                decided.append((by, key, facts.now - max(windows)))
        query = HistoryQuery(
            action=facts.action.strip().casefold(), service=facts.service,
            limited=tuple(r.name for r in limited),
            limited_since=facts.now - max(r.limit.per for r in limited if r.limit is not None)
            if limited else None,
            decided=tuple(decided))
        paused, rows = await lookups.history(query)
        out = cls()
        found: dict[str, list[tuple[datetime, bool]]] = {}
        for kind, name, at, ok in sorted(rows, key=lambda row: row[2]):
            if kind == "limit":
                out.approvals.setdefault(name, []).append(at)
            else:
                found.setdefault(kind, []).append((at, ok))
        for by, decisions in found.items():
            # Counts from the newest backwards: succeeded[i], rejected[i] are those of
            # decisions[i:].
            succeeded, rejected = [0] * (len(decisions) + 1), [0] * (len(decisions) + 1)
            for i in range(len(decisions) - 1, -1, -1):
                succeeded[i] = succeeded[i + 1] + decisions[i][1]
                rejected[i] = rejected[i + 1] + (not decisions[i][1])
            out.decisions[by] = ([at for at, _ in decisions], succeeded, rejected)
        return paused, out

    def since(self, by: str, since: datetime) -> tuple[int, int]:
        """People's (succeeded approvals, rejections) after ``since``."""
        times, succeeded, rejected = self.decisions.get(by, ([], [0], [0]))
        i = bisect_right(times, since)
        return succeeded[i], rejected[i]


def check_history(rule: Rule, facts: Facts, out: Evaluation, history: History) -> None:
    """A rule's ``limit`` and ``precedent``, from what ``History`` read."""
    now = facts.now
    if rule.limit is not None:
        times = history.approvals.get(rule.name, [])
        done = len(times) - bisect_right(times, now - rule.limit.per)
        if done >= rule.limit.count:
            where = f"service {facts.service}" if facts.service else "requests with no service"
            out.fail("limit", f"limit reached: {done} auto-approvals by this rule for {where} "
                     f"in the last {_days(rule.limit.per)} (limit {rule.limit.count})")
    if rule.precedent is not None:
        p = rule.precedent
        key = facts.fingerprint if p.by == "fingerprint" else facts.service
        if key is None:
            out.fail("precedent", f"precedent is by {p.by}, and the request has none")
            return
        succeeded, rejected = history.since(p.by, now - p.within)
        if rejected:
            out.fail("precedent", f"a person rejected this action for {p.by} {key} in the "
                     f"last {_days(p.within)} ({rejected} rejection(s))")
        elif succeeded < p.approved:
            out.fail("precedent", f"only {succeeded} of the {p.approved} approvals by people "
                     f"with a reported success needed for {p.by} {key} in the last "
                     f"{_days(p.within)}")


async def evaluate(policy: Policy, facts: Facts, lookups: Lookups, *, zone_name: str
                   ) -> Verdict:
    """Every rule, in file order; the first ``enforce`` rule that holds approves (unless
    the policy is paused: then the decision is ``paused`` and people decide). Without a
    rule that holds on the request itself, the database is not read at all."""
    folded = facts.action.strip().casefold()
    evaluations = [check_request(rule, facts, zone_name, folded) for rule in policy.rules]
    open_rules = [r for r, e in zip(policy.rules, evaluations, strict=True) if e.holds]
    paused = False
    if open_rules:
        paused, history = await History.read(open_rules, facts, lookups)
        for rule, out in zip(policy.rules, evaluations, strict=True):
            if out.holds:
                check_history(rule, facts, out, history)
    chosen = next((e.rule for e in evaluations if e.holds and e.mode == "enforce"), None)
    if chosen is None:
        return Verdict(NONE, None, evaluations)
    return Verdict(PAUSED if paused else APPROVED, chosen, evaluations)
