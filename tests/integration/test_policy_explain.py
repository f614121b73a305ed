"""On PostgreSQL with a hundred thousand requests, the policy's reads (precedent, limits,
the kill switch), the precedents shown with each request and the open incident by
fingerprint use indexes: ``EXPLAIN`` shows no sequential scan."""

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
    LATEST_ENTRIES,
    LIMITS_LOCK,
    OPEN_BY_FINGERPRINT,
    history_statement,
)
from signoff.store.prepared import Prepared
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
    "ANALYZE",
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


def plan(url: str, prepared: Prepared, values: dict[str, Any]) -> str:
    compiled = prepared.statement.compile(dialect=postgresql.asyncpg.dialect())
    args = [values.get(name, compiled.params.get(name)) for name in compiled.positiontup]

    async def explain() -> str:
        conn = await asyncpg.connect(url)
        try:
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
def test_the_policy_history_reads_use_indexes(
    loaded: str, shape: tuple[bool, bool, tuple[str, ...]], values: dict[str, Any]
) -> None:
    found = plan(loaded, history_statement(*shape), values)
    # The kill switch's table holds a row per pause ever made: a scan of it is no cost.
    scans = [line for line in found.splitlines() if "Seq Scan" in line]
    assert all("on policy_pauses" in line for line in scans), found
    assert "ix_approval_requests_auto_service" in found, found
    assert "ix_approval_requests_human_fingerprint" in found, found


@pytest.mark.parametrize(("prepared", "values"), [
    (LIMITS_LOCK, {"key": "k"}),
    (OPEN_BY_FINGERPRINT, {"fingerprint": "fp-1"}),
    (LATEST_ENTRIES["fingerprint"], {"key": "fp-1"}),
    (LATEST_ENTRIES["service"], {"key": "svc-1"}),
])
def test_the_other_policy_reads_use_indexes(
    loaded: str, prepared: Prepared, values: dict[str, Any]
) -> None:
    found = plan(loaded, prepared, values)
    assert "Seq Scan" not in found or "policy_pauses" in found, found
