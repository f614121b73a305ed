"""Telegram: the Bot API client, and the cards' layout there (``notify.cards`` does the
rest): plain text, and an inline keyboard with Approve and Reject.

Methods are called at ``{api_base}/bot{token}/{method}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from signoff.notify import outbox
from signoff.notify.cards import (
    PRECEDENTS,
    CardFacts,
    Posted,
    ending_line,
    local,
    page_url,
    reminder_text,
    short,
)
from signoff.notify.delivery import DeliveryFailed, parse_retry_after

Row = Mapping[Any, Any]
CHANNEL = outbox.Channel.TELEGRAM


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


def render_card(
    request: Row, incident: Row | None, precedents: Sequence[Row], zone: ZoneInfo,
    page: str | None = None,
) -> tuple[str, dict[str, Any] | None]:
    """The card's text and its inline keyboard (None once the request has ended); with
    ``page``, an Open button to the request's page under the decision buttons."""
    lines = ["⚠️ Needs analysis: the action is a placeholder" if request["needs_analysis"]
             else "🔔 Sign-off needed"]
    if incident is not None:
        where = f" on {incident['service']}" if incident["service"] else ""
        lines.append(f"Incident: [{incident['severity']}] {short(incident['title'])}{where}")
    lines += [
        f"Action: {short(request['action']) or '(none)'}",
        f"Risk: {request['risk']}",
    ]
    if request["rationale"]:
        lines.append(f"Rationale: {short(request['rationale'])}")
    lines += [f"Requested by: {request['requested_by']}",
              f"Deadline: {local(request['expires_at'], zone)}"]
    if precedents:
        lines.append("Precedents:")
        for p in precedents[:PRECEDENTS]:
            how = p["disposition"] or p["resolution_type"]
            lines.append(f"• {short(p['title'])}: {how} ({local(p['created_at'], zone)})")
    lines.append(f"Request: {request['id']}")
    if request["status"] != "pending":
        lines.append(ending_line(request, zone))
        return "\n".join(lines), None
    buttons = [{"text": "❌ Reject", "callback_data": f"reject:{request['id']}"}]
    if not request["needs_analysis"]:
        buttons.insert(0, {"text": "✅ Approve", "callback_data": f"approve:{request['id']}"})
    rows = [buttons] if page is None else [buttons, [{"text": "🔗 Open", "url": page}]]
    return "\n".join(lines), {"inline_keyboard": rows}


class TelegramChat:
    """Cards in one Telegram chat (``notify.cards.Chat``)."""

    channel = CHANNEL

    def __init__(
        self, api: BotApi, chat_id: str, zone: ZoneInfo, public_url: str | None = None
    ) -> None:
        self.api = api
        self.chat_id = chat_id
        self.zone = zone
        self.public_url = public_url

    def _render(self, facts: CardFacts) -> tuple[str, dict[str, Any] | None]:
        return render_card(facts.request, facts.incident, facts.precedents, self.zone,
                           page_url(self.public_url, facts.request["id"]))

    async def post_card(self, facts: CardFacts) -> Posted:
        text, keyboard = self._render(facts)
        params: dict[str, Any] = {"chat_id": self.chat_id, "text": text}
        if keyboard is not None:
            params["reply_markup"] = keyboard
        sent = await self.api.call("sendMessage", **params)
        try:
            return Posted(str(sent.get("chat", {}).get("id", self.chat_id)),
                          int(sent["message_id"]))
        except (AttributeError, TypeError, KeyError, ValueError):
            raise DeliveryFailed("sendMessage answered without a message id",
                                 permanent=True) from None

    async def edit_card(self, card: Row, facts: CardFacts) -> None:
        text, _ = self._render(facts)
        await self.api.call("editMessageText", chat_id=card["chat_id"],
                            message_id=card["message_id"], text=text)

    async def post_reminder(self, card: Row, facts: CardFacts) -> None:
        await self.api.call("sendMessage", chat_id=card["chat_id"],
                            text=reminder_text(facts.request, self.zone),
                            reply_parameters={"message_id": card["message_id"]})

    async def post_report(self, text: str) -> None:
        await self.api.call("sendMessage", chat_id=self.chat_id, text=text)
