"""Telegram: the Bot API client, and cards with Approve/Reject buttons that are edited
when their request ends.

Methods are called at ``{api_base}/bot{token}/{method}``. A card is rendered when it is
delivered, from the database, so a request that ended before its card went out gets a
card that already shows the ending and has no buttons.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from signoff.db import Database
from signoff.notify import outbox
from signoff.notify.delivery import AfterDelivery, DeliveryFailed, parse_retry_after
from signoff.tables import incidents, knowledge, requests

Row = Mapping[Any, Any]
CHANNEL = outbox.Channel.TELEGRAM
_LONG = 1000  # characters of a free-text field shown on a card
_PRECEDENTS = 3
_ENDINGS = {
    "approved": "✅ Approved", "rejected": "❌ Rejected", "expired": "⌛ Expired: nobody answered",
    "cancelled": "🚫 Cancelled",
}


class BotApi:
    """The few Bot API methods signoff uses, over httpx."""

    def __init__(self, client: httpx.AsyncClient, base: str, token: str) -> None:
        self.client = client
        self.base = base.rstrip("/")
        self.token = token

    async def call(self, method: str, **params: Any) -> Any:
        """Call ``method``; its ``result``, or ``DeliveryFailed`` (with ``retry_after``)."""
        url = f"{self.base}/bot{self.token}/{method}"
        try:
            response = await self.client.post(url, json=params)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{method}: {type(exc).__name__}") from exc
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        if response.status_code == 200 and answer.get("ok"):
            return answer.get("result")
        description = str(answer.get("description") or response.reason_phrase)[:200]
        message = f"{method}: HTTP {response.status_code}: {description}"
        if response.status_code == 429 or response.status_code >= 500:
            parameters = answer.get("parameters")
            retry_after = parameters.get("retry_after") if isinstance(parameters, dict) else None
            if not isinstance(retry_after, int | float):
                retry_after = parse_retry_after(response.headers.get("retry-after"),
                                                datetime.now(UTC))
            raise DeliveryFailed(message, retry_after=retry_after)
        if "message is not modified" in description:
            return None  # an edit that was already made: done
        raise DeliveryFailed(message, permanent=True)


def _short(text: str | None) -> str:
    text = (text or "").strip()
    return text if len(text) <= _LONG else text[:_LONG] + "…"


def _local(instant: datetime, zone: ZoneInfo) -> str:
    return instant.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z") + f" ({zone.key})"


def render_card(
    request: Row, incident: Row | None, precedents: Sequence[Row], zone: ZoneInfo
) -> tuple[str, dict[str, Any] | None]:
    """The card's text and its inline keyboard (None once the request has ended)."""
    lines = ["⚠️ Needs analysis: the action is a placeholder" if request["needs_analysis"]
             else "🔔 Sign-off needed"]
    if incident is not None:
        where = f" on {incident['service']}" if incident["service"] else ""
        lines.append(f"Incident: [{incident['severity']}] {_short(incident['title'])}{where}")
    lines += [
        f"Action: {_short(request['action']) or '(none)'}",
        f"Risk: {request['risk']}",
    ]
    if request["rationale"]:
        lines.append(f"Rationale: {_short(request['rationale'])}")
    lines += [f"Requested by: {request['requested_by']}",
              f"Deadline: {_local(request['expires_at'], zone)}"]
    if precedents:
        lines.append("Precedents:")
        for p in precedents[:_PRECEDENTS]:
            how = p["disposition"] or p["resolution_type"]
            lines.append(f"• {_short(p['title'])}: {how} ({_local(p['created_at'], zone)})")
    lines.append(f"Request: {request['id']}")
    status = request["status"]
    if status != "pending":
        ending = str(_ENDINGS.get(status, status))
        who = request["decided_by"]
        if who and status in ("approved", "rejected", "cancelled"):
            ending += f" by {who}"
        if request["decided_at"] is not None:
            ending += f" at {_local(request['decided_at'], zone)}"
        lines.append(ending)
        return "\n".join(lines), None
    buttons = [{"text": "❌ Reject", "callback_data": f"reject:{request['id']}"}]
    if not request["needs_analysis"]:
        buttons.insert(0, {"text": "✅ Approve", "callback_data": f"approve:{request['id']}"})
    return "\n".join(lines), {"inline_keyboard": [buttons]}


async def read_card_facts(
    conn: AsyncConnection, request_id: uuid.UUID
) -> tuple[Row, Row | None, list[Row]]:
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
                    .order_by(knowledge.c.created_at.desc()).limit(_PRECEDENTS)
                )
            ).mappings().all())
    return request, incident, precedents


class TelegramSender:
    """Delivers the telegram outbox items: cards, final edits, reminders, daily reports."""

    def __init__(self, db: Database, api: BotApi, chat_id: str, zone: ZoneInfo) -> None:
        self.db = db
        self.api = api
        self.chat_id = chat_id
        self.zone = zone

    async def deliver(self, item: Row) -> AfterDelivery | None:
        if item["event"] == outbox.DAILY_REPORT:  # a plain message, about no request
            await self.api.call("sendMessage", chat_id=self.chat_id,
                                text=item["payload"]["text"])
            return None
        rid = item["request_id"]

        async def read(conn: AsyncConnection, now: datetime) -> tuple[Any, ...]:
            card = await outbox.get_card(conn, rid, CHANNEL)
            coming = card is None and await outbox.card_still_coming(conn, rid)
            return card, coming, *(await read_card_facts(conn, rid))

        card, coming, request, incident, precedents = await self.db.run(read, readonly=True)
        if item["event"] == outbox.CARD:
            return await self._send_card(card, request, incident, precedents)
        if card is None:
            if coming and item["event"] == outbox.FINAL:
                raise DeliveryFailed("the card is not sent yet")
            return None  # no card was ever shown: nothing to edit or remind of
        if item["event"] == outbox.FINAL:
            text, _ = render_card(request, incident, precedents, self.zone)
            await self.api.call("editMessageText", chat_id=card["chat_id"],
                                message_id=card["message_id"], text=text)

            async def final(conn: AsyncConnection, now: datetime) -> None:
                await outbox.mark_card_final(conn, now, rid, CHANNEL)

            return final
        if item["event"] == outbox.REMINDER:
            if request["status"] != "pending":
                return None
            left = _local(request["expires_at"], self.zone)
            await self.api.call(
                "sendMessage", chat_id=card["chat_id"],
                text=f"⏰ Reminder: still waiting for sign-off, deadline {left}",
                reply_parameters={"message_id": card["message_id"]},
            )
            return None
        raise DeliveryFailed(f"unknown telegram item {item['event']!r}", permanent=True)

    async def _send_card(
        self, card: Row | None, request: Row, incident: Row | None, precedents: list[Row]
    ) -> AfterDelivery | None:
        if card is not None:
            return None  # sent before (an attempt whose result was not recorded)
        text, keyboard = render_card(request, incident, precedents, self.zone)
        params: dict[str, Any] = {"chat_id": self.chat_id, "text": text}
        if keyboard is not None:
            params["reply_markup"] = keyboard
        sent = await self.api.call("sendMessage", **params)
        try:
            message_id = int(sent["message_id"])
            chat_id = str(sent.get("chat", {}).get("id", self.chat_id))
        except (TypeError, KeyError, ValueError):
            raise DeliveryFailed("sendMessage answered without a message id",
                                 permanent=True) from None

        async def remember(conn: AsyncConnection, now: datetime) -> None:
            await outbox.save_card(conn, now, request["id"], CHANNEL, chat_id=chat_id,
                                   message_id=message_id)

        return remember
