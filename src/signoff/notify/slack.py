"""Slack: the Web API client, and the cards' layout there (``notify.cards`` does the rest):
Block Kit, with buttons whose ``action_id`` is ``approve`` or ``reject`` and whose
``value`` is the request's id.

Methods are called as ``POST {api_base}/{method}`` with a JSON body and the bot token as
a bearer token. Slack answers HTTP 200 with ``"ok": false`` and an ``error`` for most
failures: the ones that say "later" (``ratelimited``, ``internal_error``…) are tried
again like an HTTP 5xx, the others (a wrong token, an unknown channel) are given up on at
once, like Telegram's 4xx. A 429's ``Retry-After`` is honoured.

A message is named by its channel and its ``ts`` (``"1712345678.123456"``: seconds and
six digits of microseconds). The cards table keeps a message's number as an integer, so a
``ts`` is kept as its microseconds (``ts_to_number``) and read back exactly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from signoff.notify import outbox
from signoff.notify.cards import (
    OPEN,
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
CHANNEL = outbox.Channel.SLACK
APPROVE, REJECT = "approve", "reject"  # the buttons' action_id
# ``ok: false`` errors that another attempt may get past.
TRANSIENT = frozenset({
    "ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable",
    "request_timeout", "timeout",
})
_TS = re.compile(r"([0-9]{1,12})\.([0-9]{6})")
_FIELD = 200  # characters of a short value (a field of the card)


def ts_to_number(ts: str) -> int:
    """A message's ``ts`` as an integer (its microseconds); ``ValueError`` if it is not one."""
    match = _TS.fullmatch(ts)
    if match is None:
        raise ValueError(f"{ts!r} is not a Slack message ts")
    return int(match.group(1)) * 1_000_000 + int(match.group(2))


def number_to_ts(number: int) -> str:
    seconds, micros = divmod(number, 1_000_000)
    return f"{seconds}.{micros:06d}"


def escape(text: str) -> str:
    """Text shown as Slack mrkdwn, inert: no mention, link or markup it did not mean."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackApi:
    """The few Web API methods signoff uses, over the outbox's own httpx client."""

    def __init__(self, client: httpx.AsyncClient, base: str, token: str) -> None:
        self.client = client
        self.base = base.rstrip("/")
        self.token = token

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Call ``method``; its answer, or ``DeliveryFailed`` (with ``retry_after``)."""
        url = f"{self.base}/{method}"
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            response = await self.client.post(url, json=params, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{method}: {type(exc).__name__}") from exc
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if not isinstance(answer, dict):
            answer = {}
        status = response.status_code
        if status == 200 and answer.get("ok") is True:
            return answer
        error = str(answer.get("error") or response.reason_phrase or "no error given")[:200]
        message = f"{method}: HTTP {status}: {error}"
        retry_after = parse_retry_after(response.headers.get("retry-after"), datetime.now(UTC))
        if status in (408, 425, 429) or status >= 500 or (status == 200 and error in TRANSIENT):
            raise DeliveryFailed(message, retry_after=retry_after)
        raise DeliveryFailed(message, permanent=True)


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _field(label: str, value: str) -> dict[str, str]:
    return {"type": "mrkdwn", "text": f"*{label}*\n{escape(short(value, _FIELD))}"}


def render_blocks(
    facts: CardFacts, zone: ZoneInfo, page: str | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """The card: its notification text and its blocks (the buttons only while pending;
    with ``page``, an Open button to the request's page beside them)."""
    request, incident = facts.request, facts.incident
    action = short(request["action"]) or "(none)"
    if request["needs_analysis"]:
        title = "⚠️ Needs analysis: the action is a placeholder"
    else:
        title = "🔔 Sign-off needed"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title, "emoji": True}},
        _section(f"*Action*\n{escape(action)}"),
    ]
    fields = [_field("Risk", request["risk"])]
    if incident is not None:
        fields += [_field("Incident", f"[{incident['severity']}] {incident['title']}"),
                   _field("Service", incident["service"] or "—")]
    fields += [_field("Requested by", request["requested_by"]),
               _field("Deadline", local(request["expires_at"], zone))]
    blocks.append({"type": "section", "fields": fields})
    if request["rationale"]:
        blocks.append(_section(f"*Rationale*\n{escape(short(request['rationale']))}"))
    precedents = precedents_of(request, facts.precedents)
    if precedents:
        lines = [f"• {escape(short(p['title'], _FIELD))}: "
                 f"{p['disposition'] or p['resolution_type']} ({_when(p['created_at'], zone)})"
                 for p in precedents[:PRECEDENTS]]
        blocks.append(_section("*Precedents*\n" + "\n".join(lines)))
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"Request `{request['id']}`"}]})
    text = f"{title}: {short(request['action'], _FIELD) or '(none)'}"
    if request["status"] != "pending":
        ending = ending_line(request, zone)
        blocks.append(_section(f"*{escape(ending)}*"))
        return f"{text} ({ending})", blocks
    buttons: list[dict[str, Any]] = [_button("❌ Reject", REJECT, request, "danger")]
    if not request["needs_analysis"]:
        buttons.insert(0, _button("✅ Approve", APPROVE, request, "primary"))
    if page is not None:
        buttons.append({"type": "button", "action_id": OPEN, "url": page,
                        "text": {"type": "plain_text", "text": "🔗 Open", "emoji": True}})
    blocks.append({"type": "actions", "block_id": "decision", "elements": buttons})
    return text, blocks


