"""Slack cards against a fake Slack Web API on loopback (real HTTP, the Web API's shapes).

A Block Kit card per request with Approve/Reject buttons; presses, signed as Slack signs
them, decide as the mapped approver; bad and stale signatures change nothing; unmapped,
late, repeated and self presses change nothing and get a reply; the card is edited on
every ending; reminders go in its thread; the daily report is a message; Slack's 500, 429
and ``ok: false`` are retried or given up on; W-2 watches Slack cards.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from signoff import store
from signoff.app import create_app
from signoff.db import Database
from signoff.lifecycle import ResolutionType
from signoff.metrics import Metrics
from signoff.notify import outbox
from signoff.notify.channels import build_senders
from signoff.notify.heartbeat import Heartbeat
from signoff.notify.slack import number_to_ts
from signoff.notify.slack_presses import sign
from signoff.notify.worker import Notifier
from signoff.settings import Settings
from signoff.watchdog import Thresholds, run_watchdogs
from tests.acceptance.conftest import free_port
from tests.conftest import FakeClock
from tests.integration.api_support import Api, api_for
from tests.integration.notify_support import (
    Answer,
    FakeBotApi,
    FakeSlackApi,
    buttons,
    serving,
    shown,
)
from tests.integration.store_support import new_incident

TOKEN = "xoxb-test-token"
SIGNING = "8f742231b10e8888abcd99yyyzzz85a5"
ALICE, BOB, BOT, STRANGER = "U0ALICE", "U0BOB", "U0BOT", "U0NOBODY"


@pytest.fixture
def slack() -> Iterator[FakeSlackApi]:
    with serving(FakeSlackApi(TOKEN)) as fake:
        yield fake  # type: ignore[misc]


def signed(body: bytes, *, secret: str = SIGNING, at: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if at is None else at))
    return {"X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": sign(secret, timestamp, body),
            "Content-Type": "application/x-www-form-urlencoded"}


def press_body(user: str, action_id: str, value: str, response_url: str) -> bytes:
    payload = {
        "type": "block_actions", "user": {"id": user, "username": user.lower()},
        "team": {"id": "T0TEAM"}, "channel": {"id": FakeSlackApi.CHANNEL_ID},
        "container": {"type": "message", "message_ts": "1767268801.000007"},
        "response_url": response_url, "trigger_id": "1.2.3",
        "actions": [{"type": "button", "action_id": action_id, "block_id": "decision",
                     "value": value, "action_ts": "1767268802.000001"}],
    }
    return urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()


@dataclass
class Rig:
    db: Database
    api: Api
    notifier: Notifier
    slack: FakeSlackApi
    clock: FakeClock
    settings: Settings

    async def deliver(self) -> int:
        return await self.notifier.run_once()

    async def post(self, body: bytes, headers: dict[str, Any]) -> httpx.Response:
        return await self.api.as_(None).post("/slack/interactions", content=body,
                                             headers=headers)

    async def press(self, user: str, action_id: str, request_id: str) -> httpx.Response:
        body = press_body(user, action_id, request_id, self.slack.response_url())
        response = await self.post(body, signed(body))
        assert response.status_code == 200, response.text
        assert response.content == b""
        return response

    async def ask(self, who: str = "bot", **body: Any) -> dict[str, Any]:
        response = await self.api.as_(who).post("/approvals", json={"action": "restart web",
                                                                     **body})
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def get(self, request_id: str) -> dict[str, Any]:
        result: dict[str, Any] = (await self.api.as_("viewer").get(
            f"/approvals/{request_id}")).json()
        return result

    def replies(self) -> list[str]:
        return [r["text"] for r in self.slack.replies]

    async def w2(self) -> list[dict[str, Any]]:
        thresholds = Thresholds.from_settings(self.settings)
        results = await self.db.run(lambda c, now: run_watchdogs(c, now, thresholds),
                                    readonly=True)
        [check] = [r for r in results if r.id == "W-2"]
        assert check.applies
        return check.findings


def slack_settings(db_url: str, slack: FakeSlackApi, **more: Any) -> Settings:
    return Settings(
        database_url=db_url, slack_bot_token=TOKEN, slack_channel=FakeSlackApi.CHANNEL_NAME,
        slack_api_base=slack.api_base, slack_signing_secret=SIGNING,
        slack_approvers=f"{ALICE}=alice,{BOB}=bob,{BOT}=bot", display_tz="Asia/Taipei",
        **more,
    )


@pytest.fixture
async def rig(db_url: str, slack: FakeSlackApi, clock: FakeClock) -> AsyncIterator[Rig]:
    settings = slack_settings(db_url, slack)
    db = Database.from_settings(settings, clock=clock)
    async with httpx.AsyncClient(timeout=2.0) as client, api_for(db, settings) as api:
        notifier = Notifier(db, settings, Metrics(), build_senders(db, settings, client),
                            rng=lambda: 0.5)
        yield Rig(db, api, notifier, slack, clock, settings)
    await db.dispose()


async def test_a_block_kit_card_per_request_with_buttons_deadline_and_precedents(
    rig: Rig,
) -> None:
    old = await new_incident(rig.db, fingerprint="disk-web", service="web", title="disk full")
    await rig.db.run(lambda c, n: store.resolve_incident(
        c, n, old["id"], actor="alice", resolution_type=ResolutionType.MANUAL))
    incident = await new_incident(rig.db, fingerprint="disk-web", service="web",
                                  title="disk <!channel> full again")
    request = await rig.ask(incident_id=str(incident["id"]), risk="high",
                            rationale="logs filled /var & more", ttl_seconds=3600)
    await rig.deliver()
    [call] = rig.slack.of("chat.postMessage")
    assert call.path == "/api/chat.postMessage"
    assert call.headers["authorization"] == f"Bearer {TOKEN}"
    assert call.json["channel"] == FakeSlackApi.CHANNEL_NAME
    [card] = rig.slack.cards()
    text = shown(card)
    for expected in ("Sign-off needed", "restart web", "*Risk*\nhigh", "*Service*\nweb",
                     "disk &lt;!channel&gt; full again", "logs filled /var &amp; more",
                     "*Precedents*", "disk full: manual", "Asia/Taipei",
                     "21:00 CST", request["id"], "*Requested by*\nbot"):
        assert expected in text, expected
    assert "<!channel>" not in text  # no mention slipped through
    assert buttons(card) == [("approve", request["id"]), ("reject", request["id"])]
    stored = await rig.db.run(
        lambda c, n: outbox.get_card(c, uuid.UUID(request["id"]), outbox.Channel.SLACK))
    assert stored is not None and stored["chat_id"] == FakeSlackApi.CHANNEL_ID
    assert number_to_ts(stored["message_id"]) == card["ts"]
    assert await rig.deliver() == 0 and len(rig.slack.of("chat.postMessage")) == 1


async def test_a_placeholder_card_warns_and_has_no_approve_button(rig: Rig) -> None:
    request = await rig.ask(action="TBD")
    await rig.deliver()
    [card] = rig.slack.cards()
    assert "Needs analysis" in shown(card)
    assert buttons(card) == [("reject", request["id"])]
    await rig.press(ALICE, "approve", request["id"])  # a forged press
    assert (await rig.get(request["id"]))["status"] == "pending"
    assert "placeholder" in rig.replies()[0]


async def test_presses_decide_as_the_mapped_approver_and_the_card_is_edited(rig: Rig) -> None:
    first, second = await rig.ask(), await rig.ask()
    await rig.deliver()
    await rig.press(ALICE, "approve", first["id"])
    await rig.press(BOB, "reject", second["id"])
    one, two = await rig.get(first["id"]), await rig.get(second["id"])
    assert (one["status"], one["decided_by"]) == ("approved", "alice")
    assert (two["status"], two["decided_by"]) == ("rejected", "bob")
    assert rig.replies() == ["Done: approved by alice.", "Done: rejected by bob."]
    assert all(r["response_type"] == "ephemeral" and r["replace_original"] is False
               for r in rig.slack.replies)
    events = (await rig.api.as_("viewer").get(f"/approvals/{first['id']}/events")).json()
    assert events["items"][-1]["actor"] == "alice"
    await rig.deliver()
    assert len(rig.slack.of("chat.update")) == 2
    for request, ending in ((first, "✅ Approved by alice at 2026-01-01 20:00 CST"),
                            (second, "❌ Rejected by bob at 2026-01-01 20:00 CST")):
        card = rig.slack.card_of(request["id"])
        assert buttons(card) == []
        assert ending in shown(card)


async def test_the_card_is_edited_on_every_ending(rig: Rig) -> None:
    incident = await new_incident(rig.db)
    approved, rejected, cancelled, expired = [await rig.ask(ttl_seconds=60) for _ in range(4)]
    resolved = await rig.ask(incident_id=str(incident["id"]), ttl_seconds=3600)
    await rig.deliver()
    assert len(rig.slack.cards()) == 5
    await rig.api.as_("alice").post(f"/approvals/{approved['id']}/approve")
    await rig.api.as_("alice").post(f"/approvals/{rejected['id']}/reject")
    await rig.api.as_("bot").post(f"/approvals/{cancelled['id']}/cancel")
    await rig.api.as_("alice").post(f"/incidents/{incident['id']}/resolve")
    rig.clock.advance(60)
    await rig.db.run(lambda c, n: store.expire_due_requests(c, n, limit=100))
    await rig.deliver()
    updates = rig.slack.of("chat.update")
    assert len(updates) == 5 and len({u.json["ts"] for u in updates}) == 5
    for request, ending in ((approved, "✅ Approved by alice"), (rejected, "❌ Rejected by alice"),
                            (cancelled, "🚫 Cancelled by bot"),
                            (resolved, "🚫 Cancelled by incident_resolved"),
                            (expired, "⌛ Expired: nobody answered")):
        card = rig.slack.card_of(request["id"])
        assert ending in shown(card), ending
        assert buttons(card) == []
    assert await rig.deliver() == 0


async def test_other_presses_change_nothing_and_get_a_short_reply(rig: Rig) -> None:
    request, decided = await rig.ask(ttl_seconds=60), await rig.ask()
    own = await rig.ask()  # asked by "bot", whom U0BOT is mapped to
    await rig.press(STRANGER, "approve", request["id"])
    await rig.press(BOT, "approve", own["id"])
    await rig.press(BOB, "reject", decided["id"])
    await rig.press(ALICE, "approve", decided["id"])
    await rig.press(ALICE, "approve", str(uuid.uuid4()))
    await rig.press(ALICE, "escalate", request["id"])
    rig.clock.advance(61)
    await rig.press(ALICE, "approve", request["id"])
    assert rig.replies() == [
        "You are not an approver in signoff; nothing changed.",
        "You may not decide your own request.",
        "Done: rejected by bob.",
        "Nothing changed: the request is already rejected.",
        "This request does not exist.",
        "Unknown button; nothing changed.",
        "Too late: the request has expired.",
    ]
    late, mine = await rig.get(request["id"]), await rig.get(own["id"])
    assert late["status"] == "expired" and late["approvals"] == []
    assert mine["status"] == "pending" and mine["approvals"] == []
    assert (await rig.get(decided["id"]))["decided_by"] == "bob"


async def test_a_press_by_someone_the_request_does_not_name_changes_nothing(rig: Rig) -> None:
    request = await rig.ask(approvers=["alice"])
    await rig.press(BOB, "approve", request["id"])
    await rig.press(BOB, "reject", request["id"])
    untouched = await rig.get(request["id"])
    assert untouched["status"] == "pending" and untouched["approvals"] == []
    assert rig.replies() == ["Only the request's approvers may decide it; nothing changed."] * 2
    await rig.press(ALICE, "approve", request["id"])
    assert (await rig.get(request["id"]))["decided_by"] == "alice"


async def test_bad_and_stale_signatures_are_refused_and_change_nothing(rig: Rig) -> None:
    request = await rig.ask()
    body = press_body(ALICE, "approve", request["id"], rig.slack.response_url())
    now = time.time()
    wrong_body = body.replace(b"approve", b"reject")
    for headers, sent in (
        ({}, body),
        ({"Content-Type": "application/x-www-form-urlencoded"}, body),
        (signed(body, secret="not-the-secret"), body),
        (signed(body), wrong_body),  # altered after signing
        (signed(body, at=now - 301), body),  # stale: a replay
        (signed(body, at=now + 301), body),
        ({**signed(body), "X-Slack-Signature": "v0=" + "0" * 64}, body),
        ({**signed(body), "X-Slack-Request-Timestamp": "yesterday"}, body),
        ({**signed(body), "X-Slack-Signature": "v0=é".encode()}, body),
    ):
        refused = await rig.post(sent, headers)
        assert refused.status_code == 401, headers
        assert refused.json()["error"]["code"] == "unauthenticated"
    assert (await rig.get(request["id"]))["status"] == "pending"
    assert rig.slack.replies == []
    recent = await rig.post(body, signed(body, at=now - 290))  # within five minutes
    assert recent.status_code == 200
    assert (await rig.get(request["id"]))["status"] == "approved"


async def test_a_verified_body_that_is_not_a_press(rig: Rig) -> None:
    request = await rig.ask()
    for body in (b"payload=%7B", b"nothing=here", b"\xff\xfe", b"payload=%5B1%5D"):
        refused = await rig.post(body, signed(body))
        assert refused.status_code == 422, body
    shortcut = urllib.parse.urlencode({"payload": json.dumps(
        {"type": "shortcut", "user": {"id": ALICE}, "callback_id": "x"})}).encode()
    ignored = await rig.post(shortcut, signed(shortcut))
    assert (ignored.status_code, ignored.content) == (200, b"")
    assert (await rig.get(request["id"]))["status"] == "pending"
    assert rig.slack.replies == []


async def test_without_a_signing_secret_every_press_is_refused(
    db_url: str, slack: FakeSlackApi, clock: FakeClock
) -> None:
    settings = slack_settings(db_url, slack).model_copy(update={"slack_signing_secret": None})
    db = Database.from_settings(settings, clock=clock)
    try:
        async with api_for(db, settings) as api:
            body = press_body(ALICE, "approve", str(uuid.uuid4()), slack.response_url())
            for secret in (SIGNING, ""):
                refused = await api.as_(None).post("/slack/interactions", content=body,
                                                   headers=signed(body, secret=secret))
                assert refused.status_code == 401
    finally:
        await db.dispose()


async def test_slack_down_then_back_429_honoured_and_ok_false_retried_or_dead(
    rig: Rig,
) -> None:
    requests = [await rig.ask(ttl_seconds=3600) for _ in range(2)]
    rig.slack.down = Answer(500, {"ok": False, "error": "internal_error"})
    await rig.deliver()
    rig.slack.down = Answer(429, {"ok": False, "error": "ratelimited"},
                            headers={"Retry-After": "9"})
    rig.clock.advance(2)
    assert await rig.deliver() == 2
    pending = await rig.db.run(lambda c, n: outbox.list_items(c, status="pending"))
    assert len(pending) == 2
    assert all((i["next_attempt_at"] - rig.clock.now).total_seconds() >= 9 for i in pending)
    assert await rig.deliver() == 0  # Retry-After honoured
    rig.slack.down = Answer(200, {"ok": False, "error": "service_unavailable"})
    rig.clock.advance(10)
    assert await rig.deliver() == 2  # tried again later, like a 5xx
    rig.slack.down = None
    rig.clock.advance(10)
    assert await rig.deliver() == 2
    assert len(rig.slack.cards()) == 2
    for request in requests:
        rig.slack.card_of(request["id"])  # exactly one each
    items = await rig.db.run(lambda c, n: outbox.list_items(c))
    assert {(i["status"], i["attempts"]) for i in items} == {("delivered", 4)}

    rig.slack.down = Answer(200, {"ok": False, "error": "channel_not_found"})
    doomed = await rig.ask()
    assert await rig.deliver() == 1
    [dead] = await rig.db.run(lambda c, n: outbox.list_items(c, status="dead"))
    assert (dead["request_id"], dead["attempts"]) == (uuid.UUID(doomed["id"]), 1)
    assert dead["last_error"] == "chat.postMessage: HTTP 200: channel_not_found"
    shown_now = (await rig.api.as_("viewer").get("/watchdog")).json()
    [w4] = [c for c in shown_now["checks"] if c["id"] == "W-4"]
    assert w4["count"] == 1
    assert "slack card given up after 1 attempts" in w4["findings"][0]["detail"]


async def test_reminders_are_replies_in_the_cards_thread(rig: Rig) -> None:
    carded = await rig.ask(ttl_seconds=100)
    decided = await rig.ask(ttl_seconds=100)
    await rig.deliver()
    await rig.press(ALICE, "approve", decided["id"])
    await rig.deliver()

    def reminders() -> list[dict[str, Any]]:
        return [m for m in rig.slack.messages.values() if m["thread_ts"] is not None]

    rig.clock.advance(49)
    await rig.deliver()
    assert reminders() == []
    rig.clock.advance(1)  # half of the time to live
    await rig.deliver()
    [first] = reminders()
    assert first["thread_ts"] == rig.slack.card_of(carded["id"])["ts"]
    assert first["channel"] == FakeSlackApi.CHANNEL_ID
    assert "Reminder: still waiting for sign-off, deadline 2026-01-01 20:01 CST" in first["text"]
    rig.clock.advance(10)
    await rig.deliver()
    assert len(reminders()) == 1  # once each
    rig.clock.advance(30)  # 0.9
    await rig.deliver()
    assert len(reminders()) == 2
    assert {m["thread_ts"] for m in reminders()} == {first["thread_ts"]}


async def test_the_daily_report_is_a_message_in_the_channel(rig: Rig) -> None:
    approved = await rig.ask()
    await rig.press(ALICE, "approve", approved["id"])
    rig.clock.now = datetime(2026, 1, 2, 1, 0, tzinfo=UTC)  # 09:00 in Taipei
    assert await Heartbeat(rig.db, rig.settings).beat() == ["slack"]
    await rig.deliver()
    [report] = [c for c in rig.slack.of("chat.postMessage") if "Requests ended" in
                c.json["text"]]
    assert report.json["channel"] == FakeSlackApi.CHANNEL_NAME
    assert "thread_ts" not in report.json
    text = report.json["text"]
    assert "2026-01-01" in text and "human_approved: 1" in text
    items = await rig.db.run(lambda c, n: outbox.list_items(c))
    assert "heartbeat:slack:2026-01-01" in {i["dedupe_key"] for i in items}


async def test_w2_fires_while_slack_is_down_then_clears_without_duplicate_cards(
    rig: Rig,
) -> None:
    requests = [await rig.ask(ttl_seconds=3600) for _ in range(2)]
    rig.slack.down = Answer(503, {"ok": False, "error": "service_unavailable"})
    for _ in range(6):  # retries keep failing for two minutes
        await rig.deliver()
        rig.clock.advance(20)
    assert await rig.w2() == []  # within the grace
    rig.clock.advance(1)
    findings = await rig.w2()
    assert [f["request_id"] for f in findings] == [r["id"] for r in requests]
    assert {f["channel"] for f in findings} == {"slack"}
    assert "no card delivered in Slack; its card is pending, last error: " in (
        findings[0]["detail"])
    assert "503" in findings[0]["detail"]
    listed = (await rig.api.as_("viewer").get("/watchdog")).json()
    [w2] = [c for c in listed["checks"] if c["id"] == "W-2"]
    assert w2["count"] == 2 and w2["findings"][0]["channel"] == "slack"

    rig.slack.down = None
    for _ in range(5):
        rig.clock.advance(60)
        await rig.deliver()
    assert await rig.w2() == []
    assert len(rig.slack.cards()) == 2
    for request in requests:
        rig.slack.card_of(request["id"])


# -- Telegram and Slack at once ---------------------------------------------------------

TELEGRAM_TOKEN = "123456:test-token"
TELEGRAM_SECRET = "tg-secret"


async def test_both_chats_get_one_card_each_and_a_press_in_either_decides_once(
    db_url: str, slack: FakeSlackApi, clock: FakeClock
) -> None:
    with serving(FakeBotApi(TELEGRAM_TOKEN)) as bot:
        assert isinstance(bot, FakeBotApi)
        settings = slack_settings(
            db_url, slack, telegram_bot_token=TELEGRAM_TOKEN, telegram_chat_id="-1001",
            telegram_api_base=bot.url, telegram_webhook_secret=TELEGRAM_SECRET,
            telegram_approvers="111=alice,222=bob")
        db = Database.from_settings(settings, clock=clock)
        try:
            async with httpx.AsyncClient(timeout=2.0) as client, api_for(db, settings) as api:
                notifier = Notifier(db, settings, Metrics(),
                                    build_senders(db, settings, client), rng=lambda: 0.5)
                rig = Rig(db, api, notifier, slack, clock, settings)
                await both_chats(rig, bot)
        finally:
            await db.dispose()


async def both_chats(rig: Rig, bot: FakeBotApi) -> None:
    by_slack, by_telegram = await rig.ask(), await rig.ask()
    await rig.deliver()
    assert len(bot.of("sendMessage")) == 2 and len(rig.slack.cards()) == 2
    assert await rig.deliver() == 0

    async def telegram_press(user: int, data: str) -> None:
        update = {"update_id": 1, "callback_query": {
            "id": uuid.uuid4().hex, "from": {"id": user}, "data": data}}
        pressed = await rig.api.as_(None).post(
            "/telegram/webhook", json=update,
            headers={"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET})
        assert pressed.status_code == 200

    await rig.press(ALICE, "approve", by_slack["id"])
    await telegram_press(222, f"reject:{by_slack['id']}")  # too late: Slack's press won
    await telegram_press(222, f"reject:{by_telegram['id']}")
    await rig.press(ALICE, "approve", by_telegram["id"])
    assert rig.replies() == ["Done: approved by alice.",
                             "Nothing changed: the request is already rejected."]
    assert [c.json["text"] for c in bot.of("answerCallbackQuery")] == [
        "Nothing changed: the request is already approved.", "Done: rejected by bob."]
    one, two = await rig.get(by_slack["id"]), await rig.get(by_telegram["id"])
    assert (one["status"], one["decided_by"]) == ("approved", "alice")
    assert (two["status"], two["decided_by"]) == ("rejected", "bob")
    events = (await rig.api.as_("viewer").get(f"/approvals/{by_slack['id']}/events")).json()
    assert [e["to_status"] for e in events["items"]] == ["pending", "approved"]

    await rig.deliver()
    assert len(bot.of("editMessageText")) == 2 and len(rig.slack.of("chat.update")) == 2
    assert "✅ Approved by alice" in rig.slack.card_of(by_slack["id"])["text"]
    assert "❌ Rejected by bob" in rig.slack.card_of(by_telegram["id"])["text"]
    assert all(m["reply_markup"] is None for m in bot.messages.values())
    assert all(buttons(m) == [] for m in rig.slack.cards())

    # W-2 names the chat a card is missing from: Slack down, Telegram fine.
    rig.slack.down = Answer(500, {"ok": False, "error": "internal_error"})
    third = await rig.ask(ttl_seconds=3600)
    await rig.deliver()
    assert len(bot.of("sendMessage")) == 3
    rig.clock.advance(121)
    findings = await rig.w2()
    assert [(f["request_id"], f["channel"]) for f in findings] == [(third["id"], "slack")]


async def test_a_press_while_the_database_is_down_is_answered_and_the_presser_told(
    slack: FakeSlackApi,
) -> None:
    nobody_listens = f"postgresql://postgres@127.0.0.1:{free_port()}/signoff"
    settings = slack_settings(nobody_listens, slack)
    app = create_app(settings, run_resolver=False)
    body = press_body(ALICE, "approve", str(uuid.uuid4()), slack.response_url())
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://signoff") as client:
            pressed = await client.post("/api/v1/slack/interactions", content=body,
                                        headers=signed(body))
    finally:
        await app.state.service.db.dispose()
    assert (pressed.status_code, pressed.content) == (200, b"")
    assert [r["text"] for r in slack.replies] == [
        "signoff could not record this press just now; look at the card in a moment, "
        "or press again."]
