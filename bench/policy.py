"""What does evaluating a policy of 100 rules add to a create, on a large PostgreSQL
database? And how long does an Alertmanager payload of 1,000 alerts take?

    python bench/policy.py --database-url postgresql://postgres@127.0.0.1:5432/postgres \
        [--n 1000000] [--creates 4000] [--block 10] 2>/dev/null

Creates a scratch database beside the given one (dropped at the end) and loads N ended
requests with their resolved incidents and N knowledge entries (set-based SQL with
``generate_series``; fingerprints and services spread over 9,973 and 997 values, people's
decisions, rejections, timeouts and the policy's own approvals among them), then VACUUM
ANALYZE: a database that has grown to a million rows has been vacuumed by autovacuum many
times, which keeps the visibility map that the precedent indexes' index-only scans rely
on (a table just loaded has none, and every row read would visit the table too).

Then it creates requests through the service, each for an open incident whose
fingerprint and service have history, in alternating blocks (``--block``, 10 by default):
without a policy (the baseline, measured in the same run) and with a policy of 100 rules,
every one of them with a ``limit`` and a ``precedent`` condition (half by fingerprint, half
by service, windows of 1 to 100 days) and actions that match, so that every rule needs its
history. The rules are in shadow mode: each create is evaluated in full and changes
nothing else. It prints p50 and p99 of each, what the policy adds, and their ratio; the
p50 and p99 of the policy's own steps timed inside each create (``PolicySteps``); the
``COMMIT`` of each create timed alone (``Commits``: the WAL's flush to disk, the same
work with or without a policy, and the slowest step of the slowest creates on a shared
disk), and each series without it; then the time to take 1,000 firing alerts, and 1,000
resolved ones, in one transaction each. The last line printed is one JSON object. The
service logs JSON lines at ``--log-level`` (default info, as in production) on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from signoff import service as service_module
from signoff.collector import Collector
from signoff.db import Database
from signoff.intake import AlertmanagerIn
from signoff.lifecycle import Principal, Role
from signoff.logs import configure_logging
from signoff.metrics import Metrics
from signoff.migrate import upgrade
from signoff.policy import PolicyHolder
from signoff.policy.evaluate import Verdict
from signoff.schemas import RequestIn
from signoff.service import Service
from signoff.settings import Settings

FINGERPRINTS, SERVICES = 9973, 997
LOAD = [
    # Resolved incidents over the last year.
    """INSERT INTO incidents (id, fingerprint, title, severity, service, labels, status,
           opened_at, resolved_at, resolution_type, disposition, resolved_by)
       SELECT md5('i' || g)::uuid, 'fp-' || (g % 9973), 'incident ' || g, 'high',
              'svc-' || (g % 997), '{}', 'resolved',
              now() - interval '365 days' * (1 - g::float8 / $1),
              now() - interval '365 days' * (1 - g::float8 / $1) + interval '10 minutes',
              'action', 'human_approved', 'bot'
       FROM generate_series(1, $1) AS g""",
    # One request each: 60% approved by people and succeeded, 1% rejected, 19% expired,
    # 10% approved by one of 100 rules, 10% cancelled.
    """INSERT INTO approval_requests (id, incident_id, action, params, risk, requested_by,
           status, disposition, required_approvals, approval_count, decided_by, created_at,
           expires_at, decided_at, outcome_succeeded, outcome_at, fingerprint, service)
       SELECT md5('r' || g)::uuid, md5('i' || g)::uuid, 'restart pod web-' || (g % 7), '{}',
              'medium', 'bot',
              CASE WHEN b < 60 OR b BETWEEN 80 AND 89 THEN 'approved' WHEN b = 60
                   THEN 'rejected' WHEN b < 80 THEN 'expired' ELSE 'cancelled' END,
              CASE WHEN b < 60 THEN 'human_approved' WHEN b = 60 THEN 'human_rejected'
                   WHEN b < 80 THEN 'timeout_ignored' WHEN b < 90 THEN 'auto_repair'
                   ELSE 'cancelled' END,
              1, CASE WHEN b < 60 THEN 1 ELSE 0 END,
              CASE WHEN b < 61 THEN 'alice' WHEN b < 80 THEN 'timeout'
                   WHEN b < 90 THEN 'policy:rule-' || (g % 100) ELSE 'bot' END,
              t, t + interval '15 minutes', t + interval '2 minutes',
              CASE WHEN b < 60 OR b BETWEEN 80 AND 89 THEN true END,
              CASE WHEN b < 60 OR b BETWEEN 80 AND 89 THEN t + interval '5 minutes' END,
              'fp-' || (g % 9973), 'svc-' || (g % 997)
       FROM (SELECT g, g % 100 AS b, now() - interval '365 days' * (1 - g::float8 / $1) AS t
             FROM generate_series(1, $1) AS g) AS s""",
    """INSERT INTO knowledge_entries (id, incident_id, created_at, service, fingerprint, title,
           resolution_type, disposition, actions, summary)
       SELECT md5('k' || g)::uuid, md5('i' || g)::uuid,
              now() - interval '365 days' * (1 - g::float8 / $1) + interval '10 minutes',
              'svc-' || (g % 997), 'fp-' || (g % 9973), 'incident ' || g, 'action',
              'human_approved', '[]', 'restarted, succeeded'
       FROM generate_series(1, $1) AS g""",
]


def policy_text(rules: int) -> str:
    out = []
    for n in range(rules):
        by = "fingerprint" if n % 2 == 0 else "service"
        out.append(f"""
