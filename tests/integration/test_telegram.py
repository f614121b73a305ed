"""Telegram cards against a fake Bot API on loopback (real HTTP, the Bot API's shapes).

A card per request with Approve/Reject buttons; presses decide as the mapped approver;
the secret token is checked; unmapped, late and repeated presses change nothing; the card
is edited on every ending; Telegram down for a while, then no duplicate cards.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from signoff import store
from signoff.db import Database
from signoff.lifecycle import ResolutionType
from signoff.metrics import Metrics
from signoff.notify import outbox
from signoff.notify.channels import build_senders
from signoff.notify.worker import Notifier
from signoff.settings import Settings
from signoff.watchdog import Thresholds, run_watchdogs
from tests.conftest import FakeClock
from tests.integration.api_support import Api, api_for
from tests.integration.notify_support import Answer, FakeBotApi, serving
from tests.integration.store_support import new_incident

TOKEN = "123456:test-token"
SECRET = "tg-secret"
CHAT = "-1001"
ALICE, BOB, STRANGER = 111, 222, 999


@pytest.fixture
def bot() -> Iterator[FakeBotApi]:
    with serving(FakeBotApi(TOKEN)) as fake:
        yield fake  # type: ignore[misc]


@dataclass
class Rig:
    db: Database
    api: Api
    notifier: Notifier
    bot: FakeBotApi
    clock: FakeClock

    async def deliver(self) -> int:
        return await self.notifier.run_once()

    async def press(self, user: int, data: str, secret: str | None = SECRET) -> httpx.Response:
        update = {"update_id": 1, "callback_query": {
            "id": uuid.uuid4().hex, "from": {"id": user, "is_bot": False, "first_name": "x"},
            "message": {"message_id": 1, "chat": {"id": int(CHAT)}}, "data": data,
        }}
        headers = {} if secret is None else {"X-Telegram-Bot-Api-Secret-Token": secret}
        return await self.api.as_(None).post("/telegram/webhook", json=update, headers=headers)

    async def ask(self, **body: Any) -> dict[str, Any]:
        response = await self.api.as_("bot").post("/approvals", json={"action": "restart web",
                                                                       **body})
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def get(self, request_id: str) -> dict[str, Any]:
        result: dict[str, Any] = (await self.api.as_("viewer").get(
            f"/approvals/{request_id}")).json()
        return result

    def answers(self) -> list[str]:
        return [c.json["text"] for c in self.bot.of("answerCallbackQuery")]


@pytest.fixture
def zone() -> str:
    return "Asia/Taipei"


@pytest.fixture
async def rig(db_url: str, bot: FakeBotApi, clock: FakeClock, zone: str) -> AsyncIterator[Rig]:
    settings = Settings(
        database_url=db_url, telegram_bot_token=TOKEN, telegram_chat_id=CHAT,
        telegram_api_base=bot.url, telegram_webhook_secret=SECRET,
        telegram_approvers=f"{ALICE}=alice,{BOB}=bob", display_tz=zone,
        notify_max_attempts=8,
    )
    db = Database.from_settings(settings, clock=clock)
    async with httpx.AsyncClient(timeout=2.0) as client, api_for(db, settings) as api:
        notifier = Notifier(db, settings, Metrics(), build_senders(db, settings, client),
                            rng=lambda: 0.5)
        yield Rig(db, api, notifier, bot, clock)
    await db.dispose()


def _buttons(call: Any) -> list[str]:
    markup = call.json.get("reply_markup") or {"inline_keyboard": []}
    return [b["callback_data"].split(":")[0] for row in markup["inline_keyboard"] for b in row]


async def test_a_card_per_request_with_buttons_deadline_and_precedents(rig: Rig) -> None:
    old = await new_incident(rig.db, fingerprint="disk-web", service="web", title="disk full")
    await rig.db.run(lambda c, n: store.resolve_incident(
        c, n, old["id"], actor="alice", resolution_type=ResolutionType.MANUAL))
    incident = await new_incident(rig.db, fingerprint="disk-web", service="web",
                                  title="disk full again")
    request = await rig.ask(incident_id=str(incident["id"]), risk="high",
                            rationale="logs filled /var", ttl_seconds=3600)
    await rig.deliver()
    [card] = rig.bot.of("sendMessage")
    assert card.path == f"/bot{TOKEN}/sendMessage"
    assert card.json["chat_id"] == CHAT
    text = card.json["text"]
    for shown in ("disk full again", "restart web", "Risk: high", "logs filled /var",
                  "Precedents:", "Asia/Taipei", "21:00 CST"):  # 12:00 UTC + 1 h, in Taipei
        assert shown in text, shown
    assert _buttons(card) == ["approve", "reject"]
    assert request["id"] in card.json["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
    stored = await rig.db.run(
        lambda c, n: outbox.get_card(c, uuid.UUID(request["id"]), outbox.Channel.TELEGRAM))
    assert stored is not None and stored["message_id"] in rig.bot.messages
    assert await rig.deliver() == 0 and len(rig.bot.of("sendMessage")) == 1


async def test_presses_decide_as_the_mapped_approver_and_the_card_is_edited(rig: Rig) -> None:
    first, second = await rig.ask(), await rig.ask()
    await rig.deliver()
    assert (await rig.press(ALICE, f"approve:{first['id']}")).status_code == 200
    assert (await rig.press(BOB, f"reject:{second['id']}")).status_code == 200
    one, two = await rig.get(first["id"]), await rig.get(second["id"])
    assert (one["status"], one["decided_by"]) == ("approved", "alice")
    assert (two["status"], two["decided_by"]) == ("rejected", "bob")
    assert rig.answers() == ["Done: approved by alice.", "Done: rejected by bob."]
    await rig.deliver()
    edits = rig.bot.of("editMessageText")
    assert len(edits) == 2
    for message in rig.bot.messages.values():
        assert message["reply_markup"] is None  # buttons gone
    assert {"✅ Approved by alice", "❌ Rejected by bob"} <= {
        line.split(" at ")[0] for m in rig.bot.messages.values()
        for line in m["text"].splitlines()}


async def test_the_secret_token_is_checked_and_nothing_changes(rig: Rig) -> None:
    request = await rig.ask()
    for secret in (None, "wrong", ""):
        refused = await rig.press(ALICE, f"approve:{request['id']}", secret=secret)
        assert refused.status_code == 401
    assert (await rig.get(request["id"]))["status"] == "pending"
    assert rig.bot.of("answerCallbackQuery") == []


async def test_unmapped_late_and_repeated_presses_are_answered_and_change_nothing(
    rig: Rig,
) -> None:
    request, decided = await rig.ask(ttl_seconds=60), await rig.ask()
    await rig.press(STRANGER, f"approve:{request['id']}")
    assert (await rig.get(request["id"]))["status"] == "pending"
    await rig.press(BOB, f"reject:{decided['id']}")
    await rig.press(ALICE, f"approve:{decided['id']}")
    assert (await rig.get(decided["id"]))["decided_by"] == "bob"
    rig.clock.advance(61)
    await rig.press(ALICE, f"approve:{request['id']}")
    late = await rig.get(request["id"])
    assert late["status"] == "expired" and late["approvals"] == []
    await rig.press(ALICE, f"approve:{uuid.uuid4()}")
    answers = rig.answers()
    assert answers[0] == "You are not an approver in signoff; nothing changed."
    assert answers[2] == "Nothing changed: the request is already rejected."
    assert answers[3] == "Too late: the request has expired."
    assert answers[4] == "This request does not exist."


async def test_a_press_by_someone_the_request_does_not_name_changes_nothing(rig: Rig) -> None:
    request = await rig.ask(approvers=["alice"])
    await rig.press(BOB, f"approve:{request['id']}")
    await rig.press(BOB, f"reject:{request['id']}")
    untouched = await rig.get(request["id"])
    assert untouched["status"] == "pending" and untouched["approvals"] == []
    assert rig.answers() == ["Only the request's approvers may decide it; nothing changed."] * 2
    await rig.press(ALICE, f"approve:{request['id']}")
    assert (await rig.get(request["id"]))["decided_by"] == "alice"


async def test_a_placeholder_gets_no_approve_button_and_cannot_be_approved(rig: Rig) -> None:
    request = await rig.ask(action="TBD")
    await rig.deliver()
    [card] = rig.bot.of("sendMessage")
    assert _buttons(card) == ["reject"] and "Needs analysis" in card.json["text"]
    await rig.press(ALICE, f"approve:{request['id']}")  # a forged press
    assert (await rig.get(request["id"]))["status"] == "pending"
    assert "placeholder" in rig.answers()[0]


async def test_the_card_is_edited_on_every_ending(rig: Rig) -> None:
    incident = await new_incident(rig.db)
    approved, rejected, cancelled, expired = [await rig.ask(ttl_seconds=60) for _ in range(4)]
    resolved = await rig.ask(incident_id=str(incident["id"]), ttl_seconds=3600)
    await rig.deliver()
    assert len(rig.bot.of("sendMessage")) == 5
    await rig.api.as_("alice").post(f"/approvals/{approved['id']}/approve")
    await rig.api.as_("alice").post(f"/approvals/{rejected['id']}/reject")
    await rig.api.as_("bot").post(f"/approvals/{cancelled['id']}/cancel")
    await rig.api.as_("alice").post(f"/incidents/{incident['id']}/resolve")
    rig.clock.advance(60)
    await rig.db.run(lambda c, n: store.expire_due_requests(c, n, limit=100))
    await rig.deliver()
    edits = rig.bot.of("editMessageText")
    assert len(edits) == 5
    assert len({e.json["message_id"] for e in edits}) == 5
    for request, ending in ((approved, "✅ Approved by alice"), (rejected, "❌ Rejected by alice"),
                            (cancelled, "🚫 Cancelled by bot"),
                            (resolved, "🚫 Cancelled by incident_resolved"),
                            (expired, "⌛ Expired: nobody answered")):
        [text] = [m["text"] for m in rig.bot.messages.values() if request["id"] in m["text"]]
        assert ending in text, ending
    assert all(m["reply_markup"] is None for m in rig.bot.messages.values())


async def test_telegram_down_for_a_while_then_recovery_without_duplicate_cards(
    rig: Rig,
) -> None:
    requests = [await rig.ask(ttl_seconds=3600) for _ in range(3)]
    rig.bot.down = Answer(500, {"ok": False, "error_code": 500, "description": "oops"})
    await rig.deliver()
    rig.bot.down = Answer(429, {"ok": False, "error_code": 429, "description": "Too Many",
                                "parameters": {"retry_after": 7}})
    rig.clock.advance(2)
    assert await rig.deliver() == 3
    pending = await rig.db.run(lambda c, n: outbox.list_items(c, status="pending"))
    assert all((i["next_attempt_at"] - rig.clock.now).total_seconds() >= 7 for i in pending)
    assert await rig.deliver() == 0  # Retry-After honoured
    rig.bot.down = Answer(hang=4)  # longer than the client waits (2 s)
    rig.clock.advance(8)
    assert await rig.deliver() == 3
    assert rig.bot.messages == {}
    rig.bot.down = None
    for _ in range(3):  # approve one meanwhile: its card goes out already final
        rig.clock.advance(10)
        await rig.deliver()
    assert len(rig.bot.messages) == 3
    assert len(rig.bot.of("sendMessage")) == 3 + 3 + 3 + 3  # 3 refused thrice, then 3 sent
    shown = "\n".join(m["text"] for m in rig.bot.messages.values())
    for request in requests:
        assert shown.count(request["id"]) == 1
    items = await rig.db.run(lambda c, n: outbox.list_items(c))
    assert {i["status"] for i in items} == {"delivered"}
    assert {i["attempts"] for i in items} == {4}


@pytest.mark.parametrize(("zone", "shown"), [
    ("UTC", "deadline 2026-01-01 20:01 UTC (UTC)"),
    ("Asia/Taipei", "deadline 2026-01-02 04:01 CST (Asia/Taipei)"),
])
async def test_reminders_once_each_on_the_channels_that_carried_the_card(
    rig: Rig, shown: str
) -> None:
    # 20:00 UTC is already the next day in Taipei: the deadline is shown on its local day.
    rig.clock.now = rig.clock.now.replace(hour=20)
    carded = await rig.ask(ttl_seconds=100)
    await rig.deliver()
    rig.bot.down = Answer(400, {"ok": False, "error_code": 400,
                                "description": "Bad Request: chat not found"})
    uncarded = await rig.ask(ttl_seconds=100)  # its card is dead: no reminder
    await rig.deliver()
    rig.bot.down = None
    rig.bot.calls.clear()

    async def sent() -> list[Any]:
        await rig.deliver()
        return [c for c in rig.bot.of("sendMessage") if "Reminder" in c.json["text"]]

    rig.clock.advance(49)
    assert await sent() == []
    rig.clock.advance(1)  # half of the time to live
    [first] = await sent()
    assert first.json["reply_parameters"]["message_id"] in rig.bot.messages
    assert shown in first.json["text"]
    rig.clock.advance(10)
    assert len(await sent()) == 1  # once each
    rig.clock.advance(30)  # 0.9
    assert len(await sent()) == 2
    rig.clock.advance(9)
    assert len(await sent()) == 2
    reminders = await rig.db.run(lambda c, n: outbox.list_items(c))
    kinds = [(i["request_id"], i["event"]) for i in reminders if i["event"] == outbox.REMINDER]
    assert kinds == [(uuid.UUID(carded["id"]), outbox.REMINDER)] * 2
    assert uncarded["id"] not in {str(r) for r, _ in kinds}


async def test_w2_fires_while_telegram_is_down_then_clears_without_duplicate_cards(
    rig: Rig,
) -> None:
    settings = rig.api.app.state.settings
    thresholds = Thresholds.from_settings(settings)

    async def w2() -> list[dict[str, Any]]:
        results = await rig.db.run(lambda c, now: run_watchdogs(c, now, thresholds),
                                   readonly=True)
        [check] = [r for r in results if r.id == "W-2"]
        assert check.applies
        return check.findings

    requests = [await rig.ask(ttl_seconds=3600) for _ in range(2)]
    rig.bot.down = Answer(502, {"ok": False, "error_code": 502, "description": "Bad Gateway"})
    for _ in range(6):  # retries keep failing for two minutes
        await rig.deliver()
        rig.clock.advance(20)
    assert await w2() == []  # within the grace
    rig.clock.advance(1)
    findings = await w2()
    assert [f["request_id"] for f in findings] == [r["id"] for r in requests]
    assert "its card is pending, last error: " in findings[0]["detail"]
    assert "502" in findings[0]["detail"]
    shown = (await rig.api.as_("viewer").get("/watchdog")).json()
    [listed] = [c for c in shown["checks"] if c["id"] == "W-2"]
    assert listed["count"] == 2

    rig.bot.down = None
    for _ in range(5):
        rig.clock.advance(60)
        await rig.deliver()
    assert await w2() == []
    assert len(rig.bot.messages) == 2
    delivered = "\n".join(m["text"] for m in rig.bot.messages.values())
    for request in requests:
        assert delivered.count(request["id"]) == 1
