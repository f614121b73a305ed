"""Making single-use links over HTTP and from the command line."""

from __future__ import annotations

import uuid

from tests.acceptance.conftest import Server, run_signoff


def test_links_over_http_and_from_the_command_line(server: Server) -> None:
    made = server.client("bot").post("/approvals", json={"action": "restart"}).json()
    link = server.client("bot").post(f"/approvals/{made['id']}/links", json={"for": "alice"})
    assert link.status_code == 201, link.text
    body = link.json()
    assert body["url"].startswith(server.url + "/ui/l/sol_")
    assert body["expires_at"] == made["expires_at"]

    refusals = {
        "viewer": server.client("viewer").post(f"/approvals/{made['id']}/links",
                                               json={"for": "alice"}),
        "bot2": server.client("bot2").post(f"/approvals/{made['id']}/links",
                                           json={"for": "alice"}),
        "unknown": server.client("bot").post(f"/approvals/{uuid.uuid4()}/links",
                                             json={"for": "alice"}),
        "no for": server.client("bot").post(f"/approvals/{made['id']}/links", json={}),
        "viewer for": server.client("bot").post(f"/approvals/{made['id']}/links",
                                                json={"for": "viewer"}),
    }
    assert {k: r.status_code for k, r in refusals.items()} == {
        "viewer": 403, "bot2": 403, "unknown": 404, "no for": 422, "viewer for": 422}

    done = run_signoff({**server.env, "SIGNOFF_PUBLIC_URL": "https://so.example.com"},
                       "link", "create", made["id"], "--for", "bob")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("https://so.example.com/ui/l/sol_")
    assert "a link for bob, until" in done.stderr
    mine = run_signoff(server.env, "link", "create", made["id"], "--for", "bot")
    assert mine.returncode == 2 and "nobody decides their own request" in mine.stderr
    assert "sol_" not in server.log_path.read_text()  # no secret in any log line
