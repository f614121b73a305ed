"""Evaluating the policy for one new request: every rule, each failed condition a reason.

The conditions on the request itself are checked first; a rule's ``limit`` and
``precedent`` read the database (through ``Lookups``) only when all of them hold, so a
policy of many rules costs queries only for the rules that could approve.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from signoff.lifecycle import Risk, Severity
from signoff.policy.rules import RISK_ORDER, SEVERITY_ORDER, WEEKDAYS, Check, Policy, Reach

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
        self, query: HistoryQuery, *, locked: bool = False
    ) -> tuple[bool, list[tuple[str, str, datetime, bool]]]:
        """Whether the policy is paused, and rows ``(kind, name, at, ok)``, read in one
        statement (after taking the lock of the limits for ``query.service`` first when
        ``locked``): kind
        ``limit`` with the rule's name for each of its auto-approvals, or kind
        ``fingerprint``/``service`` for each decision by people (``ok``: approved and
        reported succeeded; false: rejected)."""


@dataclass(slots=True)
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


def check_request(rule: Check, facts: Facts, zone_name: str, folded: str) -> Evaluation:
    """The conditions that need no database, each failed one a reason (``folded``: the
    action trimmed and case-folded)."""
    out = Evaluation(rule.name, rule.mode, True)
    if facts.placeholder:
        out.fail("placeholder", "the action is a placeholder (it needs analysis): "
                 "never approved automatically")
    if facts.required_approvals > 1 or facts.approvers:
        asked = (f"required_approvals {facts.required_approvals}"
                 if facts.required_approvals > 1 else "named approvers")
        out.fail("asks_for_people", f"the request asks for people ({asked}): never "
                 "approved automatically")
    if rule.pattern.match(folded) is None:
        out.fail("actions", f"action {facts.action!r} matches none of actions "
                 f"{rule.actions}")
    if rule.requesters is not None and facts.requested_by not in rule.requesters:
        out.fail("requesters", f"requested by {facts.requested_by}, who is not one of "
                 f"requesters {rule.requesters_text}")
    if rule.max_risk is not None and RISK_ORDER[facts.risk] > rule.max_risk:
        out.fail("max_risk", f"risk {facts.risk} is above max_risk {rule.rule.max_risk}")
    if rule.max_severity is not None:
        if facts.severity is None:
            out.fail("max_severity", f"the request has no incident, so no severity to "
                     f"compare with max_severity {rule.rule.max_severity}")
        elif SEVERITY_ORDER[facts.severity] > rule.max_severity:
            out.fail("max_severity", f"severity {facts.severity} is above max_severity "
                     f"{rule.rule.max_severity}")
    if rule.services is not None:
        if facts.service is None:
            out.fail("services", "the request has no incident with a service, so it is "
                     f"not one of services {rule.services_text}")
        elif facts.service not in rule.services:
            out.fail("services", f"service {facts.service} is not one of services "
                     f"{rule.services_text}")
    if rule.exclude_services is not None and facts.service in rule.exclude_services:
        out.fail("exclude_services", f"service {facts.service} is in exclude_services")
    window = rule.window
    if window is not None and not window.holds(facts.now.time()):
        out.fail("hours", f"{facts.now:%H:%M} {zone_name} is outside hours {window.text}")
    if rule.weekdays is not None:
        day = WEEKDAYS[facts.now.weekday()]
        if day not in rule.weekdays:
            out.fail("weekdays", f"{day} ({facts.now:%Y-%m-%d} {zone_name}) is not one of "
                     f"weekdays {rule.weekdays_text}")
    return out


@dataclass
class History:
    """What the rules that may still hold need from the database, read in one statement
    for all of them: their auto-approvals, and people's decisions (each list of POSIX
    timestamps sorted by time, so that a rule's window is two bisections)."""

    approvals: dict[str, list[float]] = field(default_factory=dict)
    decisions: dict[str, tuple[list[float], list[int], list[int]]] = field(
        default_factory=dict)

    @staticmethod
    def query(reach: Reach, facts: Facts) -> HistoryQuery:
        """What rules of that ``reach`` need read for these facts."""
        decided = []
        for by, key in (("fingerprint", facts.fingerprint), ("service", facts.service)):
            within = reach.windows.get(by)
            if within is not None and key is not None:
                decided.append((by, key, facts.now - within))
        return HistoryQuery(
            action=facts.action.strip().casefold(), service=facts.service,
            limited=reach.limited,
            limited_since=None if reach.limit_per is None else facts.now - reach.limit_per,
            decided=tuple(decided))

    @classmethod
    def of(cls, rows: list[tuple[str, str, datetime, bool]]) -> History:
        out = cls()
        found: dict[str, list[tuple[float, bool]]] = {}
        for kind, name, at, ok in sorted(rows, key=lambda row: row[2]):
            if kind == "limit":
                out.approvals.setdefault(name, []).append(at.timestamp())
            else:
                found.setdefault(kind, []).append((at.timestamp(), ok))
        for by, decisions in found.items():
            # Counts from the newest backwards: succeeded[i], rejected[i] are those of
            # decisions[i:].
            succeeded, rejected = [0] * (len(decisions) + 1), [0] * (len(decisions) + 1)
            for i in range(len(decisions) - 1, -1, -1):
                succeeded[i] = succeeded[i + 1] + decisions[i][1]
                rejected[i] = rejected[i + 1] + (not decisions[i][1])
            out.decisions[by] = ([at for at, _ in decisions], succeeded, rejected)
        return out


