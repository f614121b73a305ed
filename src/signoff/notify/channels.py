"""The channels that are on, built from settings: what the worker delivers with."""

from __future__ import annotations

import httpx

from signoff.db import Database
from signoff.notify.cards import CardSender
from signoff.notify.delivery import Sender
from signoff.notify.egress import CallbackTransport
from signoff.notify.outbox import Channel
from signoff.notify.slack import SlackApi, SlackChat
from signoff.notify.telegram import BotApi, TelegramChat
from signoff.notify.webhook import SignedPoster
from signoff.settings import Settings

TIMEOUT = httpx.Timeout(10.0, connect=5.0)


def http_client() -> httpx.AsyncClient:
    """One client per process for every delivery; redirects are not followed."""
    return httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False)


def callback_client(settings: Settings) -> httpx.AsyncClient:
    """The client of requesters' callbacks: only to destinations the settings allow, each
    connection to an address that was checked (``notify.egress``). It keeps no
    connections between deliveries: nothing to close."""
    transport = CallbackTransport(settings.callback_policy)
    return httpx.AsyncClient(transport=transport, timeout=TIMEOUT, follow_redirects=False)


def bot_api(settings: Settings, client: httpx.AsyncClient) -> BotApi | None:
    if settings.telegram_bot_token is None:
        return None
    return BotApi(client, settings.telegram_api_base,
                  settings.telegram_bot_token.get_secret_value())


def slack_api(settings: Settings, client: httpx.AsyncClient) -> SlackApi | None:
    if settings.slack_bot_token is None:
        return None
    return SlackApi(client, settings.slack_api_base, settings.slack_bot_token.get_secret_value())


def build_senders(
    db: Database, settings: Settings, client: httpx.AsyncClient
) -> dict[str, Sender]:
    secret = None if settings.webhook_secret is None else (
        settings.webhook_secret.get_secret_value())
    senders: dict[str, Sender] = {
        Channel.CALLBACK.value: SignedPoster(callback_client(settings), url=None,
                                             secret=secret),
    }
    if settings.webhook_url is not None:
        senders[Channel.WEBHOOK.value] = SignedPoster(
            client, url=settings.webhook_url, secret=secret)
    api = bot_api(settings, client)
    if api is not None and settings.telegram_chat_id is not None:
        senders[Channel.TELEGRAM.value] = CardSender(
            db, TelegramChat(api, settings.telegram_chat_id, settings.zone,
                             settings.public_url))
    slack = slack_api(settings, client)
    if slack is not None and settings.slack_channel is not None:
        senders[Channel.SLACK.value] = CardSender(
            db, SlackChat(slack, settings.slack_channel, settings.zone, settings.public_url))
    return senders
