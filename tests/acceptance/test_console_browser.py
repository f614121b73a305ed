"""The web console in a real browser: headless Chromium (the system's package) driven by
Playwright, one browser for the module, every host but the server's unknown to it.

Screenshots of the main pages are saved in the module's temporary directory."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.acceptance.conftest import Server, run_signoff, start_server
from tests.acceptance.console_support import (
    CHROMIUM_ARGS,
    REQUIRE_CHROMIUM,
    ask,
    chromium_path,
)

if REQUIRE_CHROMIUM:  # CI: a missing driver fails, as a missing browser does
    import playwright.sync_api as playwright_api
else:
    playwright_api = pytest.importorskip("playwright.sync_api")
PHONE = {"width": 375, "height": 667}
ZONE = "Asia/Taipei"


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    where = tmp_path_factory.mktemp("console")
    srv = start_server(f"sqlite:///{where}/signoff.db", where / "serve.log",
                       SIGNOFF_DISPLAY_TZ=ZONE)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(server: Server) -> Iterator[Any]:
    """Started after the server: Playwright's sync API keeps an event loop running in
    this thread, so ``start_server`` (which runs one) must not run here meanwhile."""
    path = chromium_path()
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Visitor:
    """One browser context (its own cookies), signed in as one principal."""

    def __init__(self, browser: Any, server: Server, who: str | None, *,
                 script: bool = True, viewport: dict[str, int] | None = None) -> None:
        self.server = server
        self.context = browser.new_context(viewport=viewport or PHONE,
                                           java_script_enabled=script)
        self.context.set_default_timeout(15_000)
        self.page = self.context.new_page()
        self.requested: list[str] = []
        self.page.on("request", lambda r: self.requested.append(r.url))
        if who is not None:
            self.sign_in(server.tokens[who])

    def sign_in(self, token: str) -> None:
        self.page.goto(self.server.url + "/")
        self.page.get_by_label("Token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()

    def open(self, path: str) -> Any:
        self.page.goto(self.server.url + path)
        return self.page

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visitors(browser: Any, server: Server) -> Iterator[list[Visitor]]:
    made: list[Visitor] = []
    yield made
    for v in made:
        v.close()


def visit(visitors: list[Visitor], browser: Any, server: Server, who: str | None,
          **options: Any) -> Visitor:
    v = Visitor(browser, server, who, **options)
    visitors.append(v)
    return v


def status_of(server: Server, rid: str) -> str:
    status: str = server.client("viewer").get(f"/approvals/{rid}").json()["status"]
    return status


def test_sign_in_then_a_countdown_reaches_expired_and_new_requests_appear(
    browser: Any, server: Server, visitors: list[Visitor], shots: Path
) -> None:
    soon = ask(server, action="flush soon", ttl=8)
    alice = visit(visitors, browser, server, "alice")
    page = alice.page
    page.wait_for_url("**/ui/")
    assert page.get_by_role("heading", name="Pending requests").is_visible()
    page.evaluate("window.stayed = true")  # gone if the page were reloaded
    card = page.locator(".card", has_text="flush soon")
    countdown = card.locator("time.countdown")
    assert re.fullmatch(r"\d+s left", countdown.inner_text())
    page.wait_for_function(
        "el => el.textContent === 'expired'", arg=countdown.element_handle(), timeout=15_000)
    assert "expired" in (countdown.get_attribute("class") or "")
    fresh = ask(server, action="rotate the certificates", ttl=120)
    page.locator(".card", has_text="rotate the certificates").wait_for(timeout=10_000)
    assert page.evaluate("window.stayed") is True
    page.screenshot(path=str(shots / "pending.png"), full_page=True)
    assert status_of(server, soon) == "expired" and status_of(server, fresh) == "pending"


def test_approve_with_a_comment(
    browser: Any, server: Server, visitors: list[Visitor], shots: Path
) -> None:
    rid = ask(server, action="restart checkout", rationale="latency after the deploy",
              params={"deployment": "checkout"}, risk="high")
    alice = visit(visitors, browser, server, "alice")
    page = alice.open(f"/ui/approvals/{rid}")
    assert page.get_by_role("heading", name="restart checkout").is_visible()
    page.screenshot(path=str(shots / "request.png"), full_page=True)
    page.get_by_label("Comment").fill("go ahead")
    page.get_by_role("button", name="Approve").click()
    decision = page.locator("section.decided")
    decision.wait_for()
    assert "approved by alice" in decision.inner_text()
    assert "go ahead" in decision.inner_text()
    assert ZONE in decision.inner_text()
    assert status_of(server, rid) == "approved"


def test_a_second_browser_wins_and_the_first_is_told(
    browser: Any, server: Server, visitors: list[Visitor], shots: Path
) -> None:
    rid = ask(server, action="drop the cache")
    plain = visit(visitors, browser, server, "alice", script=False)  # a plain HTML form
    live = visit(visitors, browser, server, "carol")
    plain.open(f"/ui/approvals/{rid}")
    live.open(f"/ui/approvals/{rid}")
    live.page.evaluate("window.stayed = true")
    bob = visit(visitors, browser, server, "bob")
    bob.open(f"/ui/approvals/{rid}")
    bob.page.get_by_label("Comment").fill("not during the sale")
    bob.page.get_by_role("button", name="Reject").click()
    bob.page.locator("section.decided").wait_for()
    # The open page with script follows without a reload; the one without is told on click.
    live.page.locator("section.decided", has_text="rejected by bob").wait_for(timeout=10_000)
    assert live.page.evaluate("window.stayed") is True
    assert live.page.get_by_role("button", name="Approve").count() == 0
    plain.page.get_by_role("button", name="Approve").click()
    refused = plain.page.get_by_role("alert")
    assert "Already rejected by bob" in refused.inner_text()
    plain.page.screenshot(path=str(shots / "conflict.png"), full_page=True)
    assert status_of(server, rid) == "rejected"


def test_a_late_click_says_when_it_expired(
    browser: Any, server: Server, visitors: list[Visitor], shots: Path
) -> None:
    plain = visit(visitors, browser, server, "alice", script=False)
    asked = time.monotonic()
    rid = ask(server, action="scale out", ttl=5)
    page = plain.open(f"/ui/approvals/{rid}")
    approve = page.get_by_role("button", name="Approve")
    assert approve.is_visible()
    time.sleep(max(asked + 5.5 - time.monotonic(), 0))
    approve.click()
    text = page.get_by_role("alert").inner_text()
    assert re.fullmatch(r"Expired at \d\d:\d\d:\d\d Asia/Taipei", text), text
    page.screenshot(path=str(shots / "late.png"), full_page=True)
    assert status_of(server, rid) == "expired"


def test_a_forged_csrf_token_is_refused_in_the_browser(
    browser: Any, server: Server, visitors: list[Visitor]
) -> None:
    rid = ask(server, action="purge queue")
    alice = visit(visitors, browser, server, "alice")
    page = alice.open(f"/ui/approvals/{rid}")
    page.evaluate("document.querySelector('.decide input[name=csrf]').value = 'forged'")
    page.get_by_role("button", name="Approve").click()
    assert "CSRF" in page.get_by_role("alert").inner_text()
    assert status_of(server, rid) == "pending"


def test_every_page_fits_a_phone_and_asks_only_its_own_origin(
    browser: Any, server: Server, visitors: list[Visitor], shots: Path
) -> None:
    rid = ask(server, action="x" * 300 + " a-very-long-unbroken-word-" * 5,
              params={"long": "y" * 400}, rationale="z" * 500)
    incident = server.client("bot").post("/incidents", json={"title": "disk full",
                                                             "severity": "high"}).json()
    alice = visit(visitors, browser, server, "alice")
    pages = {"pending": "/ui/", "request": f"/ui/approvals/{rid}", "incidents": "/ui/incidents",
             "incident": f"/ui/incidents/{incident['id']}", "knowledge": "/ui/knowledge?q=disk",
             "stats": "/ui/stats", "watchdog": "/ui/watchdog", "refusal": "/ui/approvals/nope"}
    for name, path in pages.items():
        page = alice.open(path)
        page.wait_for_load_state("networkidle") if name != "pending" else None
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (name, width)
        assert page.locator("h1").count() == 1, name
        page.screenshot(path=str(shots / f"phone-{name}.png"), full_page=True)
    login = visit(visitors, browser, server, None)
    login.open("/ui/login")
    assert login.page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    for url in alice.requested + login.requested:
        assert url.startswith(server.url + "/"), url


def test_a_revoked_token_sends_its_open_page_to_the_sign_in_form(
    browser: Any, server: Server, visitors: list[Visitor]
) -> None:
    carol = visit(visitors, browser, server, "viewer")
    carol.page.wait_for_url("**/ui/")
    assert run_signoff(server.env, "token", "revoke", "viewer").returncode == 0
    carol.page.wait_for_url("**/ui/login**", timeout=12_000)  # no click: the stream said so
    carol.open("/ui/incidents")
    assert carol.page.get_by_label("Token").is_visible()


def test_the_sixth_failed_sign_in_within_a_minute_is_refused(
    browser: Any, visitors: list[Visitor], tmp_path: Path
) -> None:
    with ThreadPoolExecutor(1) as aside:  # see ``browser``
        own = aside.submit(start_server, f"sqlite:///{tmp_path}/limit.db",
                           tmp_path / "serve.log").result()
    try:
        v = visit(visitors, browser, own, None)
        for _ in range(5):
            v.sign_in("so_wrong")
            assert "unknown or revoked" in v.page.get_by_role("alert").inner_text()
        v.sign_in(own.tokens["alice"])
        assert "Too many failed sign-ins" in v.page.get_by_role("alert").inner_text()
    finally:
        own.stop()


def test_a_link_decides_once_and_a_second_use_shows_why_not(
    browser: Any, server: Server, visitors: list[Visitor], shots: Path
) -> None:
    rid = ask(server, action="scale the workers")
    made = server.client("bot").post(f"/approvals/{rid}/links", json={"for": "alice"})
    assert made.status_code == 201, made.text
    path = made.json()["url"].removeprefix(server.url)
    first = visit(visitors, browser, server, None)  # no session: the link alone
    page = first.open(path)
    assert page.locator("#link-for").inner_text().startswith("You are signed in as alice")
    page.get_by_label("Comment").fill("from the link")
    page.get_by_role("button", name="Approve").click()
    page.get_by_role("heading", name="Decision recorded").wait_for()
    assert "Approved by alice" in page.get_by_role("status").inner_text()
    second = visit(visitors, browser, server, None)  # the same link, used again
    gone = second.page.goto(server.url + path)
    assert gone is not None and gone.status == 410
    said = second.page.get_by_role("alert").inner_text()
    assert "This link was used at" in said and ZONE in said  # in the display time zone
    second.page.screenshot(path=str(shots / "link-used.png"), full_page=True)
    decided = server.client("root").get(f"/approvals/{rid}").json()  # viewer: revoked above
    assert decided["decided_by"] == "alice" and decided["decision_comment"] == "from the link"
    assert all(u.startswith(server.url) for u in first.requested + second.requested)
