"""``POST /api/v1/slack/interactions``: Approve and Reject presses on Slack cards.

No bearer token: Slack signs each request with the app's signing secret. Before anything
else the route checks ``X-Slack-Signature`` (``v0=`` and the hex HMAC-SHA256 of
``v0:{X-Slack-Request-Timestamp}:{body}``, compared in constant time) and that the
timestamp is within five minutes of now; otherwise 401 and nothing changes.

Slack wants every press answered within 3 seconds, so a verified press is answered 200,
with an empty body, as soon as it is read; the decision follows the answer. A press by a
mapped approver (``SIGNOFF_SLACK_APPROVERS``) decides as that approver through the same
guarded transitions and refusals as the API (``notify.buttons``). Every press gets a
short reply that only the presser sees, posted to the press's ``response_url``; the card
stays as it is until the outbox edits it when the request ends.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request, Response
from starlette.datastructures import State

from signoff import errors
from signoff.answers import TelegramAck
from signoff.logs import get_logger
from signoff.notify.buttons import press_button
from signoff.notify.cards import OPEN
from signoff.notify.channels import http_client
from signoff.openapi import documented
from signoff.service import Service
from signoff.settings import Settings

log = get_logger("signoff.slack")
router = APIRouter(prefix="/api/v1")
SIGNATURE_HEADER = "X-Slack-Signature"
TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
TOLERANCE_SECONDS = 300
UNCONFIRMED = ("signoff could not record this press just now; look at the card in a "
               "moment, or press again.")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Slack-Signature`` Slack sends with ``body`` at ``timestamp``."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str | None, body: bytes, timestamp: str | None, signature: str | None, *,
    now: float,
) -> bool:
    """The request is Slack's, unaltered, and recent (a replay of an old one is refused)."""
    if not secret or timestamp is None or signature is None:
        return False
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        return False
    if abs(now - int(timestamp)) > TOLERANCE_SECONDS:
        return False
    expected = sign(secret, timestamp, body).encode()
    return hmac.compare_digest(expected, signature.encode("utf-8", "replace"))


@dataclass(frozen=True)
class Press:
    """A button press on a card: who, which button, on which request, where to reply."""

    user_id: str
    decision: str
    request_id: uuid.UUID | None
    response_url: str | None


def read_payload(body: bytes) -> dict[str, Any]:
    """The interaction's ``payload``: JSON in a form field; ``InvalidInput`` if it is not."""
    try:
        form = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        raise errors.InvalidInput("the body is not a form in UTF-8") from None
    values = form.get("payload")
    if not values:
        raise errors.InvalidInput("the form has no payload field")
    try:
        payload = json.loads(values[0])
    except ValueError:
        raise errors.InvalidInput("the payload is not valid JSON") from None
    if not isinstance(payload, dict):
        raise errors.InvalidInput("the payload is not a JSON object")
    return payload


def parse_press(payload: dict[str, Any]) -> Press | None:
    """The press in a ``block_actions`` payload; None for any other interaction."""
    if payload.get("type") != "block_actions":
        return None
    user, actions = payload.get("user"), payload.get("actions")
    user_id = user.get("id") if isinstance(user, dict) else None
    if not isinstance(user_id, str) or not isinstance(actions, list) or not actions:
        return None
    action = actions[0] if isinstance(actions[0], dict) else {}
    decision, value = action.get("action_id"), action.get("value")
    if decision == OPEN:  # a link: Slack opened the page, there is nothing to decide
        return None
    try:
        request_id: uuid.UUID | None = uuid.UUID(value) if isinstance(value, str) else None
    except ValueError:
        request_id = None
    url = payload.get("response_url")
    return Press(user_id, decision if isinstance(decision, str) else "", request_id,
                 url if isinstance(url, str) and url.startswith(("https://", "http://"))
                 else None)


_FORM = {"type": "object", "required": ["payload"], "properties": {
    "payload": {"type": "string", "description": "Slack's interaction payload, as JSON."}}}
# The refusals as every route documents them; the 200 is replaced below (an empty body).
_ROUTE = documented(
    TelegramAck, 401, 413, 422, bearer=False,
    notes={401: "Missing, wrong or stale (over 5 minutes) X-Slack-Signature; nothing changes.",
           422: "The body is not a form with a JSON payload."},
    extra={"parameters": [{"name": name, "in": "header", "required": True,
                           "schema": {"type": "string"}}
                          for name in (SIGNATURE_HEADER, TIMESTAMP_HEADER)],
           "requestBody": {"required": True, "content": {
               "application/x-www-form-urlencoded": {"schema": _FORM}},
               "description": "What Slack posts to the app's interactivity URL: what is not "
                              "a button press is acknowledged and ignored."}})
_ROUTE["responses"][200] = {"description": "Acknowledged, with an empty body; the press "
                                           "is decided after the answer."}


@router.post("/slack/interactions", tags=["slack"], response_class=Response,
             response_model=None, **{k: v for k, v in _ROUTE.items() if k != "response_model"})
async def slack_interactions(request: Request, background: BackgroundTasks) -> Response:
    """Receive an interaction from Slack: button presses decide, nothing else does."""
    settings: Settings = request.app.state.settings
    body = await request.body()
    secret = settings.slack_signing_secret
    if not verify_signature(None if secret is None else secret.get_secret_value(), body,
                            request.headers.get(TIMESTAMP_HEADER),
                            request.headers.get(SIGNATURE_HEADER), now=time.time()):
        raise errors.Unauthenticated(
            "A valid, recent X-Slack-Signature is required: it is missing, wrong or stale")
    press = parse_press(read_payload(body))
    if press is not None:
        background.add_task(decide_press, request.app.state, press)
    return Response(status_code=200)


async def decide_press(state: State, press: Press) -> None:
    """Decide the press, then tell the presser how it went (after the answer to Slack)."""
    settings: Settings = state.settings
    service: Service = state.service
    approver = settings.slack_users.get(press.user_id)
    try:
        answer = await press_button(service, approver, press.decision, press.request_id,
                                    via="slack")
    except Exception as exc:  # the database went away: the presser is told, not Slack
        log.error("slack_press_failed", user=press.user_id, error=repr(exc))
        answer = UNCONFIRMED
    log.info("slack_press", user=press.user_id, approver=approver, decision=press.decision,
             request_id=press.request_id and str(press.request_id), answer=answer)
    if press.response_url is not None:
        await reply(state, press.response_url, answer)


async def reply(state: State, url: str, text: str) -> None:
    """A message only the presser sees, the card left as it is: best effort, no retry."""
    body = {"response_type": "ephemeral", "replace_original": False, "text": text}
    async with contextlib.AsyncExitStack() as stack:
        client = state.http
        if client is None:  # the app runs without its lifespan (tests)
            client = await stack.enter_async_context(http_client())
        try:
            response = await client.post(url, json=body)
        except Exception as exc:
            log.warning("slack_reply_failed", error=repr(exc))
            return
        if response.status_code >= 300:
            log.warning("slack_reply_failed", status=response.status_code,
                        error=response.text[:200])