[[rules]]
name = "rule-{n}"
mode = "shadow"
actions = ["restart pod *", "scale web-{n}"]
requesters = ["bench"]
max_risk = "high"
limit = {{ count = {1000 + n}, per = "{1 + n % 24}h" }}
precedent = {{ approved = {1 + n % 5}, within = "{1 + n}d", by = "{by}" }}
""")
    return "".join(out)


def _with_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _load(scratch: str, n: int) -> None:
    conn = await asyncpg.connect(scratch)
    try:
        started = time.perf_counter()
        for statement in LOAD:
            await conn.execute(statement, n)
        await conn.execute("VACUUM ANALYZE")
        print(f"loaded {n:,} requests, incidents and knowledge entries in "
              f"{time.perf_counter() - started:.1f} s")
    finally:
        await conn.close()


class PolicySteps:
    """Times the policy's own steps inside each create: its verdict (the history read
    included), the record written, the record answered, the counts and log line. Their
    sum per create is what evaluating the policy adds, measured where it is spent rather
    than as the difference of two series' percentiles."""

    def __init__(self, service: Service) -> None:
        self.spent = 0.0
        self.per_create: list[float] = []
        judge, count = service.judge_request, service.count_verdict
        as_json, encode = Verdict.as_json, service_module.encode_verdict  # type: ignore[attr-defined]

        async def judging(*args: Any) -> Any:
            began = time.perf_counter()
            try:
                return await judge(*args)
            finally:
                self.spent += time.perf_counter() - began

        def timed(call: Any) -> Any:
            def run(*args: Any) -> Any:
                began = time.perf_counter()
                try:
                    return call(*args)
                finally:
                    self.spent += time.perf_counter() - began
            return run

        service.judge_request = judging  # type: ignore[method-assign, assignment]
        service.count_verdict = timed(count)  # type: ignore[method-assign]
        Verdict.as_json = timed(as_json)  # type: ignore[method-assign]
        service_module.encode_verdict = timed(encode)  # type: ignore[attr-defined]

    def start(self) -> None:
        self.spent = 0.0

    def stop(self) -> None:
        self.per_create.append(self.spent * 1000)