def precedents_of(request: Row, read: Sequence[Row]) -> Sequence[Row]:
    """The request's own ``precedents`` when it carries them, else those read beside it."""
    own = request.get("precedents")
    return own if isinstance(own, list) and own else read


def _when(value: Any, zone: ZoneInfo) -> str:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return local(value, zone) if isinstance(value, datetime) else str(value)


def _button(text: str, action_id: str, request: Row, style: str) -> dict[str, Any]:
    return {"type": "button", "action_id": action_id, "value": str(request["id"]),
            "style": style, "text": {"type": "plain_text", "text": text, "emoji": True}}


class SlackChat:
    """Cards in one Slack channel (``notify.cards.Chat``)."""

    channel = CHANNEL

    def __init__(
        self, api: SlackApi, channel_id: str, zone: ZoneInfo, public_url: str | None = None
    ) -> None:
        self.api = api
        self.channel_id = channel_id
        self.zone = zone
        self.public_url = public_url

    def _render(self, facts: CardFacts) -> tuple[str, list[dict[str, Any]]]:
        return render_blocks(facts, self.zone, page_url(self.public_url, facts.request["id"]))

    async def post_card(self, facts: CardFacts) -> Posted:
        text, blocks = self._render(facts)
        sent = await self.api.call("chat.postMessage", channel=self.channel_id, text=text,
                                   blocks=blocks, unfurl_links=False, unfurl_media=False)
        try:
            return Posted(str(sent.get("channel") or self.channel_id), ts_to_number(sent["ts"]))
        except (TypeError, KeyError, ValueError):
            raise DeliveryFailed("chat.postMessage answered without a message ts",
                                 permanent=True) from None

    async def edit_card(self, card: Row, facts: CardFacts) -> None:
        text, blocks = self._render(facts)
        await self.api.call("chat.update", channel=card["chat_id"],
                            ts=number_to_ts(card["message_id"]), text=text, blocks=blocks)

    async def post_reminder(self, card: Row, facts: CardFacts) -> None:
        await self.api.call("chat.postMessage", channel=card["chat_id"],
                            thread_ts=number_to_ts(card["message_id"]),
                            text=reminder_text(facts.request, self.zone))

    async def post_report(self, text: str) -> None:
        await self.api.call("chat.postMessage", channel=self.channel_id,
                            text=f"```{escape(text)}```")
