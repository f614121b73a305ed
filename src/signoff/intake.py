"""Alertmanager intake: its webhook payload (version 4) turned into incidents.

A firing alert opens an incident with the alert's fingerprint (or joins the open one); a
resolved alert resolves the open incident with that fingerprint as ``alert_resolved``
(its pending requests are cancelled), or is ignored when none is open. All the alerts of
one payload are taken in one transaction: a payload that is not version 4 or not
well-formed is refused whole (422) before anything is written.
"""

from __future__ import annotations

from itertools import groupby
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from signoff import errors, store
from signoff.lifecycle import Principal, Role, Severity
from signoff.logs import get_logger
from signoff.metrics import Metrics
from signoff.schemas import MAX_TEXT, Name, Storable
from signoff.service_policy import T, Work, allow
from signoff.settings import Settings

SOURCE = "alertmanager"
MAX_ALERTS = 10_000
log = get_logger("signoff.intake")

LabelText = Annotated[StrictStr, Field(max_length=MAX_TEXT), Storable]


class Alert(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    status: Literal["firing", "resolved"]
    labels: dict[LabelText, LabelText]
    annotations: dict[LabelText, LabelText] = Field(default_factory=dict)
    fingerprint: Annotated[Name, Field(max_length=1_000)]


class AlertmanagerIn(BaseModel):
    """Alertmanager's webhook payload; only what signoff uses is checked."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    version: Literal["4"] = Field(description="The payload version: only \"4\" is taken.")
    alerts: Annotated[list[Alert], Field(max_length=MAX_ALERTS)]


def incident_of(alert: Alert, settings: Settings) -> dict[str, Any]:
    """The incident a firing alert opens (``POST /incidents``'s fields)."""
    labels, notes = alert.labels, alert.annotations
    raw = labels.get("severity", "").strip().casefold()
    severity = settings.severity_map.get(raw, Severity.MEDIUM)
    title = (notes.get("summary") or labels.get("alertname") or "").strip()
    return {
        "title": title or f"alert {alert.fingerprint}",
        "severity": severity.value,
        "service": labels.get(settings.alert_service_label) or None,
        "source": SOURCE,
        "fingerprint": alert.fingerprint,
        "labels": dict(labels),
        "description": notes.get("description") or None,
    }


class IntakeOperations:
    """Mixed into ``Service``: the attributes and the unit of work are the service's."""

    settings: Settings
    metrics: Metrics

    async def _write(self, work: Work[T]) -> T:
        raise NotImplementedError

    async def take_alerts(
        self, who: Principal, body: AlertmanagerIn | errors.InvalidInput
    ) -> dict[str, int]:
        """Every alert of one Alertmanager payload, in one transaction:
        ``{"opened", "joined", "resolved", "ignored"}``."""
        allow(who, Role.REQUESTER)
        if isinstance(body, errors.InvalidInput):
            raise body
        settings = self.settings

        async def work(conn: Any, now: Any) -> dict[str, int]:
            counts = dict.fromkeys(("opened", "joined", "resolved", "ignored"), 0)
            # In order, a run of alerts of one status at a time, each run in a few
            # statements: the same fingerprint may fire, resolve and fire again.
            for status, run in groupby(body.alerts, key=lambda a: a.status):
                alerts = list(run)
                if status == "firing":
                    opened, joined = await store.open_alert_incidents(
                        conn, now, actor=who.name,
                        alerts=[incident_of(a, settings) for a in alerts])
                    counts["opened"] += opened
                    counts["joined"] += joined
                else:
                    resolved, ignored = await store.resolve_alert_incidents(
                        conn, now, actor=who.name, fingerprints=[a.fingerprint for a in alerts])
                    counts["resolved"] += resolved
                    counts["ignored"] += ignored
            return counts

        counts = await self._write(work)
        for result, n in counts.items():
            if n:
                self.metrics.alerts.labels(result=result).inc(n)
        log.info("alerts_taken", by=who.name, **counts)
        return counts
