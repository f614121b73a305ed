"""``/docs`` and ``/redoc`` render every operation in a real browser that can reach no host
but the server's: the pages need nothing from the internet.

Headless Chromium (Debian: ``apt-get install chromium``); without it the test is skipped,
unless ``SIGNOFF_REQUIRE_CHROMIUM=1`` (CI), where it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.conftest import Server, start_server

REQUIRE = os.environ.get("SIGNOFF_REQUIRE_CHROMIUM") == "1"


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found is not None:
            return found
    if REQUIRE:
        pytest.fail("chromium is required (SIGNOFF_REQUIRE_CHROMIUM=1) but not installed")
    pytest.skip("chromium is not installed (Debian: apt-get install chromium)")


@pytest.fixture
def lone_server(tmp_path: Path) -> Iterator[Server]:
    server = start_server(f"sqlite:///{tmp_path}/signoff.db", tmp_path / "serve.log")
    try:
        yield server
    finally:
        server.stop()


def rendered(browser: str, url: str, profile: Path) -> str:
    """The page's DOM once its scripts have run, with every host but 127.0.0.1 unknown."""
    done = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         f"--user-data-dir={profile}",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
         "--virtual-time-budget=20000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_render_every_operation_offline(
    page: str, lone_server: Server, tmp_path: Path
) -> None:
    browser = _chromium()
    paths = httpx.get(lone_server.url + "/openapi.json", timeout=10).json()["paths"]
    dom = rendered(browser, lone_server.url + page, tmp_path / "profile")
    missing = [path for path in paths if path not in dom]
    assert not missing, f"{page} does not show {missing}"
    if page == "/docs":
        assert 'class="btn authorize' in dom  # bearer auth, for "Try it out"
