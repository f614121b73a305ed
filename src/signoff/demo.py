"""``signoff serve --demo``: something to look at within a minute.

On an empty database it makes tokens (printed once), a few incidents with requests whose
deadlines fall from 20 seconds to 3 minutes ahead (so one ends within the first minute),
and, while the server runs, a simulated automation that keeps asking for sign-off. On a
database that holds anything it refuses: a demo never mixes with real data.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random

from signoff.lifecycle import Principal, Role
from signoff.logs import get_logger
from signoff.schemas import IncidentIn, RequestIn
from signoff.service import Service

log = get_logger("signoff.demo")
TOKENS = {"alice": Role.APPROVER, "bob": Role.APPROVER, "remediator": Role.REQUESTER,
          "admin": Role.ADMIN}
AUTOMATION = Principal(name="remediator", role=Role.REQUESTER)
# Seconds between the simulated automation's requests.
ASK_EVERY = 40.0

SCENARIOS = [
    ("checkout latency p99 above 2 s", "critical", "checkout",
     "kubectl rollout restart deployment/checkout", "high",
     {"namespace": "shop", "deployment": "checkout"},
     "Latency rose right after the 14:02 deploy; a restart cleared the same symptom twice "
     "this week."),
    ("disk 91% full on db-replica-2", "high", "postgres",
     "prune WAL archives older than 3 days", "medium",
     {"host": "db-replica-2", "keep_days": 3},
     "Archives are copied off-site nightly; the oldest three days are already there."),
    ("payment webhook 5xx rate 12%", "critical", "payments",
     "roll back payments-api to v2.41.0", "high",
     {"service": "payments-api", "to": "v2.41.0"},
     "Errors began with v2.42.0; v2.41.0 ran for a week without them."),
    ("search index lagging 40 min", "medium", "search",
     "NO_ACTION", "low", {},
     "The analysis did not finish: no action could be proposed."),
    ("cache hit ratio dropped to 30%", "info", "cache",
     "scale redis-cache to 5 replicas", "low",
     {"statefulset": "redis-cache", "replicas": 5},
     "Evictions tripled with the traffic of the campaign that started at 09:00."),
]
# The first requests' deadlines: one ends within the first minute.
DEADLINES = [20, 45, 90, 150, 180]


async def seed(service: Service) -> dict[str, str]:
    """Tokens, incidents and requests for the demo; the tokens' secrets by name."""
    tokens = {name: await service.create_token(name, role) for name, role in TOKENS.items()}
    for scenario, ttl in zip(SCENARIOS, DEADLINES, strict=True):
        await ask(service, scenario, ttl)
    return tokens


async def ask(service: Service, scenario: tuple[object, ...], ttl: int) -> None:
    title, severity, svc, action, risk, params, rationale = scenario
    incident, _ = await service.create_incident(AUTOMATION, IncidentIn.model_validate({
        "title": title, "severity": severity, "service": svc, "source": "demo",
        "fingerprint": f"demo:{svc}:{title}"}))
    await service.create_request(AUTOMATION, RequestIn.model_validate({
        "incident_id": incident["id"], "action": action, "params": params, "risk": risk,
        "rationale": rationale, "ttl_seconds": ttl}))


async def keep_asking(service: Service, stop: asyncio.Event) -> None:
    """The simulated automation: a new request every ``ASK_EVERY`` seconds, until stopped."""
    scenarios = itertools.cycle(SCENARIOS)
    rng = random.Random()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), ASK_EVERY)
        if stop.is_set():
            return
        try:
            await ask(service, next(scenarios), rng.randint(20, 180))
        except Exception as exc:  # a demo that cannot ask now asks again later
            log.warning("demo_ask_failed", error=repr(exc))
