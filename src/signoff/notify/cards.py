"""Cards: a chat message per request with Approve and Reject buttons, edited once when the
request ends; reminders under it; the daily report beside it.

What every chat does the same way lives here: reading the request from the database when
an item is delivered (so a request that ended before its card went out gets a card that
already shows the ending, without buttons), sending a card once, waiting for the card
before its edit, reminding only of a pending request that has a card, and remembering
which message to edit. A chat (``notify.telegram``, ``notify.slack``) only lays the card
out and calls its API: the ``Chat`` protocol. Retries, the schedule and dead items are
the worker's (``notify.worker``), the same for every channel.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff.db import Database
from signoff.notify import outbox
from signoff.notify.delivery import AfterDelivery, DeliveryFailed
from signoff.tables import incidents, knowledge, requests

Row = Mapping[Any, Any]
LONG = 1000  # characters of a free-text field shown on a card
PRECEDENTS = 3
ENDINGS = {
    "approved": "✅ Approved", "rejected": "❌ Rejected", "expired": "⌛ Expired: nobody answered",
    "cancelled": "🚫 Cancelled",
}
REMINDER = "⏰ Reminder: still waiting for sign-off, deadline {deadline}"

# A link button to the request's page (with SIGNOFF_PUBLIC_URL): the chat opens it.
OPEN = "open"


def page_url(public_url: str | None, request_id: object) -> str | None:
    """The request's page in the console, for a card's Open button; None without a
    public URL (a chat cannot open a page it cannot reach)."""
    return None if public_url is None else f"{public_url}/ui/approvals/{request_id}"


@dataclass(frozen=True)
class CardFacts:
    """What a card shows: the request as it is now, its incident, earlier cases like it."""

    request: Row
    incident: Row | None
    precedents: list[Row]


@dataclass(frozen=True)
class Posted:
    """Where a card went: the chat, and the message's number there (to edit it)."""

    chat_id: str
    message_id: int


class Chat(Protocol):
    """One chat's side of the cards: layout and API calls. Each raises ``DeliveryFailed``
    (with ``retry_after`` when the chat said when to come back)."""

    channel: outbox.Channel

    async def post_card(self, facts: CardFacts) -> Posted: ...

    async def edit_card(self, card: Row, facts: CardFacts) -> None: ...

    async def post_reminder(self, card: Row, facts: CardFacts) -> None: ...

    async def post_report(self, text: str) -> None: ...


def short(text: str | None, limit: int = LONG) -> str:
    text = (text or "").strip()
    return text if len(text) <= limit else text[:limit] + "…"


def local(instant: datetime, zone: ZoneInfo) -> str:
    """An instant as people read it on a card: local time, with the zone's name."""
    return instant.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z") + f" ({zone.key})"


def ending_line(request: Row, zone: ZoneInfo) -> str:
    """How an ended request ended: ``✅ Approved by alice at 2026-01-01 20:00 CST (…)``."""
    status = request["status"]
    ending = str(ENDINGS.get(status, status))
    who = request["decided_by"]
    if who and status in ("approved", "rejected", "cancelled"):
        ending += f" by {who}"
    if request["decided_at"] is not None:
        ending += f" at {local(request['decided_at'], zone)}"
    return ending


def reminder_text(request: Row, zone: ZoneInfo) -> str:
    return REMINDER.format(deadline=local(request["expires_at"], zone))


async def read_card_facts(conn: AsyncConnection, request_id: uuid.UUID) -> CardFacts:
    """A request, its incident, and the knowledge entries of the same fingerprint or service."""
    request = (
        await conn.execute(sa.select(requests).where(requests.c.id == request_id))
    ).mappings().one()
    incident = None
    precedents: list[Row] = []
    if request["incident_id"] is not None:
        incident = (
            await conn.execute(sa.select(incidents).where(incidents.c.id == request["incident_id"]))
        ).mappings().one()
        same = [knowledge.c.fingerprint == incident["fingerprint"]] if incident["fingerprint"] \
            else []
        if incident["service"]:
            same.append(knowledge.c.service == incident["service"])
        if same:
            precedents = list((
                await conn.execute(
                    sa.select(knowledge).where(sa.or_(*same))
                    .order_by(knowledge.c.created_at.desc()).limit(PRECEDENTS)
                )
            ).mappings().all())
    return CardFacts(request, incident, precedents)


class CardSender:
    """Delivers one chat's outbox items: cards, final edits, reminders, daily reports."""

    def __init__(self, db: Database, chat: Chat) -> None:
        self.db = db
        self.chat = chat
        self.channel = chat.channel

    async def deliver(self, item: Row) -> AfterDelivery | None:
        if item["event"] == outbox.DAILY_REPORT:  # a plain message, about no request
            await self.chat.post_report(item["payload"]["text"])
            return None
        rid = item["request_id"]

        async def read(conn: AsyncConnection, now: datetime) -> tuple[Row | None, bool, CardFacts]:
            card = await outbox.get_card(conn, rid, self.channel)
            coming = card is None and await outbox.card_still_coming(conn, rid, self.channel)
            return card, coming, await read_card_facts(conn, rid)

        card, coming, facts = await self.db.run(read, readonly=True)
        if item["event"] == outbox.CARD:
            return await self._send_card(card, facts)
        if card is None:
            if coming and item["event"] == outbox.FINAL:
                raise DeliveryFailed("the card is not sent yet")
            return None  # no card was ever shown: nothing to edit or remind of
        if item["event"] == outbox.FINAL:
            await self.chat.edit_card(card, facts)

            async def final(conn: AsyncConnection, now: datetime) -> None:
                await outbox.mark_card_final(conn, now, rid, self.channel)

            return final
        if item["event"] == outbox.REMINDER:
            if facts.request["status"] == "pending":
                await self.chat.post_reminder(card, facts)
            return None
        raise DeliveryFailed(f"unknown {self.channel.value} item {item['event']!r}",
                             permanent=True)

    async def _send_card(self, card: Row | None, facts: CardFacts) -> AfterDelivery | None:
        if card is not None:
            return None  # sent before (an attempt whose result was not recorded)
        posted = await self.chat.post_card(facts)

        async def remember(conn: AsyncConnection, now: datetime) -> None:
            await outbox.save_card(conn, now, facts.request["id"], self.channel,
                                   chat_id=posted.chat_id, message_id=posted.message_id)

        return remember
