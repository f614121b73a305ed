"""A call that finds no free database connection in time is an overload, not a fault:
503 with Retry-After, as when the database is down, never a 500 with a traceback."""

from __future__ import annotations

from signoff.db import Database
from signoff.settings import Settings
from tests.integration.api_support import api_for


async def test_a_call_with_no_free_connection_is_answered_503(db_url: str) -> None:
    settings = Settings(database_url=db_url, db_pool_size=1, db_pool_timeout="0.2s")
    db = Database.from_settings(settings)
    try:
        async with api_for(db, settings) as api:
            viewer = api.as_("viewer")
            assert (await viewer.get("/approvals")).status_code == 200
            async with db.engine.connect() as held:  # the pool's only connection
                await held.exec_driver_sql("SELECT 1")
                busy = await viewer.get("/approvals/00000000-0000-0000-0000-000000000001")
            assert busy.status_code == 503, busy.text
            assert busy.headers["retry-after"] == "1"
            assert busy.json()["error"]["code"] == "unavailable"
            assert "busy" in busy.json()["error"]["message"]
            assert (await viewer.get("/approvals")).status_code == 200
    finally:
        await db.dispose()