class Commits:
    """Times each ``COMMIT`` the service sends (asyncpg's ``Connection.execute``, through
    which ``signoff.db`` ends its transactions): the time of the last one, in ms."""

    def __init__(self) -> None:
        self.last = 0.0
        execute = asyncpg.connection.Connection.execute

        async def timed(conn: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            if not query.endswith("COMMIT"):
                return await execute(conn, query, *args, **kwargs)
            began = time.perf_counter()
            try:
                return await execute(conn, query, *args, **kwargs)
            finally:
                self.last = (time.perf_counter() - began) * 1000

        asyncpg.connection.Connection.execute = timed


class Series:
    """One side's creates: each one's time, and that of its ``COMMIT``."""

    def __init__(self) -> None:
        self.took: list[float] = []
        self.commits: list[float] = []

    def figures(self) -> dict[str, float]:
        rest = [t - c for t, c in zip(self.took, self.commits, strict=True)]
        return {"p50": round(statistics.median(self.took), 3),
                "p99": round(_percentile(self.took, 0.99), 3),
                "commit_p50": round(statistics.median(self.commits), 3),
                "commit_p99": round(_percentile(self.commits, 0.99), 3),
                "without_commit_p50": round(statistics.median(rest), 3),
                "without_commit_p99": round(_percentile(rest, 0.99), 3)}


async def _creates(service: Service, incidents: list[str], who: Principal, commits: Commits,
                   into: Series | None = None, steps: PolicySteps | None = None) -> None:
    for n, incident_id in enumerate(incidents):
        body = RequestIn.model_validate({"incident_id": incident_id,
                                         "action": f"restart pod web-{n % 7}"})
        if steps is not None:
            steps.start()
        began = time.perf_counter()
        await service.create_request(who, body)
        took = (time.perf_counter() - began) * 1000
        if into is not None:
            into.took.append(took)
            into.commits.append(commits.last)
        if steps is not None:
            steps.stop()


async def _alerts(service: Service, who: Principal, status: str, count: int) -> float:
    payload = AlertmanagerIn.model_validate({"version": "4", "alerts": [
        {"status": status, "labels": {"alertname": "Bench", "service": f"svc-{n % 997}",
                                      "severity": "warning"},
         "annotations": {"summary": f"bench alert {n}"}, "fingerprint": f"bench-{n}"}
        for n in range(count)]})
    began = time.perf_counter()
    counts = await service.take_alerts(who, payload)
    took = time.perf_counter() - began
    assert sum(counts.values()) == count, counts
    return took


async def run(url: str, n: int, creates: int, rules: int, block: int) -> dict[str, Any]:
    name = f"signoff_bench_policy_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    scratch = _with_database(url, name)
    try:
        settings = Settings(database_url=scratch, db_pool_size=2)
        db = Database.from_settings(settings)
        try:
            await upgrade(db)
            await _load(scratch, n)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "policy.toml"
                path.write_text(policy_text(rules))
                holder = PolicyHolder(path)
                holder.load()
                plain = Service(db, settings, Metrics())
                judged = Service(db, settings, Metrics(), holder)
                steps = PolicySteps(judged)
                who = Principal("bench", Role.REQUESTER)
                incidents = []
                for i in range(100 + creates * 2):  # open incidents with history
                    made, _ = await plain.create_incident(who, _incident(i))
                    incidents.append(made["id"])
                base, with_policy, commits = Series(), Series(), Commits()
                # As in `signoff serve`: the garbage collector's full passes kept off
                # what the process holds for good (signoff.collector).
                collecting = asyncio.create_task(Collector().run())
                await _creates(plain, incidents[:50], who, commits)  # warm up both paths
                await _creates(judged, incidents[50:100], who, commits)
                steps.per_create.clear()
                for start in range(100, 100 + creates * 2 - 2 * block + 1, 2 * block):
                    await _creates(plain, incidents[start:start + block], who, commits, base)
                    await _creates(judged, incidents[start + block:start + 2 * block], who,
                                   commits, with_policy, steps)
                collecting.cancel()
                await asyncio.gather(collecting, return_exceptions=True)
                firing = await _alerts(plain, who, "firing", 1000)
                resolved = await _alerts(plain, who, "resolved", 1000)
        finally:
            await db.dispose()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    figures = {"baseline_ms": base.figures(), "policy_ms": with_policy.figures()}
    figures["policy_steps_ms"] = {"p50": round(statistics.median(steps.per_create), 3),
                                  "p99": round(_percentile(steps.per_create, 0.99), 3)}
    added = {q: round(figures["policy_ms"][q] - figures["baseline_ms"][q], 3)
             for q in ("p50", "p99", "without_commit_p50", "without_commit_p99")}
    ratio = round(figures["policy_ms"]["p99"] / figures["baseline_ms"]["p99"], 2)
    for name, series in (("without a policy", base), (f"with {rules} rules", with_policy)):
        f = series.figures()
        print(f"creates {name}: p50 {f['p50']:.3f} ms, p99 {f['p99']:.3f} ms "
              f"({len(series.took)} creates); their COMMIT p50 {f['commit_p50']:.3f} ms, "
              f"p99 {f['commit_p99']:.3f} ms; without it p50 {f['without_commit_p50']:.3f} ms, "
              f"p99 {f['without_commit_p99']:.3f} ms")
    print(f"the policy adds p50 {added['p50']:.3f} ms, p99 {added['p99']:.3f} ms "
          f"(p99 ratio {ratio}); to the creates without their COMMIT p50 "
          f"{added['without_commit_p50']:.3f} ms, p99 {added['without_commit_p99']:.3f} ms")
    print(f"the policy's own steps in each create: p50 {figures['policy_steps_ms']['p50']:.3f}"
          f" ms, p99 {figures['policy_steps_ms']['p99']:.3f} ms")
    print(f"1,000 firing alerts: {firing:.3f} s; 1,000 resolved: {resolved:.3f} s")
    return {"benchmark": "policy", "database": "postgresql", "n": n, "rules": rules,
            **figures, "added_ms": added, "p99_ratio": ratio,
            "alerts_1000_firing_seconds": round(firing, 3),
            "alerts_1000_resolved_seconds": round(resolved, 3)}


def _incident(i: int) -> Any:
    from signoff.schemas import IncidentIn

    return IncidentIn.model_validate({
        "title": f"bench {i}", "severity": "high", "fingerprint": f"fp-{i % FINGERPRINTS}",
        "service": f"svc-{i % SERVICES}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="a PostgreSQL server to use")
    parser.add_argument("--n", type=int, default=1_000_000,
                        help="ended requests (and incidents, knowledge entries) to load")
    parser.add_argument("--creates", type=int, default=4000,
                        help="creates measured with the policy, and as many without")
    parser.add_argument("--rules", type=int, default=100, help="rules in the policy")
    parser.add_argument("--block", type=int, default=10,
                        help="creates in a row on one side before the other side's turn")
    parser.add_argument("--log-level", default="info",
                        help="the service's log level (JSON lines on stderr, as in production)")
    args = parser.parse_args()
    configure_logging(args.log_level, "json")
    url = "postgresql://" + args.database_url.split("://", 1)[1]
    print(json.dumps(asyncio.run(run(url, args.n, args.creates, args.rules, args.block))))


if __name__ == "__main__":
    main()
