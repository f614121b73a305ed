"""Prometheus metrics. Names share the vocabulary of the log events (``request_expired``)."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from signoff.lifecycle import POLICY_ACTOR_PREFIX, EventKind, RequestStatus, disposition_for


class Metrics:
    """One registry per process (or per test), so that two apps never share counters."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests_created = Counter(
            "signoff_requests_created_total", "Approval requests created.", registry=r
        )
        self.requests_decided = Counter(
            "signoff_requests_decided_total",
            "Approval requests that ended, by disposition.",
            ["disposition"],
            registry=r,
        )
        self.requests_expired = Counter(
            "signoff_requests_expired_total", "Approval requests expired by the resolver.",
            registry=r,
        )
        self.incidents_resolved = Counter(
            "signoff_incidents_resolved_total", "Incidents resolved, by resolution type.",
            ["resolution_type"], registry=r,
        )
        self.expiry_lateness = Histogram(
            "signoff_expiry_lateness_seconds",
            "Time from a request's deadline to the moment it was expired.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.resolver_passes = Counter(
            "signoff_resolver_passes_total", "Resolver passes.", registry=r
        )
        self.resolver_wake_lag = Histogram(
            "signoff_resolver_wake_lag_seconds",
            "How late the resolver started a pass it had planned for a deadline: the timer "
            "firing after its instant (stage=timer), then the time until the pass's first "
            "transaction read its clock (stage=start).",
            ["stage"],
            buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
            registry=r,
        )
        self.resolver_errors = Counter(
            "signoff_resolver_errors_total", "Resolver failures (a batch or a single row).",
            registry=r,
        )
        self.pending = Gauge(
            "signoff_requests_pending", "Requests pending now (including overdue ones).",
            registry=r,
        )
        self.waiters = Gauge(
            "signoff_long_poll_waiters",
            "Callers waiting now on GET /approvals/{id}?wait=S in this process.", registry=r,
        )
        self.oldest_overdue = Gauge(
            "signoff_oldest_overdue_seconds",
            "How long the oldest overdue pending request has been past its deadline (0: none).",
            registry=r,
        )
        self.notifications = Counter(
            "signoff_notifications_total",
            "Notification delivery attempts, by channel and result (delivered, failed, dead).",
            ["channel", "result"], registry=r,
        )
        self.watchdog_findings = Gauge(
            "signoff_watchdog_findings",
            "Findings of each watchdog check at its last run (0: nothing found).",
            ["check", "name"], registry=r,
        )
        self.watchdog_last_run = Gauge(
            "signoff_watchdog_last_run_timestamp_seconds",
            "When the watchdogs last ran to the end (Unix time).", registry=r,
        )
        self.http_requests = Counter(
            "signoff_http_requests_total", "HTTP requests served, by route and status.",
            ["method", "route", "status"], registry=r,
        )

        self.policy_decisions = Counter(
            "signoff_policy_decisions_total",
            "Requests evaluated by the policy, by decision (approved, none, paused) and the "
            "rule that approved (or would have, while paused).",
            ["decision", "rule"], registry=r,
        )
        # Counted in plain dicts and exported by a collector: a policy of a hundred rules
        # costs a create two hundred increments, too many for locked counters.
        self.policy_evaluations: CountsByLabels = collections.Counter()
        self.policy_reasons: CountsByLabels = collections.Counter()
        r.register(_PolicyCounts(self))
        self.policy_error = Gauge(
            "signoff_policy_error",
            "1 while the policy file is broken (the last good rules stay in use), else 0.",
            registry=r,
        )
        self.policy_loaded = Gauge(
            "signoff_policy_loaded_timestamp_seconds",
            "When the rules in use were loaded (Unix time; 0: none).", registry=r,
        )
        self.policy_rules = Gauge(
            "signoff_policy_rules", "Rules in use, by mode.", ["mode"], registry=r,
        )
        self.alerts = Counter(
            "signoff_alerts_total",
            "Alertmanager alerts taken in, by what they did (opened, joined, resolved, "
            "ignored).", ["result"], registry=r,
        )

    def observe_events(self, events: Iterable[Mapping[str, Any]]) -> None:
        """Count what a committed transaction did, from the audit events it wrote.

        The events are the truth of a transaction, so counters built from them never
        miss a side effect (requests cancelled because their incident was resolved).
        """
        for event in events:
            kind = event["kind"]
            if kind == EventKind.REQUEST_CREATED:
                self.requests_created.inc()
            elif kind == EventKind.INCIDENT_RESOLVED:
                detail = event.get("detail") or {}
                self.incidents_resolved.labels(
                    resolution_type=detail.get("resolution_type", "unknown")
                ).inc()
            elif kind in _ENDINGS:
                status = RequestStatus(event["to_status"])
                disposition = disposition_for(
                    status, by_policy=str(event["actor"]).startswith(POLICY_ACTOR_PREFIX))
                if disposition is not None:
                    self.requests_decided.labels(disposition=disposition.value).inc()
                if status is RequestStatus.EXPIRED:
                    self.requests_expired.inc()


CountsByLabels = collections.Counter[tuple[str, ...]]


class _PolicyCounts(Collector):
    """``signoff_policy_evaluations_total`` (rule, mode, holds) and
    ``signoff_policy_reasons_total`` (rule, reason) from ``Metrics``' counts."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[CounterMetricFamily]:
        evaluations = CounterMetricFamily(
            "signoff_policy_evaluations",
            "Rule evaluations, by rule, mode and whether the rule held.",
            labels=["rule", "mode", "holds"])
        for key, n in list(self.metrics.policy_evaluations.items()):
            evaluations.add_metric(list(key), n)
        reasons = CounterMetricFamily(
            "signoff_policy_reasons",
            "Conditions that failed in rule evaluations, by rule and condition.",
            labels=["rule", "reason"])
        for key, n in list(self.metrics.policy_reasons.items()):
            reasons.add_metric(list(key), n)
        yield evaluations
        yield reasons


_ENDINGS = frozenset({
    EventKind.REQUEST_APPROVED, EventKind.REQUEST_REJECTED, EventKind.REQUEST_CANCELLED,
    EventKind.REQUEST_EXPIRED,
})
