"""What a client sends must not grow the process's memory: metric label sets stay bounded.

uvicorn without httptools parses requests with h11, which takes any token as a method;
a label per method sent would be a new metric series, kept for the process's life, per
made-up method.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from signoff.app import create_app
from signoff.metrics import Metrics
from signoff.settings import Settings


def http_series(metrics: Metrics) -> set[tuple[str, str, str]]:
    return {
        (s.labels["method"], s.labels["route"], s.labels["status"])
        for family in metrics.http_requests.collect()
        for s in family.samples
        if s.name.endswith("_total")
    }


async def test_made_up_methods_share_one_label(tmp_path: Path) -> None:
    metrics = Metrics()
    app = create_app(
        Settings(database_url=f"sqlite:///{tmp_path}/signoff.db"),
        metrics=metrics,
        run_resolver=False,
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://signoff") as client:
        for i in range(200):
            await client.request(f"MADEUP{i}", "/healthz")
            await client.request(f"MADEUP{i}", f"/nowhere/{i}")
        assert (await client.get("/healthz")).status_code == 200

    series = http_series(metrics)
    assert len(series) <= 4, sorted(series)
    assert {m for m, _, _ in series} == {"GET", "other"}
    assert ("other", "/healthz", "405") in series
    assert ("other", "unmatched", "404") in series
