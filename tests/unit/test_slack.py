"""Slack's pure parts: the signature, a message's ts, the card's layout, the settings, and
how the Web API client sorts Slack's answers into done, try again and give up."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from pydantic import ValidationError

from signoff.notify.cards import CardFacts
from signoff.notify.delivery import DeliveryFailed
from signoff.notify.slack import SlackApi, escape, number_to_ts, render_blocks, ts_to_number
from signoff.notify.slack_presses import parse_press, sign, verify_signature
from signoff.notify.telegram import render_card
from signoff.settings import Settings

# The example of Slack's documentation on verifying requests.
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BODY = (b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&"
        b"channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&"
        b"command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2F"
        b"commands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&"
        b"trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c")
TIMESTAMP = "1531420618"
SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"


def test_the_signature_is_slacks_own() -> None:
    assert sign(SECRET, TIMESTAMP, BODY) == SIGNATURE
    now = float(TIMESTAMP)
    assert verify_signature(SECRET, BODY, TIMESTAMP, SIGNATURE, now=now)
    assert verify_signature(SECRET, BODY, TIMESTAMP, SIGNATURE, now=now + 300)
    assert verify_signature(SECRET, BODY, TIMESTAMP, SIGNATURE, now=now - 300)


@pytest.mark.parametrize(("secret", "body", "timestamp", "signature", "late"), [
    (SECRET, BODY, TIMESTAMP, SIGNATURE, 301),  # stale: a replay
    (SECRET, BODY, TIMESTAMP, SIGNATURE, -301),
    ("another", BODY, TIMESTAMP, SIGNATURE, 0),
    (SECRET, BODY + b"&x=1", TIMESTAMP, SIGNATURE, 0),
    (SECRET, BODY, str(int(TIMESTAMP) + 1), SIGNATURE, 0),
    (SECRET, BODY, TIMESTAMP, SIGNATURE.upper(), 0),
    (SECRET, BODY, TIMESTAMP, SIGNATURE[:-1], 0),
    (SECRET, BODY, TIMESTAMP, "v1=" + SIGNATURE[3:], 0),
    (SECRET, BODY, TIMESTAMP, "", 0),
    (SECRET, BODY, TIMESTAMP, None, 0),
    (SECRET, BODY, None, SIGNATURE, 0),
    (SECRET, BODY, "1531420618.5", SIGNATURE, 0),
    (SECRET, BODY, "-1", SIGNATURE, 0),
    (SECRET, BODY, "9" * 40, SIGNATURE, 0),
    (None, BODY, TIMESTAMP, SIGNATURE, 0),
    ("", BODY, TIMESTAMP, SIGNATURE, 0),
])
def test_a_wrong_or_stale_signature_is_refused(
    secret: str | None, body: bytes, timestamp: str | None, signature: str | None, late: int
) -> None:
    assert not verify_signature(secret, body, timestamp, signature,
                                now=float(TIMESTAMP) + late)


def test_a_ts_is_kept_exactly_as_an_integer() -> None:
    for ts in ("1712345678.123456", "1712345678.000001", "0.000000", "1.100000"):
        assert number_to_ts(ts_to_number(ts)) == ts
    assert ts_to_number("1712345678.123456") == 1712345678123456
    for bad in ("1712345678", "1712345678.12345", "abc.123456", "1.1234567", ""):
        with pytest.raises(ValueError):
            ts_to_number(bad)


def test_a_press_is_read_from_a_block_actions_payload() -> None:
    rid = uuid.uuid4()
    payload: dict[str, Any] = {
        "type": "block_actions", "user": {"id": "U1"}, "response_url": "https://hooks.x/1",
        "actions": [{"action_id": "approve", "value": str(rid)}]}
    press = parse_press(payload)
    assert press is not None
    assert (press.user_id, press.decision, press.request_id, press.response_url) == (
        "U1", "approve", rid, "https://hooks.x/1")
    odd = parse_press({**payload, "actions": [{"action_id": 5, "value": "no"}],
                       "response_url": "javascript:x"})
    assert odd is not None and (odd.decision, odd.request_id, odd.response_url) == (
        "", None, None)
    for other in ({**payload, "type": "view_submission"}, {**payload, "user": "U1"},
                  {**payload, "actions": []}, {**payload, "actions": "x"}, {}):
        assert parse_press(other) is None


def _facts(**request: Any) -> CardFacts:
    row = {"id": uuid.UUID(int=7), "action": "restart <db> & co", "risk": "high",
           "rationale": None, "requested_by": "bot", "needs_analysis": False,
           "status": "pending", "decided_by": None, "decided_at": None,
           "expires_at": datetime(2026, 1, 1, 12, tzinfo=UTC), **request}
    return CardFacts(row, None, [])


def test_the_card_escapes_what_people_wrote_and_shows_given_precedents() -> None:
    precedent = {"title": "db full <!here>", "disposition": "human_approved",
                 "resolution_type": "action", "created_at": "2025-12-31T10:00:00+00:00"}
    text, blocks = render_blocks(_facts(precedents=[precedent]), ZoneInfo("Asia/Taipei"))
    dumped = json.dumps(blocks, ensure_ascii=False)
    assert "restart &lt;db&gt; &amp; co" in dumped
    assert "db full &lt;!here&gt;: human_approved (2025-12-31 18:00 CST" in dumped
    assert "<" not in dumped.replace("<db>", "")  # the plain-text fallback may keep it
    assert text.startswith("🔔 Sign-off needed: restart")
    assert escape("a<b>&c") == "a&lt;b&gt;&amp;c"
    _, plain = render_blocks(_facts(precedents=[]), ZoneInfo("UTC"))
    assert "Precedents" not in json.dumps(plain)


def test_slack_settings() -> None:
    s = Settings(slack_bot_token="xoxb-1", slack_channel="C1",
                 slack_approvers="U0123ABC=alice, W999=bob",
                 slack_api_base="http://127.0.0.1:9/api/")
    assert s.slack_enabled and s.card_channels == ("slack",)
    assert s.slack_users == {"U0123ABC": "alice", "W999": "bob"}
    assert s.slack_api_base == "http://127.0.0.1:9/api"
    assert Settings().slack_api_base == "https://slack.com/api"
    assert Settings().card_channels == ()
    both = Settings(slack_bot_token="x", slack_channel="C1", telegram_bot_token="t",
                    telegram_chat_id="1")
    assert both.card_channels == ("telegram", "slack")
    for bad in ({"slack_bot_token": "x"}, {"slack_channel": "C1"},
                {"slack_approvers": "alice"}, {"slack_approvers": "u123=alice"},
                {"slack_approvers": "U1="}, {"slack_api_base": "slack.com/api"}):
        with pytest.raises(ValidationError):
            Settings(**bad)


def _api(status: int, body: Any, headers: dict[str, str] | None = None) -> SlackApi:
    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["authorization"] == "Bearer xoxb-t"
        assert request.url.path == "/api/chat.postMessage"
        return httpx.Response(status, json=body, headers=headers)

    client = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    return SlackApi(client, "https://slack.test/api/", "xoxb-t")


async def test_the_web_api_answers_sorted() -> None:
    done = await _api(200, {"ok": True, "ts": "1.000001"}).call("chat.postMessage", text="x")
    assert done["ts"] == "1.000001"
    cases: list[tuple[int, Any, dict[str, str] | None, bool, float | None]] = [
        (429, {"ok": False, "error": "ratelimited"}, {"Retry-After": "30"}, False, 30.0),
        (200, {"ok": False, "error": "ratelimited"}, None, False, None),
        (200, {"ok": False, "error": "internal_error"}, None, False, None),
        (500, "oops", None, False, None),
        (503, {"ok": False}, {"Retry-After": "5"}, False, 5.0),
        (200, {"ok": False, "error": "channel_not_found"}, None, True, None),
        (200, {"ok": False, "error": "invalid_auth"}, None, True, None),
        (200, ["not", "an", "object"], None, True, None),
        (404, {"ok": False}, None, True, None),
    ]
    for status, body, headers, permanent, retry_after in cases:
        with pytest.raises(DeliveryFailed) as failed:
            await _api(status, body, headers).call("chat.postMessage", text="x")
        assert (failed.value.permanent, failed.value.retry_after) == (permanent, retry_after), (
            status, body)
        assert str(failed.value).startswith(f"chat.postMessage: HTTP {status}: ")


def test_with_a_public_url_cards_carry_an_open_button_to_the_request_page() -> None:
    page = "https://so.example.com/ui/approvals/r-1"
    _, blocks = render_blocks(_facts(), ZoneInfo("UTC"), page)
    (actions,) = [b for b in blocks if b["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]] == ["approve", "reject", "open"]
    assert actions["elements"][2]["url"] == page
    _, ended = render_blocks(_facts(status="approved", decided_by="alice",
                                    decided_at=datetime(2026, 1, 1, tzinfo=UTC)),
                             ZoneInfo("UTC"), page)
    assert not [b for b in ended if b["type"] == "actions"]  # buttons gone once it ended
    _, keyboard = render_card(_facts().request, None, [], ZoneInfo("UTC"), page)
    assert keyboard is not None
    assert keyboard["inline_keyboard"][1] == [{"text": "🔗 Open", "url": page}]
    _, without = render_card(_facts().request, None, [], ZoneInfo("UTC"))
    assert without is not None and len(without["inline_keyboard"]) == 1
    opened = {"type": "block_actions", "user": {"id": "U1"}, "response_url": "https://x",
              "actions": [{"action_id": "open", "value": "r-1"}]}
    assert parse_press(opened) is None  # the chat opened the page: nothing to decide
