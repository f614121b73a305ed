"""``POST /api/v1/telegram/webhook``: Approve and Reject presses on Telegram cards.

No bearer token: Telegram proves itself with ``X-Telegram-Bot-Api-Secret-Token``
(missing or wrong → 401, nothing changes). A press by a mapped approver decides as that
approver, through the same guarded transitions as the API (``notify.buttons``); any
other press is answered (answerCallbackQuery) with a short reason and changes nothing.
The card itself is edited by the outbox when the request ends.
"""

from __future__ import annotations

import contextlib
import hmac
import uuid
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request

from signoff import errors
from signoff.answers import TelegramAck
from signoff.logs import get_logger
from signoff.notify.buttons import press_button
from signoff.notify.channels import bot_api, http_client
from signoff.notify.delivery import DeliveryFailed
from signoff.openapi import documented
from signoff.service import Service
from signoff.settings import Settings

log = get_logger("signoff.telegram")
router = APIRouter(prefix="/api/v1")
SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def _authentic(request: Request, settings: Settings) -> bool:
    expected = settings.telegram_webhook_secret
    given = request.headers.get(SECRET_HEADER)
    if expected is None or given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.get_secret_value().encode())


def _parse_press(update: Any) -> tuple[str, int, str, uuid.UUID | None] | None:
    """(callback query id, Telegram user id, decision, request id) of a button press."""
    query = update.get("callback_query") if isinstance(update, dict) else None
    if not isinstance(query, dict):
        return None
    query_id, user, data = query.get("id"), query.get("from"), query.get("data")
    if not isinstance(query_id, str) or not isinstance(user, dict):
        return None
    user_id = user.get("id")
    if not isinstance(user_id, int) or isinstance(user_id, bool):
        return None
    decision, _, raw = (data if isinstance(data, str) else "").partition(":")
    try:
        request_id: uuid.UUID | None = uuid.UUID(raw)
    except ValueError:
        request_id = None
    return query_id, user_id, decision, request_id


@router.post("/telegram/webhook", tags=["telegram"], **documented(
    TelegramAck, 401, 413, 422, 503, bearer=False,
    notes={401: "Missing or wrong X-Telegram-Bot-Api-Secret-Token; nothing changes.",
           422: "The body is not valid JSON."},
    extra={"parameters": [{"name": SECRET_HEADER, "in": "header", "required": True,
                           "schema": {"type": "string"}}],
           "requestBody": {"required": True, "content": {"application/json": {"schema": {}}},
                           "description": "A Telegram Update: what is not a button press "
                                          "is acknowledged and ignored."}}))
async def telegram_webhook(request: Request, background: BackgroundTasks) -> dict[str, Any]:
    """Receive an update from Telegram: button presses decide, nothing else does."""
    settings: Settings = request.app.state.settings
    if not _authentic(request, settings):
        raise errors.Unauthenticated(
            "A valid X-Telegram-Bot-Api-Secret-Token header is required: it is missing or wrong")
    try:
        update = await request.json()
    except ValueError:
        raise errors.InvalidInput("the body is not valid JSON") from None
    press = _parse_press(update)
    if press is None:
        return {"ok": True}  # not a press: nothing for signoff to do
    query_id, user_id, decision, request_id = press
    service: Service = request.app.state.service
    answer = await press_button(service, settings.approvers.get(user_id), decision, request_id,
                                via="telegram")
    background.add_task(_answer, request, query_id, answer)
    return {"ok": True}


async def _answer(request: Request, query_id: str, text: str) -> None:
    """Answer the press after the response is sent: best effort, never a retry."""
    client = request.app.state.http
    async with contextlib.AsyncExitStack() as stack:
        if client is None:  # the app runs without its lifespan (tests)
            client = await stack.enter_async_context(http_client())
        api = bot_api(request.app.state.settings, client)
        if api is None:
            return
        try:
            await api.call("answerCallbackQuery", callback_query_id=query_id, text=text[:200])
        except DeliveryFailed as exc:
            log.warning("telegram_answer_failed", error=str(exc))
