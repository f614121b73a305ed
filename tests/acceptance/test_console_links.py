"""The single-use link's page: ``/ui/l/{secret}`` shows the request to its one person and
decides once; used, ended or past its deadline it is a page saying why (410)."""

from __future__ import annotations

import re
import time

import httpx

from tests.acceptance.conftest import Server


def link_for(server: Server, who: str, **body: object) -> tuple[str, str]:
    made = server.client("bot").post("/approvals", json={"action": "restart <b>db</b>", **body})
    assert made.status_code == 201, made.text
    link = server.client("bot").post(f"/approvals/{made.json()['id']}/links",
                                     json={"for": who})
    assert link.status_code == 201, link.text
    return made.json()["id"], link.json()["url"].removeprefix(server.url)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found is not None, page
    return found.group(1)


def test_a_link_page_decides_once_as_its_person(server: Server) -> None:
    rid, path = link_for(server, "alice")
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        page = browser.get(path)
        assert page.status_code == 200, page.text
        assert "signed in as <strong>alice</strong> for this request alone" in page.text
        assert "restart &lt;b&gt;db&lt;/b&gt;" in page.text  # escaped, never markup
        assert ">Approve</button>" in page.text and 'for="comment">Comment' in page.text
        assert page.headers["x-frame-options"] == "DENY"
        assert browser.get(path).status_code == 200  # opening it uses nothing up

        forged = browser.post(path, data={"decision": "approve", "csrf": "0" * 64})
        assert forged.status_code == 403
        assert server.client("viewer").get(f"/approvals/{rid}").json()["status"] == "pending"

        done = browser.post(path, data={"decision": "approve", "comment": "ok",
                                        "csrf": csrf_of(page.text)})
        assert done.status_code == 200, done.text
        assert "Approved by alice" in done.text and "used up" in done.text
        decided = server.client("viewer").get(f"/approvals/{rid}").json()
        assert decided["status"] == "approved" and decided["decided_by"] == "alice"
        assert decided["decision_comment"] == "ok"

        again = browser.post(path, data={"decision": "reject", "csrf": csrf_of(page.text)})
        assert again.status_code == 410 and "This link was used at" in again.text
        reopened = browser.get(path)
        assert reopened.status_code == 410 and "used at" in reopened.text
        assert browser.get("/ui/l/sol_unknown").status_code == 404


def test_a_link_dies_with_its_request_and_at_its_deadline(server: Server) -> None:
    ended, ended_path = link_for(server, "alice")
    server.client("bob").post(f"/approvals/{ended}/reject")
    _, late_path = link_for(server, "alice", ttl_seconds=1)
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        gone = browser.get(ended_path)
        assert gone.status_code == 410 and "already rejected by bob" in gone.text
        time.sleep(1.2)
        late = browser.get(late_path)
        assert late.status_code == 410 and "expired at" in late.text
    assert "sol_" not in server.log_path.read_text()
