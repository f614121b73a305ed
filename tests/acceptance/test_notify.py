"""Notifications from the real ``signoff`` command: ``serve`` delivers as changes commit,
and ``signoff notify --once`` drains the outbox alone."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from signoff import store
from signoff.db import Database
from signoff.migrate import upgrade
from signoff.notify.webhook import verify
from signoff.settings import Settings
from tests.acceptance.conftest import Server, run_signoff, start_server
from tests.integration.notify_support import FakeBotApi, Recorder, serving

TOKEN = "42:acceptance"


@pytest.fixture
def receiver() -> Iterator[Recorder]:
    with serving(Recorder()) as rec:
        yield rec


@pytest.fixture
def bot() -> Iterator[FakeBotApi]:
    with serving(FakeBotApi(TOKEN)) as fake:
        yield fake  # type: ignore[misc]


@pytest.fixture
def notifying_server(
    database_url: str, tmp_path: Path, receiver: Recorder, bot: FakeBotApi
) -> Iterator[Server]:
    srv = start_server(
        database_url, tmp_path / "serve.log",
        SIGNOFF_WEBHOOK_URL=receiver.url + "/hook", SIGNOFF_WEBHOOK_SECRET="s3cret",
        SIGNOFF_TELEGRAM_BOT_TOKEN=TOKEN, SIGNOFF_TELEGRAM_CHAT_ID="-42",
        SIGNOFF_TELEGRAM_API_BASE=bot.url, SIGNOFF_TELEGRAM_WEBHOOK_SECRET="tg",
        SIGNOFF_TELEGRAM_APPROVERS="7=alice", SIGNOFF_DISPLAY_TZ="Asia/Taipei",
        SIGNOFF_HEARTBEAT_AT="off",  # after 09:00 the daily report would be one more message
    )
    yield srv
    srv.stop()


def test_serve_sends_a_card_and_events_and_a_press_decides(
    notifying_server: Server, receiver: Recorder, bot: FakeBotApi
) -> None:
    started = time.monotonic()
    created = notifying_server.client("bot").post("/approvals", json={"action": "restart"})
    assert created.status_code == 201
    request_id = created.json()["id"]
    assert len(bot.wait_for(1)) == 1 and bot.calls[0].method == "sendMessage"
    assert time.monotonic() - started < 1.5
    press = {"update_id": 9, "callback_query": {
        "id": "q1", "from": {"id": 7}, "data": f"approve:{request_id}"}}
    refused = notifying_server.client(None).post("/telegram/webhook", json=press)
    assert refused.status_code == 401
    pressed = notifying_server.client(None).post(
        "/telegram/webhook", json=press, headers={"X-Telegram-Bot-Api-Secret-Token": "tg"})
    assert pressed.status_code == 200
    decided = notifying_server.client("viewer").get(f"/approvals/{request_id}").json()
    assert (decided["status"], decided["decided_by"]) == ("approved", "alice")
    calls = bot.wait_for(3)
    assert sorted(c.method for c in calls) == [
        "answerCallbackQuery", "editMessageText", "sendMessage"]
    hooks = receiver.wait_for(2)
    assert [c.json["event"] for c in hooks] == ["request.created", "request.approved"]
    for call in hooks:
        assert verify("s3cret", call.body, call.headers["x-signoff-signature"])


async def _write_incident(url: str, hook: str) -> None:
    db = Database.from_settings(Settings(database_url=url, webhook_url=hook))
    try:
        await upgrade(db)
        await db.run(lambda c, n: store.create_incident(
            c, n, actor="bot", data={"title": f"t-{uuid.uuid4()}", "severity": "low"}))
    finally:
        await db.dispose()


def test_notify_once_drains_the_outbox(database_url: str, receiver: Recorder) -> None:
    hook = receiver.url + "/hook"
    asyncio.run(_write_incident(database_url, hook))
    env = {"SIGNOFF_DATABASE_URL": database_url, "SIGNOFF_WEBHOOK_URL": hook,
           "SIGNOFF_LOG_FORMAT": "json"}
    done = run_signoff({**os.environ, **env}, "notify", "--once")
    assert done.returncode == 0, done.stderr
    assert "attempted 1 notification(s)" in done.stderr
    assert [c.json["event"] for c in receiver.calls] == ["incident.opened"]
    again = run_signoff({**os.environ, **env}, "notify", "--once")
    assert "attempted 0" in again.stderr and len(receiver.calls) == 1
