"""Slack from the real ``signoff serve``: a card as a request is made, a signed press
answered at once (well within Slack's 3 seconds, even while the reply to the press is
slow), the decision made, and the card edited."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from signoff.notify.slack_presses import sign
from tests.acceptance.conftest import Server, start_server
from tests.integration.notify_support import FakeSlackApi, buttons, serving

TOKEN = "xoxb-acceptance"
SIGNING = "slack-signing-secret"


@pytest.fixture
def slack() -> Iterator[FakeSlackApi]:
    with serving(FakeSlackApi(TOKEN)) as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def slack_server(database_url: str, tmp_path: Path, slack: FakeSlackApi) -> Iterator[Server]:
    srv = start_server(
        database_url, tmp_path / "serve.log",
        SIGNOFF_SLACK_BOT_TOKEN=TOKEN, SIGNOFF_SLACK_CHANNEL=FakeSlackApi.CHANNEL_ID,
        SIGNOFF_SLACK_API_BASE=slack.api_base, SIGNOFF_SLACK_SIGNING_SECRET=SIGNING,
        SIGNOFF_SLACK_APPROVERS="U0ALICE=alice", SIGNOFF_HEARTBEAT_AT="off",
    )
    yield srv
    srv.stop()


def test_serve_posts_a_card_and_a_press_is_answered_at_once_then_decides(
    slack_server: Server, slack: FakeSlackApi
) -> None:
    started = time.monotonic()
    created = slack_server.client("bot").post("/approvals", json={"action": "restart"})
    assert created.status_code == 201
    request_id = created.json()["id"]
    assert len(slack.wait_for(1)) == 1 and slack.calls[0].method == "chat.postMessage"
    assert time.monotonic() - started < 1.5
    [card] = slack.cards()
    assert buttons(card) == [("approve", request_id), ("reject", request_id)]

    slack.reply_hang = 4.0  # the reply to the press is slow: the answer does not wait
    payload = {"type": "block_actions", "user": {"id": "U0ALICE"},
               "response_url": slack.response_url(),
               "actions": [{"action_id": "approve", "value": request_id}]}
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/x-www-form-urlencoded",
               "X-Slack-Request-Timestamp": timestamp,
               "X-Slack-Signature": sign(SIGNING, timestamp, body)}
    url = slack_server.url + "/api/v1/slack/interactions"
    refused = httpx.post(url, content=body, headers={**headers, "X-Slack-Signature": "v0=0"})
    assert refused.status_code == 401
    pressed_at = time.monotonic()
    pressed = httpx.post(url, content=body, headers=headers, timeout=10)
    assert (pressed.status_code, pressed.content) == (200, b"")
    assert time.monotonic() - pressed_at < 3.0

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
            not slack.replies or not slack.of("chat.update")):
        time.sleep(0.05)
    decided = slack_server.client("viewer").get(f"/approvals/{request_id}").json()
    assert (decided["status"], decided["decided_by"]) == ("approved", "alice")
    assert [r["text"] for r in slack.replies] == ["Done: approved by alice."]
    assert "✅ Approved by alice" in slack.card_of(request_id)["text"]
    assert buttons(slack.card_of(request_id)) == []
