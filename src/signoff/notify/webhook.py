"""Signed HTTP deliveries: the generic webhook, and a request's own ``callback_url``.

The body is JSON; ``X-Signoff-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>">`` lets a receiver check that it came from us, unaltered, and recently
(it refuses an old ``t``: a replay). ``X-Signoff-Delivery`` is the same on every attempt
at one item, so a receiver can drop the duplicates that at-least-once delivery allows.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from signoff.errors import CallbackRefused
from signoff.notify.delivery import AfterDelivery, DeliveryFailed, check_http

Row = Mapping[Any, Any]
SIGNATURE_HEADER = "X-Signoff-Signature"


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: str, body: bytes, header: str, *, now: float | None = None, tolerance: float = 300
) -> bool:
    """What a receiver does: the signature matches and ``t`` is recent (no replay)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


class SignedPoster:
    """Posts an item's payload as signed JSON: to a fixed URL (the webhook), or to the
    URL the item carries (a callback)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        url: str | None,
        secret: str | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.url = url
        self.secret = secret
        self.clock = clock

    async def deliver(self, item: Row) -> AfterDelivery | None:
        payload = dict(item["payload"])
        url = self.url or payload.pop("url", None)
        if not url:
            raise DeliveryFailed("no URL to deliver to", permanent=True)
        payload.pop("url", None)
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "signoff",
            "X-Signoff-Event": str(payload.get("event", item["event"])),
            "X-Signoff-Delivery": str(item["id"]),
        }
        if self.secret:
            headers[SIGNATURE_HEADER] = sign(self.secret, body, int(self.clock()))
        try:
            response = await self.client.post(url, content=body, headers=headers)
        except CallbackRefused as refused:  # where it points, not how the attempt went
            raise DeliveryFailed(refused.message, permanent=True) from refused
        except httpx.InvalidURL as exc:
            raise DeliveryFailed(f"not a valid URL: {exc}", permanent=True) from exc
        except httpx.HTTPError as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}") from exc
        check_http(response, datetime.now(UTC))
        return None