def check_history(rule: Check, facts: Facts, out: Evaluation, history: History,
                  now: float) -> None:
    """A rule's ``limit`` and ``precedent``, from what ``History`` read (``now``: the
    facts' time as a POSIX timestamp)."""
    limit = rule.limit
    if limit is not None:
        times = history.approvals.get(rule.name)
        done = 0 if not times else len(times) - bisect_right(times, now - rule.limit_seconds)
        if done >= limit.count:
            where = f"service {facts.service}" if facts.service else "requests with no service"
            out.fail("limit", f"limit reached: {done} auto-approvals by this rule for {where} "
                     f"in the last {rule.limit_text} (limit {limit.count})")
    p = rule.precedent
    if p is None:
        return
    by = p.by
    key = facts.fingerprint if by == "fingerprint" else facts.service
    if key is None:
        out.fail("precedent", f"precedent is by {by}, and the request has none")
        return
    found = history.decisions.get(by)
    succeeded = rejected = 0
    if found is not None:
        i = bisect_right(found[0], now - rule.within_seconds)
        succeeded, rejected = found[1][i], found[2][i]
    if rejected:
        out.fail("precedent", f"a person rejected this action for {by} {key} in the "
                 f"last {rule.within_text} ({rejected} rejection(s))")
    elif succeeded < p.approved:
        out.fail("precedent", f"only {succeeded} of the {p.approved} approvals by people "
                 f"with a reported success needed for {by} {key} in the last "
                 f"{rule.within_text}")


def _chosen(checked: list[tuple[Check, Evaluation]]) -> Check | None:
    return next((c for c, e in checked if e.holds and c.mode == "enforce"), None)


async def evaluate(policy: Policy, facts: Facts, lookups: Lookups, *, zone_name: str
                   ) -> Verdict:
    """Every rule, in file order; the first ``enforce`` rule that holds approves (unless
    the policy is paused: then the decision is ``paused`` and people decide). Without a
    rule that holds on the request itself, the database is not read at all.

    The history is read once, without a lock. Only when it would let a rule with a
    ``limit`` approve is it read again under that limit's lock: another create may be
    taking the last place at this moment, and only a read after the lock sees it (a read
    without it can only count fewer approvals, never more)."""
    folded = facts.action.strip().casefold()
    evaluations = [check_request(c, facts, zone_name, folded) for c in policy.checks]
    checked = [(c, e) for c, e in zip(policy.checks, evaluations, strict=True) if e.holds]
    if not checked:
        return Verdict(NONE, None, evaluations)
    reach = (policy.reach if len(checked) == len(policy.checks)
             else Reach.of([c for c, _ in checked]))
    query = History.query(reach, facts)
    paused, rows = await lookups.history(query)
    history = History.of(rows)
    now = facts.now.timestamp()
    for rule, out in checked:
        check_history(rule, facts, out, history, now)
    chosen = _chosen(checked)
    if chosen is not None and chosen.limit is not None and not paused:
        paused, rows = await lookups.history(query, locked=True)
        history = History.of(rows)
        for rule, out in checked:
            out.holds, out.codes, out.reasons = True, [], []
            check_history(rule, facts, out, history, now)
        chosen = _chosen(checked)
    if chosen is None:
        return Verdict(NONE, None, evaluations)
    return Verdict(PAUSED if paused else APPROVED, chosen.name, evaluations)
