"""On PostgreSQL with a hundred thousand requests, the policy's reads (precedent, limits,
the kill switch), the precedents shown with each request and the open incident by
fingerprint, and the rest of a create's statements, use indexes: ``EXPLAIN`` shows no
sequential scan, both in the plan for one call's values and in the generic plan that a
create's transaction runs. Once the table is vacuumed (as autovacuum keeps it), the
precedent and limit reads are index-only scans: no table row is read for them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy.dialects import postgresql

from signoff.store.policy import (
    _AUTO_APPROVE,
    LATEST_ENTRIES,
    LIMITS_LOCK,
    OPEN_BY_FINGERPRINT,
    history_statement,
)
from signoff.store.prepared import Prepared
from signoff.store.requests import _IDEMPOTENT, _LOCK_INCIDENT
from tests.conftest import _admin, migrate

pytestmark = pytest.mark.postgres

N = 100_000
LOAD = [
    """INSERT INTO incidents (id, fingerprint, title, severity, service, labels, status,
           opened_at, resolved_at, resolution_type, resolved_by)
       SELECT md5('i' || g)::uuid, 'fp-' || (g % 9973), 'incident', 'high',
              'svc-' || (g % 997), '{}', 'resolved', now() - g * interval '1 minute',
              now() - g * interval '1 minute', 'action', 'bot'
       FROM generate_series(1, $1) AS g""",
    """INSERT INTO approval_requests (id, incident_id, action, params, risk, requested_by,
           status, disposition, required_approvals, approval_count, decided_by, created_at,
           expires_at, decided_at, outcome_succeeded, fingerprint, service)
       SELECT md5('r' || g)::uuid, md5('i' || g)::uuid, 'restart pod web-' || (g % 7), '{}',
              'medium', 'bot', 'approved',
              CASE WHEN g % 10 = 8 THEN 'auto_repair' WHEN g % 10 = 6 THEN 'human_rejected'
                   ELSE 'human_approved' END, 1, 1,
              CASE WHEN g % 10 = 8 THEN 'policy:rule-' || (g % 100) ELSE 'alice' END,
              now() - g * interval '1 minute', now() - g * interval '1 minute',
              now() - g * interval '1 minute', true, 'fp-' || (g % 9973), 'svc-' || (g % 997)
       FROM generate_series(1, $1) AS g""",
    """INSERT INTO knowledge_entries (id, incident_id, created_at, service, fingerprint, title,
           resolution_type, actions, summary)
       SELECT md5('k' || g)::uuid, md5('i' || g)::uuid, now() - g * interval '1 minute',
              'svc-' || (g % 997), 'fp-' || (g % 9973), 'incident', 'action', '[]', 's'
       FROM generate_series(1, $1) AS g""",
    "VACUUM ANALYZE",
]


@pytest.fixture(scope="module")
def loaded(postgres_url: str) -> Iterator[str]:
    """A database of this module's own, migrated and loaded."""
    name = f"signoff_explain_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(postgres_url, f'CREATE DATABASE "{name}"'))
    url = postgres_url.rsplit("/", 1)[0] + "/" + name
    asyncio.run(migrate(url))

    async def load() -> None:
        conn = await asyncpg.connect(url)
        try:
            for statement in LOAD:
                await (conn.execute(statement, N) if "$1" in statement
                       else conn.execute(statement))
        finally:
            await conn.close()

    asyncio.run(load())
    yield url
    asyncio.run(_admin(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def plan(url: str, prepared: Prepared, values: dict[str, Any], *, generic: bool) -> str:
    """The plan for these values, or (``generic``) the generic plan that a create's
    transaction runs (``Database.run(generic_plans=True)``)."""
    compiled = prepared.statement.compile(dialect=postgresql.asyncpg.dialect())
    args = [values.get(name, compiled.params.get(name)) for name in compiled.positiontup]

    async def explain() -> str:
        conn = await asyncpg.connect(url)
        try:
            if generic:
                await conn.execute("SET plan_cache_mode = force_generic_plan")
                await conn.execute(f"PREPARE explained AS {compiled}")
                # A generic plan is the same whatever the values: NULLs stand for them.
                nulls = ", ".join("NULL" for _ in args)
                rows = await conn.fetch(f"EXPLAIN EXECUTE explained({nulls})")
            else:
                rows = await conn.fetch("EXPLAIN " + str(compiled), *args)
        finally:
            await conn.close()
        return "\n".join(row[0] for row in rows)

    return asyncio.run(explain())


NOW = datetime.now(UTC)


@pytest.mark.parametrize(("shape", "values"), [
    ((True, True, ("fingerprint", "service")),
     {"service": "svc-1", "limited_since": NOW - timedelta(days=1), "key0": "fp-1",
      "since0": NOW - timedelta(days=30), "key1": "svc-1", "since1": NOW - timedelta(days=30),
      "action": "restart pod web-1"}),
    ((True, False, ("fingerprint",)),
     {"limited_since": NOW - timedelta(hours=1), "key0": "fp-1",
      "since0": NOW - timedelta(days=90), "action": "restart pod web-1"}),
])
@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_the_policy_history_reads_use_indexes(
    loaded: str, shape: tuple[bool, bool, tuple[str, ...]], values: dict[str, Any],
    generic: bool,
) -> None:
    found = plan(loaded, history_statement(*shape), values, generic=generic)
    # The kill switch's table holds a row per pause ever made: a scan of it is no cost.
    scans = [line for line in found.splitlines() if "Seq Scan" in line]
    assert all("on policy_pauses" in line for line in scans), found
    for index in ("auto_service", "human_fingerprint"):
        assert f"Index Only Scan using ix_approval_requests_{index}" in found, found
    if "service" in shape[2]:
        assert "Index Only Scan using ix_approval_requests_human_service" in found, found


@pytest.mark.parametrize(("prepared", "values"), [
    (LIMITS_LOCK, {"key": "k"}),
    (OPEN_BY_FINGERPRINT, {"fingerprint": "fp-1"}),
    (LATEST_ENTRIES["fingerprint"], {"key": "fp-1"}),
    (LATEST_ENTRIES["service"], {"key": "svc-1"}),
    # The rest of a create's statements, which run on their generic plans.
    (_IDEMPOTENT, {"actor": "bot", "key": "k"}),
    (_LOCK_INCIDENT, {"incident_id": uuid.UUID(int=1)}),
    (_AUTO_APPROVE, {"request_id": uuid.UUID(int=1), "now": NOW, "actor": "policy:r"}),
])
@pytest.mark.parametrize("generic", [False, True], ids=["custom", "generic"])
def test_the_other_policy_reads_use_indexes(
    loaded: str, prepared: Prepared, values: dict[str, Any], generic: bool
) -> None:
    found = plan(loaded, prepared, values, generic=generic)
    assert "Seq Scan" not in found or "policy_pauses" in found, found
