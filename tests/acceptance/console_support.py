"""Driving the web console over HTTP as a browser would: cookies, forms, CSRF tokens."""

from __future__ import annotations

import os
import re
import shutil
from typing import Any

import httpx
import pytest

from tests.acceptance.conftest import Server

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found is not None, html[:2000]
    return found.group(1)


class Browser:
    """An httpx client with a cookie jar, signed in to the console of ``server``."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.url, timeout=30, follow_redirects=False)

    def close(self) -> None:
        self.http.close()

    def sign_in(self, token: str) -> httpx.Response:
        form = self.http.get("/ui/login")
        assert form.status_code == 200
        return self.http.post("/ui/login", data={"csrf": csrf_of(form.text), "token": token})

    def page(self, path: str) -> httpx.Response:
        return self.http.get(path)

    def decide(self, request_id: str, decision: str, comment: str = "",
               csrf: str | None = None) -> httpx.Response:
        if csrf is None:
            csrf = csrf_of(self.page(f"/ui/approvals/{request_id}").text)
        data: dict[str, Any] = {"decision": decision, "comment": comment, "csrf": csrf}
        return self.http.post(f"/ui/approvals/{request_id}", data=data)


def ask(server: Server, action: str = "restart web", ttl: int = 300, **extra: Any) -> str:
    """A new request by the bot; its id."""
    answer = server.client("bot").post(
        "/approvals", json={"action": action, "ttl_seconds": ttl, **extra})
    assert answer.status_code == 201, answer.text
    rid: str = answer.json()["id"]
    return rid


REQUIRE_CHROMIUM = os.environ.get("SIGNOFF_REQUIRE_CHROMIUM") == "1"
# Chromium as the machine's package runs it headless, with every host but the server's
# unknown, and none of its own background traffic.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


def chromium_path() -> str:
    """The system's Chromium; skipped without one, unless ``SIGNOFF_REQUIRE_CHROMIUM=1``."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found is not None:
            return found
    if REQUIRE_CHROMIUM:
        pytest.fail("chromium is required (SIGNOFF_REQUIRE_CHROMIUM=1) but not installed")
    pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
