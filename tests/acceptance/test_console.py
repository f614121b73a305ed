"""The web console over HTTP: sessions, CSRF, headers, refusals as pages, escaping, the
sign-in limit, revoked tokens, the live stream, and secrets kept out of the log."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.acceptance.conftest import Server, run_signoff, start_server
from tests.acceptance.console_support import Browser, ask, csrf_of

HEADERS = ("content-security-policy", "x-frame-options", "x-content-type-options",
           "referrer-policy")


@pytest.fixture
def browser(server: Server) -> Iterator[Browser]:
    b = Browser(server)
    yield b
    b.close()


def signed_in(server: Server, who: str) -> Browser:
    b = Browser(server)
    assert b.sign_in(server.tokens[who]).status_code == 303
    return b


def test_root_redirects_and_every_page_sends_the_security_headers(
    server: Server, browser: Browser
) -> None:
    root = browser.page("/")
    assert root.status_code in (302, 303, 307) and root.headers["location"] == "/ui/"
    assert browser.page("/ui/").headers["location"].startswith("/ui/login")
    assert browser.sign_in(server.tokens["alice"]).status_code == 303
    rid = ask(server)
    incident = server.client("bot").post("/incidents", json={"title": "t", "severity": "low"})
    pages = ["/", "/ui/login", "/ui/", f"/ui/approvals/{rid}", "/ui/incidents",
             f"/ui/incidents/{incident.json()['id']}", "/ui/knowledge?q=disk", "/ui/stats",
             "/ui/watchdog", "/ui/static/console.js", "/ui/nowhere"]
    for path in pages:
        answer = browser.page(path)
        assert answer.status_code < 500, (path, answer.text)
        for name in HEADERS:
            assert name in answer.headers, (path, name)
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self' 'nonce-" in policy and "unsafe-inline" not in policy
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert browser.page("/ui/nowhere").status_code == 404
    for path in pages[2:9]:
        assert browser.page(path).status_code == 200, path


def test_a_session_cookie_is_httponly_strict_and_secure_on_https(tmp_path: Path) -> None:
    server = start_server(f"sqlite:///{tmp_path}/s.db", tmp_path / "serve.log",
                          SIGNOFF_PUBLIC_URL="https://signoff.example.com",
                          SIGNOFF_SESSION_TTL="2h")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            form = http.get("/ui/login")
            assert "Secure" in form.headers["set-cookie"]
            csrf = csrf_of(form.text)  # a browser on https sends the Secure cookie back
            answer = http.post("/ui/login", data={"csrf": csrf, "token": server.tokens["alice"]},
                               headers={"cookie": f"signoff_login={csrf}"})
        cookie = answer.headers["set-cookie"]
        assert "signoff_session=" in cookie and "HttpOnly" in cookie
        assert "SameSite=strict" in cookie and "Secure" in cookie and "Max-Age=7200" in cookie
    finally:
        server.stop()


def test_sign_in_refuses_a_wrong_token_and_limits_failures(
    server: Server, browser: Browser
) -> None:
    form = browser.page("/ui/login")
    for _ in range(5):
        wrong = browser.http.post("/ui/login", data={"csrf": csrf_of(form.text),
                                                     "token": "so_wrong"})
        assert wrong.status_code == 401
        assert "unknown or revoked" in wrong.text and 'for="token"' in wrong.text
    sixth = browser.http.post("/ui/login", data={"csrf": csrf_of(form.text),
                                                 "token": server.tokens["alice"]})
    assert sixth.status_code == 429 and "Retry-After" in sixth.headers
    assert "signoff_session" not in sixth.headers.get("set-cookie", "")


def test_forms_without_a_valid_csrf_token_are_refused_and_change_nothing(
    server: Server, browser: Browser
) -> None:
    form = browser.page("/ui/login")
    forged = browser.http.post("/ui/login", data={"csrf": "forged", "token":
                                                  server.tokens["alice"]})
    assert forged.status_code == 403 and "signoff_session" not in forged.headers.get(
        "set-cookie", "")
    assert browser.http.post("/ui/login", data={"csrf": csrf_of(form.text), "token":
                                                server.tokens["alice"]}).status_code == 303
    rid = ask(server)
    for csrf in ("", "forged"):
        refused = browser.decide(rid, "approve", csrf=csrf)
        assert refused.status_code == 403 and "CSRF" in refused.text
    missing = browser.http.post(f"/ui/approvals/{rid}", data={"decision": "reject"})
    assert missing.status_code == 403
    assert browser.http.post("/ui/logout", data={}).status_code == 403
    assert server.client("viewer").get(f"/approvals/{rid}").json()["status"] == "pending"
    other = signed_in(server, "bob")  # a CSRF token of another session is no better
    assert browser.decide(rid, "approve", csrf=csrf_of(other.page("/ui/").text)
                          ).status_code == 403
    other.close()
    assert server.client("viewer").get(f"/approvals/{rid}").json()["status"] == "pending"


def test_approve_and_reject_go_through_the_service_with_its_refusals(
    server: Server, browser: Browser
) -> None:
    browser.sign_in(server.tokens["alice"])
    rid = ask(server, required_approvals=2)
    done = browser.decide(rid, "approve", comment="looks right")
    assert done.status_code == 303 and done.headers["location"].endswith("done=approve")
    page = browser.page(f"/ui/approvals/{rid}").text
    assert "1 of 2" in page and "alice" in page
    again = browser.decide(rid, "approve", csrf=csrf_of(browser.page("/ui/").text))
    assert again.status_code == 409
    bob = signed_in(server, "bob")
    assert bob.decide(rid, "reject", comment="not now").status_code == 303
    late = browser.decide(rid, "reject", csrf=csrf_of(browser.page("/ui/").text))
    assert late.status_code == 409 and "Already rejected by bob" in late.text
    decided = browser.page(f"/ui/approvals/{rid}").text
    assert "not now" in decided and "Approve</button>" not in decided
    bot = signed_in(server, "bot")  # a requester may not decide, nor the console say it may
    own = ask(server)
    assert "Approve</button>" not in bot.page(f"/ui/approvals/{own}").text
    assert bot.decide(own, "approve", csrf=csrf_of(bot.page("/ui/").text)).status_code == 403
    bob.close()
    bot.close()


def test_someone_a_request_leaves_out_is_told_so_and_nothing_changes(
    server: Server, browser: Browser
) -> None:
    browser.sign_in(server.tokens["alice"])
    rid = ask(server, approvers=["bob"])
    page = browser.page(f"/ui/approvals/{rid}").text
    assert "Only bob may decide this request." in page and "Approve</button>" not in page
    refused = browser.decide(rid, "approve", csrf=csrf_of(browser.page("/ui/").text))
    assert refused.status_code == 403
    assert "only the request&#39;s approvers may decide it: bob" in refused.text
    assert 'role="alert"' in refused.text
    assert server.client("viewer").get(f"/approvals/{rid}").json()["status"] == "pending"
    bob = signed_in(server, "bob")
    assert bob.decide(rid, "approve").status_code == 303
    bob.close()
    assert server.client("viewer").get(f"/approvals/{rid}").json()["status"] == "approved"


def test_bad_input_gets_a_readable_refusal_and_changes_nothing(
    server: Server, browser: Browser
) -> None:
    browser.sign_in(server.tokens["alice"])
    rid = ask(server)
    csrf = csrf_of(browser.page("/ui/").text)
    huge = browser.decide(rid, "approve", comment="x" * 1_000_000, csrf=csrf)
    assert huge.status_code == 422 and "20000 characters" in huge.text
    over = browser.decide(rid, "approve", comment="x" * 1_100_000, csrf=csrf)
    assert over.status_code == 413 and "<h1>Too large</h1>" in over.text
    odd = browser.decide(rid, "maybe", csrf=csrf)
    assert odd.status_code == 422 and "Approve or Reject" in odd.text
    for path in ("/ui/approvals/not-a-uuid", "/ui/approvals/" + "0" * 8 + "-0000-0000-0000-"
                 + "0" * 12, "/ui/incidents/nope"):
        answer = browser.page(path)
        assert answer.status_code == 404 and "<h1>" in answer.text
    assert browser.page("/ui/?cursor=garbage").status_code == 422
    assert browser.page("/ui/knowledge?q=" + "a" * 300).status_code == 422
    assert server.client("viewer").get(f"/approvals/{rid}").json()["status"] == "pending"


def test_markup_in_an_action_or_a_comment_is_shown_as_text(
    server: Server, browser: Browser
) -> None:
    browser.sign_in(server.tokens["alice"])
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    rid = ask(server, action=evil, rationale=evil, params={"k": evil})
    assert "&lt;script&gt;" in browser.page("/ui/").text
    assert browser.decide(rid, "reject", comment=evil).status_code == 303
    page = browser.page(f"/ui/approvals/{rid}").text
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


def test_a_revoked_token_ends_its_sessions_at_once(
    server: Server, browser: Browser
) -> None:
    browser.sign_in(server.tokens["carol"])
    rid = ask(server)
    csrf = csrf_of(browser.page("/ui/").text)
    assert browser.page("/ui/").status_code == 200
    done = run_signoff(server.env, "token", "revoke", "carol")
    assert done.returncode == 0, done.stderr
    assert browser.page("/ui/").status_code == 303  # back to the sign-in form
    refused = browser.decide(rid, "approve", csrf=csrf)
    assert refused.status_code == 403
    assert server.client("viewer").get(f"/approvals/{rid}").json()["status"] == "pending"
    assert browser.sign_in(server.tokens["carol"]).status_code == 401


@pytest.mark.postgres
def test_a_revoked_token_ends_its_sessions_on_every_replica(
    db_url_postgres: str, tmp_path: Path
) -> None:
    first = start_server(db_url_postgres, tmp_path / "a.log")
    second = start_server(db_url_postgres, tmp_path / "b.log")
    try:
        b = Browser(first)
        c = Browser(second)
        b.sign_in(first.tokens["alice"])
        c.http.cookies = b.http.cookies  # the same session, at the other replica
        assert c.page("/ui/").status_code == 200
        assert run_signoff(first.env, "token", "revoke", "alice").returncode == 0
        assert b.page("/ui/").status_code == 303
        assert c.page("/ui/").status_code == 303
        b.close()
        c.close()
    finally:
        first.stop()
        second.stop()


def test_sign_out_ends_the_session(server: Server, browser: Browser) -> None:
    browser.sign_in(server.tokens["alice"])
    csrf = csrf_of(browser.page("/ui/").text)
    cookie = browser.http.cookies.get("signoff_session")
    out = browser.http.post("/ui/logout", data={"csrf": csrf})
    assert out.status_code == 303
    stale = httpx.get(server.url + "/ui/", cookies={"signoff_session": cookie or ""})
    assert stale.status_code == 303


def test_the_live_stream_tells_of_a_new_request_at_once(
    server: Server, browser: Browser
) -> None:
    browser.sign_in(server.tokens["alice"])
    got: list[str] = []
    opened = threading.Event()

    def listen() -> None:
        with browser.http.stream("GET", "/ui/live", timeout=20) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                opened.set()
                got.append(line)
                if line.startswith("data: ") and len(line) > 8:
                    return

    thread = threading.Thread(target=listen, daemon=True)
    thread.start()
    assert opened.wait(10)
    began = time.monotonic()
    rid = ask(server)
    thread.join(10)
    assert f"data: {rid}" in got, got
    assert time.monotonic() - began < 5
    assert httpx.get(server.url + "/ui/live").status_code == 303  # not signed in


@pytest.mark.postgres
def test_the_live_stream_hears_of_changes_made_at_another_replica(
    db_url_postgres: str, tmp_path: Path
) -> None:
    first = start_server(db_url_postgres, tmp_path / "a.log")
    second = start_server(db_url_postgres, tmp_path / "b.log")
    b = Browser(second)
    try:
        b.sign_in(second.tokens["alice"])
        rid = ask(first)
        got: list[str] = []
        opened = threading.Event()

        def listen() -> None:
            with b.http.stream("GET", "/ui/live", timeout=20) as stream:
                for line in stream.iter_lines():
                    opened.set()
                    got.append(line)
                    if line == f"data: {rid}":
                        return

        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        assert opened.wait(10)
        assert first.client("bob").post(f"/approvals/{rid}/approve", json={}).status_code == 200
        thread.join(10)
        assert f"data: {rid}" in got, got
    finally:
        b.close()
        first.stop()
        second.stop()


def test_an_open_stream_does_not_hold_up_the_shutdown(tmp_path: Path) -> None:
    server = start_server(f"sqlite:///{tmp_path}/s.db", tmp_path / "serve.log")
    b = Browser(server)
    try:
        b.sign_in(server.tokens["alice"])
        ended = threading.Event()

        def listen() -> None:
            with contextlib.suppress(httpx.HTTPError), b.http.stream(
                    "GET", "/ui/live", timeout=30) as stream:
                for _ in stream.iter_lines():
                    pass
            ended.set()

        threading.Thread(target=listen, daemon=True).start()
        time.sleep(0.5)
        began = time.monotonic()
        server.process.terminate()
        assert server.process.wait(10) == 0
        assert time.monotonic() - began < 5
        assert ended.wait(5)
    finally:
        b.close()
        server.stop()


def test_no_token_or_session_secret_reaches_the_log(server: Server, browser: Browser) -> None:
    browser.sign_in(server.tokens["alice"])
    browser.sign_in("so_not_a_real_token_at_all")
    rid = ask(server)
    browser.decide(rid, "approve", comment="ok")
    session = browser.http.cookies.get("signoff_session")
    assert session
    server.stop()
    log = server.log_path.read_text()
    assert "console_signed_in" in log
    for secret in [*server.tokens.values(), session, "so_not_a_real_token_at_all"]:
        assert secret not in log
    for line in log.splitlines():
        if line.startswith("{"):
            json.loads(line)
